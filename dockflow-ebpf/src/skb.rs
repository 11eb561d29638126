//! Reading a `struct sk_buff` (and what hangs off it) with bpf_probe_read_kernel at offsets
//! resolved from BTF: the packet headers, the device and its netns, and the conntrack entry.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use dockflow_common::{
    CtTuple, KernelOffsets, PacketEvent, SECTION_CONNTRACK, SECTION_PACKET, SECTION_SKB,
};

use crate::headers::{NetworkHeaderReader, parse_ip};

/// Reads kernel memory at `base + offset`.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// Reads headers starting at the skb's network header.
struct SkbNetworkHeader(u64);

impl NetworkHeaderReader for SkbNetworkHeader {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        read(self.0, offset as u32)
    }
}

/// skb->network_header is "unset" at this value (~0U as u16).
const HEADER_UNSET: u16 = 0xffff;

/// Fills identity, device, netns, L3/L4 headers and conntrack from `skb`.
#[inline(always)]
pub fn describe(skb: u64, off: &KernelOffsets, event: &mut PacketEvent) {
    let head: u64 = read(skb, off.skb_head).unwrap_or(0);
    if head != 0 {
        event.skb_id = head;
        event.sections |= SECTION_SKB;
    }
    let dev: u64 = read(skb, off.skb_dev).unwrap_or(0);
    if dev != 0 {
        event.ifindex = read(dev, off.dev_ifindex).unwrap_or(0);
        let net: u64 = read(dev, off.dev_nd_net).unwrap_or(0);
        if net != 0 {
            event.netns = read(net, off.net_ns_inum).unwrap_or(0);
        }
    }
    let network_header: u16 = read(skb, off.skb_network_header).unwrap_or(HEADER_UNSET);
    if head != 0 && network_header != HEADER_UNSET
        && parse_ip(&SkbNetworkHeader(head + network_header as u64), event)
    {
        event.sections |= SECTION_PACKET;
    }
    conntrack(skb, off, event);
}

/// skb->_nfct holds the nf_conn pointer with ip_conntrack_info in its low 3 bits.
const NFCT_INFOMASK: u64 = 7;

#[inline(always)]
fn conntrack(skb: u64, off: &KernelOffsets, event: &mut PacketEvent) {
    if off.has_conntrack == 0 {
        return;
    }
    let nfct: u64 = read(skb, off.skb_nfct).unwrap_or(0);
    let ct = nfct & !NFCT_INFOMASK;
    if ct == 0 {
        return;
    }
    event.ct_info = (nfct & NFCT_INFOMASK) as u8;
    event.ct_status = read(ct, off.ct_status).unwrap_or(0);
    read_tuple(ct + off.ct_tuple_original as u64, off, &mut event.ct_original);
    read_tuple(ct + off.ct_tuple_reply as u64, off, &mut event.ct_reply);
    event.sections |= SECTION_CONNTRACK;
}

#[inline(always)]
fn read_tuple(tuple: u64, off: &KernelOffsets, out: &mut CtTuple) {
    out.src = read(tuple, off.tuple_src_addr).unwrap_or_default();
    out.dst = read(tuple, off.tuple_dst_addr).unwrap_or_default();
    out.sport = u16::from_be(read(tuple, off.tuple_src_port).unwrap_or(0));
    out.dport = u16::from_be(read(tuple, off.tuple_dst_port).unwrap_or(0));
    out.l4_proto = read(tuple, off.tuple_dst_protonum).unwrap_or(0);
}
