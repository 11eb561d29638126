//! The in-kernel target filter: a handful of hash lookups per packet, so traffic that is not the
//! target's costs little and never reaches the ring buffer. Probes check the packet's own
//! headers first and read conntrack only when those do not decide.

use dockflow_common::{PacketEvent, SECTION_PACKET, port_key};

use crate::{FILTER, TARGET_ADDRS, TARGET_PORTS};

/// Whether userspace asked for filtering (a bare --iface trace wants everything).
#[inline(always)]
pub fn enabled() -> bool {
    unsafe { core::ptr::read_volatile(&FILTER) != 0 }
}

#[inline(always)]
pub fn is_target_address(addr: &[u8; 16]) -> bool {
    unsafe { TARGET_ADDRS.get(addr).is_some() }
}

#[inline(always)]
fn is_target_port(l4_proto: u8, port: u16) -> bool {
    unsafe { TARGET_PORTS.get(&port_key(l4_proto, port)).is_some() }
}

/// True for packets to or from the target's addresses or its published ports (before DNAT).
#[inline(always)]
pub fn packet_wanted(event: &PacketEvent) -> bool {
    event.sections & SECTION_PACKET != 0
        && (is_target_address(&event.saddr)
            || is_target_address(&event.daddr)
            || is_target_port(event.l4_proto, event.dport)
            || is_target_port(event.l4_proto, event.sport))
}
