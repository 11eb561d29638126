//! tc ingress/egress on a node's own interface (the one with its swarm address): the VXLAN
//! packets that carry an overlay network's frames to and from the other nodes. The filter
//! and the correlation read the frame inside; the outer headers and the VNI go into the event
//! beside it (see dockflow_common::PacketEvent), so the way between nodes is observed, not
//! inferred. Everything else on the interface costs one header read.

use core::mem::MaybeUninit;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use dockflow_common::{
    AF_INET, IPPROTO_UDP, PacketEvent, PacketHeaders, ProbePoint, VXLAN_PORT as DEFAULT_PORT,
};

use crate::{
    globals::empty,
    headers::ETH_HLEN,
    tc::{ETH_P_IP, ETH_P_IPV6, load_bytes, network_start, observe_headers, parse_at},
};

/// The UDP port of the VXLAN packets (the swarm's data path port), set by userspace at load.
#[unsafe(no_mangle)]
static VXLAN_PORT: u32 = DEFAULT_PORT as u32;

/// A UDP header, then the VXLAN header: flags (the I bit says a VNI follows), three reserved
/// bytes, the VNI in three bytes, one reserved.
const UDP_HLEN: usize = 8;
const VXLAN_HLEN: usize = 8;
const VXLAN_FLAG_VNI: u8 = 0x08;
const IPV6_HLEN: usize = 40;

#[classifier]
pub fn df_tunnel_in(ctx: TcContext) -> i32 {
    observe(&ctx, ProbePoint::TunnelIngress);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn df_tunnel_out(ctx: TcContext) -> i32 {
    observe(&ctx, ProbePoint::TunnelEgress);
    TC_ACT_UNSPEC
}

#[inline(always)]
fn vxlan_port() -> u16 {
    // SAFETY: a read of a plain static (a load-time constant userspace sets before load);
    // volatile so the compiler cannot fold its initialiser.
    unsafe { core::ptr::read_volatile(&VXLAN_PORT) as u16 }
}

/// Never changes the packet's fate; returns early for anything but a VXLAN packet.
#[inline(always)]
fn observe(ctx: &TcContext, probe: ProbePoint) -> Option<()> {
    if empty() {
        return None;
    }
    let (network_offset, ethertype) = network_start(ctx)?;
    if ethertype != ETH_P_IP && ethertype != ETH_P_IPV6 {
        return None;
    }
    let mut outer_storage = MaybeUninit::uninit();
    let outer = parse_at(ctx, network_offset, &mut outer_storage)?;
    if outer.l4_proto != IPPROTO_UDP || outer.dport != vxlan_port() {
        return None;
    }
    let udp = network_offset + outer_header_len(ctx, network_offset, outer)?;
    let mut vxlan = [0u8; VXLAN_HLEN];
    if !load_bytes(ctx, udp + UDP_HLEN, &mut vxlan, VXLAN_HLEN) || vxlan[0] & VXLAN_FLAG_VNI == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
    let inner_frame = udp + UDP_HLEN + VXLAN_HLEN;
    let mut inner_storage = MaybeUninit::uninit();
    let inner = parse_at(ctx, inner_frame + ETH_HLEN, &mut inner_storage);
    observe_headers(ctx, probe, inner, |event| fill_outer(event, outer, vni));
    Some(())
}

/// The outer IP header's length: IPv4's from its first byte (options included), IPv6's fixed
/// (VXLAN packets carry no extension headers).
#[inline(always)]
fn outer_header_len(
    ctx: &TcContext,
    network_offset: usize,
    outer: &PacketHeaders,
) -> Option<usize> {
    if outer.family != AF_INET {
        return Some(IPV6_HLEN);
    }
    let mut first = [0u8; 1];
    load_bytes(ctx, network_offset, &mut first, 1).then(|| ((first[0] & 0x0f) as usize) * 4)
}

#[inline(always)]
fn fill_outer(event: &mut PacketEvent, outer: &PacketHeaders, vni: u32) {
    let tuple = &mut event.ct_original;
    tuple.src = outer.saddr;
    tuple.dst = outer.daddr;
    tuple.sport = outer.sport;
    tuple.dport = outer.dport;
    tuple.l4_proto = outer.l4_proto;
    tuple.family = outer.family;
    event.ct_status = vni as u64;
}
