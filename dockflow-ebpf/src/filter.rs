//! The in-kernel target filter: a handful of hash lookups per event, so traffic that is not the
//! target's costs almost nothing and never reaches the ring buffer.

use dockflow_common::{PacketEvent, SECTION_CONNTRACK, SECTION_PACKET, port_key};

use crate::{TARGET_ADDRS, TARGET_PORTS};

#[inline(always)]
fn is_target_address(addr: &[u8; 16]) -> bool {
    unsafe { TARGET_ADDRS.get(addr).is_some() }
}

#[inline(always)]
fn is_target_port(l4_proto: u8, port: u16) -> bool {
    unsafe { TARGET_PORTS.get(&port_key(l4_proto, port)).is_some() }
}

/// True for packets to or from the target's addresses, to its published ports (before DNAT),
/// or of a connection whose conntrack entry maps to the target.
#[inline(always)]
pub fn wanted(event: &PacketEvent) -> bool {
    if event.sections & SECTION_PACKET != 0
        && (is_target_address(&event.saddr)
            || is_target_address(&event.daddr)
            || is_target_port(event.l4_proto, event.dport)
            || is_target_port(event.l4_proto, event.sport))
    {
        return true;
    }
    event.sections & SECTION_CONNTRACK != 0
        && (is_target_address(&event.ct_original.dst) || is_target_address(&event.ct_reply.src))
}
