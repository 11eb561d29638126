//! tc ingress/egress on the target's host-side veth and on its bridge device.
//!
//! On a bridge port, ingress is a frame leaving the container and egress one going into it; on the
//! bridge device, ingress is what the bridge passes up to the IP stack and egress what the IP
//! stack sends into the bridge.

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::bpf_ktime_get_ns, macros::classifier, programs::TcContext,
};
use dockflow_common::{PacketEvent, ProbePoint, SECTION_PACKET};

use crate::{
    emit, filter,
    headers::{NetworkHeaderReader, parse_ip},
};

const ETH_HLEN: usize = 14;
const ETH_P_8021Q: u16 = 0x8100;
const VLAN_HLEN: usize = 4;

struct TcReader<'a> {
    ctx: &'a TcContext,
    network_offset: usize,
}

impl NetworkHeaderReader for TcReader<'_> {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        self.ctx.load::<T>(self.network_offset + offset).ok()
    }
}

#[classifier]
pub fn df_tc_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, ProbePoint::TcIngress)
}

#[classifier]
pub fn df_tc_egress(ctx: TcContext) -> i32 {
    observe(&ctx, ProbePoint::TcEgress)
}

/// Emits one event for an IP frame; never changes the packet's fate.
#[inline(always)]
fn observe(ctx: &TcContext, probe: ProbePoint) -> i32 {
    let mut network_offset = ETH_HLEN;
    let mut ethertype = ctx.load::<u16>(12).map(u16::from_be).unwrap_or(0);
    if ethertype == ETH_P_8021Q {
        ethertype = ctx.load::<u16>(16).map(u16::from_be).unwrap_or(0);
        network_offset += VLAN_HLEN;
    }
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return TC_ACT_UNSPEC;
    }
    let mut event = PacketEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        probe: probe as u8,
        ifindex: unsafe { (*ctx.skb.skb).ifindex },
        ..PacketEvent::default()
    };
    if parse_ip(&TcReader { ctx, network_offset }, &mut event) {
        event.sections |= SECTION_PACKET;
    }
    // tc sees no conntrack; on these interfaces the headers always show the target's addresses.
    let targets = if filter::enabled() { filter::targets() } else { None };
    if targets.is_none_or(|t| filter::packet_wanted(t, &event)) {
        emit(&event);
    }
    TC_ACT_UNSPEC
}
