//! Reading a `struct sk_buff` (and what hangs off it) with bpf_probe_read_kernel at offsets
//! resolved from BTF: the packet headers, the conntrack entry, the device and its netns.
//!
//! Ordered by cost: the headers decide most packets with the filter; conntrack is read next
//! (it catches a target connection whose headers were rewritten); device details only for
//! packets that will be emitted.

use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel};
use dockflow_common::{
    CtTuple, KernelOffsets, PacketEvent, ProbePoint, SECTION_CONNTRACK, SECTION_PACKET, SECTION_SKB, TargetSet,
};

use crate::{
    filter,
    headers::{NetworkHeaderReader, parse_ip},
};

/// Reads kernel memory at `base + offset`.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// How a probe reads fields of its `struct sk_buff`.
pub trait SkbFields: Copy {
    fn field<T: Copy>(self, offset: u32) -> Option<T>;
}

/// An skb pointer the verifier knows nothing about (tracepoints, kprobes): every read is a
/// bpf_probe_read_kernel call.
#[derive(Clone, Copy)]
pub struct UntrustedSkb(pub u64);

impl SkbFields for UntrustedSkb {
    #[inline(always)]
    fn field<T: Copy>(self, offset: u32) -> Option<T> {
        read(self.0, offset)
    }
}

/// A trusted, BTF-typed skb pointer (a netfilter program's ctx->skb): the verifier checks each
/// load against the kernel's own type, so fields are plain loads, no helper call. The offsets
/// come from a frozen read-only map, which the verifier treats as constants.
#[derive(Clone, Copy)]
pub struct TrustedSkb(pub u64);

impl SkbFields for TrustedSkb {
    #[inline(always)]
    fn field<T: Copy>(self, offset: u32) -> Option<T> {
        Some(unsafe { core::ptr::read_volatile((self.0 as *const u8).add(offset as usize) as *const T) })
    }
}

/// Reads headers starting at the skb's network header.
struct SkbNetworkHeader(u64);

impl NetworkHeaderReader for SkbNetworkHeader {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        read(self.0, offset as u32)
    }
}

/// Completes `event` from an skb pointer a kprobe or tracepoint got, and emits it if wanted.
#[inline(always)]
pub fn observe_untrusted(skb_ptr: u64, probe: ProbePoint, event: &mut PacketEvent) {
    if skb_ptr == 0 {
        return;
    }
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    event.probe = probe as u8;
    if describe(UntrustedSkb(skb_ptr), &crate::offsets(), event) {
        crate::emit(event);
    }
}

/// skb->network_header is "unset" at this value (~0U as u16).
const HEADER_UNSET: u16 = 0xffff;

/// Fills identity, L3/L4 headers, conntrack, device and netns from `skb`; returns false (and
/// stops reading early) when the filter says the packet is not the target's.
#[inline(always)]
pub fn describe<S: SkbFields>(skb: S, off: &KernelOffsets, event: &mut PacketEvent) -> bool {
    let head: u64 = skb.field(unsafe { core::ptr::read_volatile(&crate::OFFSETS.skb_head) }).unwrap_or(0);
    if head != 0 {
        event.skb_id = head;
        event.sections |= SECTION_SKB;
        let network_header: u16 =
            skb.field(unsafe { core::ptr::read_volatile(&crate::OFFSETS.skb_network_header) }).unwrap_or(HEADER_UNSET);
        if network_header != HEADER_UNSET && parse_ip(&SkbNetworkHeader(head + network_header as u64), event) {
            event.sections |= SECTION_PACKET;
        }
    }
    let targets = if filter::enabled() { filter::targets() } else { None };
    let by_headers = targets.is_none_or(|t| filter::packet_wanted(t, event));
    let by_conntrack = conntrack(skb, off, event, targets.filter(|_| !by_headers));
    if !(by_headers || by_conntrack) {
        return false;
    }
    let dev: u64 = skb.field(unsafe { core::ptr::read_volatile(&crate::OFFSETS.skb_dev) }).unwrap_or(0);
    if dev != 0 {
        event.ifindex = read(dev, off.dev_ifindex).unwrap_or(0);
        let net: u64 = read(dev, off.dev_nd_net).unwrap_or(0);
        if net != 0 {
            event.netns = read(net, off.net_ns_inum).unwrap_or(0);
        }
    }
    true
}

/// skb->_nfct holds the nf_conn pointer with ip_conntrack_info in its low 3 bits.
const NFCT_INFOMASK: u64 = 7;

/// Fills the conntrack section. With `decide` set (the headers did not match the target), the
/// entry's addresses decide instead: a mismatch returns false before reading the rest.
#[inline(always)]
fn conntrack<S: SkbFields>(skb: S, off: &KernelOffsets, event: &mut PacketEvent, decide: Option<&TargetSet>) -> bool {
    if off.has_conntrack == 0 {
        return false;
    }
    let nfct: u64 = skb.field(unsafe { core::ptr::read_volatile(&crate::OFFSETS.skb_nfct) }).unwrap_or(0);
    let ct = nfct & !NFCT_INFOMASK;
    if ct == 0 {
        return false;
    }
    let original = ct + off.ct_tuple_original as u64;
    let reply = ct + off.ct_tuple_reply as u64;
    event.ct_original.src = read(original, off.tuple_src_addr).unwrap_or_default();
    event.ct_reply.src = read(reply, off.tuple_src_addr).unwrap_or_default();
    // A connection is the target's when one of its ends is: the original source (it started
    // it) or the reply source (it answers, whatever NAT did to the original destination).
    let matches = |t: &TargetSet| filter::is_target_address(t, &event.ct_original.src) || filter::is_target_address(t, &event.ct_reply.src);
    let matched = match decide {
        Some(targets) if !matches(targets) => return false,
        Some(_) => true,
        None => filter::targets().is_some_and(matches),
    };
    event.ct_info = (nfct & NFCT_INFOMASK) as u8;
    event.ct_status = read(ct, off.ct_status).unwrap_or(0);
    read_rest_of_tuple(original, off, &mut event.ct_original);
    read_rest_of_tuple(reply, off, &mut event.ct_reply);
    event.sections |= SECTION_CONNTRACK;
    matched
}

#[inline(always)]
fn read_rest_of_tuple(tuple: u64, off: &KernelOffsets, out: &mut CtTuple) {
    out.dst = read(tuple, off.tuple_dst_addr).unwrap_or_default();
    out.sport = u16::from_be(read(tuple, off.tuple_src_port).unwrap_or(0));
    out.dport = u16::from_be(read(tuple, off.tuple_dst_port).unwrap_or(0));
    out.l4_proto = read(tuple, off.tuple_dst_protonum).unwrap_or(0);
}
