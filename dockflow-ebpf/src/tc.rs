//! tc ingress/egress on the target's host-side veth and on its bridge device.
//!
//! On a bridge port, ingress is a frame leaving the container and egress one going into it; on the
//! bridge device, ingress is what the bridge passes up to the IP stack and egress what the IP
//! stack sends into the bridge.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::TC_ACT_UNSPEC, helpers::generated::bpf_skb_load_bytes, macros::classifier,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use dockflow_common::{
    FilterReason, PacketEvent, PacketHeaders, ProbePoint, SECTION_PACKET, SECTION_SAMPLE,
};

use crate::{
    capture::TcBytes,
    expression, filter,
    globals::empty,
    headers::{ETH_HLEN, NetworkHeaderReader, parse_ip},
    per_connection::{self, Decision},
    ring::emit,
    skb::{self, UntrustedSkb},
};

const ETH_P_8021Q: u16 = 0x8100;
const VLAN_HLEN: usize = 4;

/// Reads a tc program's packet from the start of its (outer or inner) network header.
struct TcReader<'a> {
    ctx: &'a TcContext,
    network_offset: usize,
}

/// The headers at `network_offset` of a tc program's packet (see [`parse_ip`]).
#[inline(always)]
pub fn parse_at<'a>(
    ctx: &TcContext,
    network_offset: usize,
    slot: &'a mut MaybeUninit<PacketHeaders>,
) -> Option<&'a PacketHeaders> {
    parse_ip(
        &TcReader {
            ctx,
            network_offset,
        },
        slot,
    )
}

impl NetworkHeaderReader for TcReader<'_> {
    #[inline(always)]
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> bool {
        let at = self.network_offset + offset;
        // A packet shorter than `out`: the failed load zeroed it; read an IPv4 header with a
        // UDP or ICMP header, or the IPv4 header alone. Constant sizes: older verifiers reject
        // a length they cannot prove non-zero.
        load_bytes(self.ctx, at, out, out.len())
            || (out.len() > SHORT_IPV4_UDP && load_bytes(self.ctx, at, out, SHORT_IPV4_UDP))
            || (out.len() > SHORT_IPV4 && load_bytes(self.ctx, at, out, SHORT_IPV4))
    }
}

const SHORT_IPV4_UDP: usize = 28;
const SHORT_IPV4: usize = 20;

#[classifier]
pub fn df_tc_ingress(ctx: TcContext) -> i32 {
    observe(&ctx, ProbePoint::TcIngress)
}

#[classifier]
pub fn df_tc_egress(ctx: TcContext) -> i32 {
    observe(&ctx, ProbePoint::TcEgress)
}

/// bpf_skb_load_bytes of `len` bytes into the start of `out`.
#[inline(always)]
pub fn load_bytes(ctx: &TcContext, offset: usize, out: &mut [u8], len: usize) -> bool {
    // SAFETY: a BPF helper on this program's own skb; it checks offset and length against the
    // packet and fails (handled) past its end; `out` holds at least the length asked for.
    unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            offset as u32,
            out.as_mut_ptr() as *mut _,
            len as u32,
        ) == 0
    }
}

/// Reads the Ethernet type directly from the linear packet data (no helper call).
#[inline(always)]
pub fn ethertype_at(ctx: &TcContext, offset: usize) -> u16 {
    let at = ctx.data() + offset;
    if at + 2 > ctx.data_end() {
        return 0;
    }
    // SAFETY: `at..at + 2` lies within the packet's linear data (checked against data_end just
    // above).
    u16::from_be(unsafe { (at as *const u16).read_unaligned() })
}

/// Where the frame's network header starts (past a VLAN tag) and its Ethernet type: IPv4, IPv6
/// or ARP, else None.
#[inline(always)]
pub fn network_start(ctx: &TcContext) -> Option<(usize, u16)> {
    let mut network_offset = ETH_HLEN;
    let mut ethertype = ethertype_at(ctx, 12);
    if ethertype == ETH_P_8021Q {
        ethertype = ethertype_at(ctx, 16);
        network_offset += VLAN_HLEN;
    }
    // IPv4, IPv6 and ARP (told as a bridged exchange).
    (ethertype == ETH_P_IP || ethertype == ETH_P_IPV6 || ethertype == ETH_P_ARP)
        .then_some((network_offset, ethertype))
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

/// Emits one event for an IP frame; never changes the packet's fate.
#[inline(always)]
fn observe(ctx: &TcContext, probe: ProbePoint) -> i32 {
    if empty() {
        return TC_ACT_UNSPEC;
    }
    let Some((network_offset, _)) = network_start(ctx) else {
        return TC_ACT_UNSPEC;
    };
    let mut storage = MaybeUninit::uninit();
    let headers = parse_at(ctx, network_offset, &mut storage);
    observe_headers(ctx, probe, headers, |_| {});
    TC_ACT_UNSPEC
}

/// Emits the event for a frame whose headers (the inner ones, for a tunnel point) were parsed
/// if the filter wants them; `fill` adds what only the probe knows.
#[inline(always)]
pub fn observe_headers(
    ctx: &TcContext,
    probe: ProbePoint,
    headers: Option<&PacketHeaders>,
    fill: impl FnOnce(&mut PacketEvent),
) {
    // SAFETY: the program's own __sk_buff context, valid for its run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // tc sees no conntrack; on these interfaces the headers always show the target's addresses.
    let targeted = filter::wants(headers, 0);
    let wanted = targeted && expression::keeps(headers);
    let decision = if wanted {
        per_connection::decide(headers, 0, 0, false)
    } else {
        Decision::Show
    };
    let held_back = decision == Decision::Hold;
    // --debug-kernel only: the level is a load-time constant, so the verifier drops this
    // (and the work of its arguments) from the program when kernel logging is off.
    debug!(
        &(),
        "tc probe={} if={} why={} held={}",
        probe as u8,
        ifindex,
        if targeted && !wanted {
            FilterReason::LeftOut
        } else {
            filter::why(headers)
        } as u8,
        u8::from(held_back)
    );
    if held_back {
        per_connection::count_held_event();
    } else if wanted {
        emit(probe, &TcBytes(ctx), |event| {
            event.ifindex = ifindex;
            // The device's namespace: an overlay network's bridge and ports live in one of
            // their own, where ifindexes repeat the host's. The context is the kernel's skb.
            skb::device(UntrustedSkb(ctx.skb.skb as u64), event);
            if decision == Decision::Sample {
                event.sections |= SECTION_SAMPLE;
            }
            if let Some(headers) = headers {
                event.packet = *headers;
                event.sections |= SECTION_PACKET;
            }
            fill(event);
        });
    }
}
