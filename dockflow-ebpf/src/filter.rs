//! The in-kernel target filter: a few comparisons per packet, so traffic that is not the
//! target's costs little and never reaches the ring buffer. Probes check the packet's own
//! headers first and read conntrack only when those do not decide.

use dockflow_common::{MAX_TARGET_ADDRESSES, MAX_TARGET_PORTS, PacketEvent, SECTION_PACKET, TargetSet, port_key};

use crate::{FILTER, TARGETS};

/// Whether userspace asked for filtering (a bare --iface trace wants everything).
#[inline(always)]
pub fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&FILTER) != 0 }
}

/// The target set (an inlined array lookup, no helper call).
#[inline(always)]
pub fn targets() -> Option<&'static TargetSet> {
    TARGETS.get(0)
}

/// Two 8-byte halves compared as integers: no memcmp in BPF, no copies on the small stack.
/// Both sides are 8-aligned (a map value, and a field at an 8-aligned offset of PacketEvent).
#[inline(always)]
fn same_address(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let (a, b) = unsafe { (&*(a as *const [u8; 16] as *const [u64; 2]), &*(b as *const [u8; 16] as *const [u64; 2])) };
    a[0] == b[0] && a[1] == b[1]
}

#[inline(always)]
pub fn is_target_address(targets: &TargetSet, addr: &[u8; 16]) -> bool {
    for i in 0..MAX_TARGET_ADDRESSES {
        if i as u32 >= targets.n_addresses {
            return false;
        }
        if same_address(&targets.addresses[i], addr) {
            return true;
        }
    }
    false
}

#[inline(always)]
fn is_target_port(targets: &TargetSet, l4_proto: u8, port: u16) -> bool {
    let key = port_key(l4_proto, port);
    for i in 0..MAX_TARGET_PORTS {
        if i as u32 >= targets.n_ports {
            return false;
        }
        if targets.ports[i] == key {
            return true;
        }
    }
    false
}

/// True for packets to or from the target's addresses or its published ports (before DNAT).
#[inline(always)]
pub fn packet_wanted(targets: &TargetSet, event: &PacketEvent) -> bool {
    event.sections & SECTION_PACKET != 0
        && (is_target_address(targets, &event.saddr)
            || is_target_address(targets, &event.daddr)
            || is_target_port(targets, event.l4_proto, event.dport)
            || is_target_port(targets, event.l4_proto, event.sport))
}
