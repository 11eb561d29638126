//! Observing a `struct sk_buff` at offsets resolved from BTF: the packet headers first, which
//! with the conntrack pointer decide whether the packet is the target's; then, for the target's
//! packets only, the identity, conntrack entry, device and netns, read straight into the event.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::bpf_probe_read_kernel_buf;
use dockflow_common::{
    PacketEvent, ProbePoint, SECTION_CONNTRACK, SECTION_PACKET, SECTION_SAMPLE, SECTION_SKB,
};

use crate::{
    capture::SkbBytes,
    emit, expression, filter,
    headers::{HEADER_UNSET, NetworkHeaderReader, parse_ip},
    kmem::{offset, read, read_tuple, trusted_field},
    per_connection::{self, Decision},
};

/// How a probe reads fields of its `struct sk_buff`.
pub trait SkbFields: Copy {
    fn field<T: Copy>(self, offset: u32) -> Option<T>;
}

/// An skb pointer the verifier knows nothing about (kprobes): every read is a
/// bpf_probe_read_kernel call.
#[derive(Clone, Copy)]
pub struct UntrustedSkb(pub u64);

impl SkbFields for UntrustedSkb {
    #[inline(always)]
    fn field<T: Copy>(self, offset: u32) -> Option<T> {
        read(self.0, offset)
    }
}

/// A trusted, BTF-typed skb pointer (netfilter's ctx->skb, a tp_btf argument): the verifier checks each
/// load against the kernel's own type, so fields are plain loads, no helper call. The offsets
/// come from a frozen read-only map, which the verifier treats as constants.
#[derive(Clone, Copy)]
pub struct TrustedSkb(pub u64);

impl SkbFields for TrustedSkb {
    #[inline(always)]
    fn field<T: Copy>(self, offset: u32) -> Option<T> {
        Some(trusted_field(self.0, offset))
    }
}

/// Reads headers starting at the skb's network header.
struct SkbNetworkHeader(u64);

impl NetworkHeaderReader for SkbNetworkHeader {
    #[inline(always)]
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> bool {
        unsafe { bpf_probe_read_kernel_buf((self.0 + offset as u64) as *const u8, out).is_ok() }
    }
}

/// skb->_nfct holds the nf_conn pointer with ip_conntrack_info in its low 3 bits.
pub const NFCT_INFOMASK: u64 = 7;
/// enum ip_conntrack_info: an established connection's original direction; from
/// IP_CT_IS_REPLY on, reply-direction packets (IP_CT_ESTABLISHED_REPLY is the same value).
pub const IP_CT_ESTABLISHED: u64 = 0;
pub const IP_CT_IS_REPLY: u64 = 3;

/// skb->_nfct: the conntrack entry with ip_conntrack_info in its low bits (0: none, or a kernel
/// without conntrack).
#[inline(always)]
pub fn nfct<S: SkbFields>(skb: S) -> u64 {
    if offset!(has_conntrack) == 0 {
        return 0;
    }
    skb.field(offset!(skb_nfct)).unwrap_or(0)
}

/// Emits an event for `skb` at `probe` if the filter wants the packet; `fill` adds what only
/// the probe knows (hook, drop reason). `telling`: shown even past --per-connection (a drop
/// with a reason of its own). Returns whether it was wanted.
#[inline(always)]
pub fn observe<S: SkbFields>(
    skb: S,
    probe: ProbePoint,
    telling: bool,
    fill: impl FnOnce(&mut PacketEvent),
) -> bool {
    let head: u64 = skb.field(offset!(skb_head)).unwrap_or(0);
    let network_header: u16 = skb
        .field(offset!(skb_network_header))
        .unwrap_or(HEADER_UNSET);
    let mut storage = MaybeUninit::uninit();
    let headers = if head != 0 && network_header != HEADER_UNSET {
        parse_ip(
            &SkbNetworkHeader(head + network_header as u64),
            &mut storage,
        )
    } else {
        None
    };
    let nfct = nfct(skb);
    let ct = nfct & !NFCT_INFOMASK;
    if !filter::wants(headers, ct) || !expression::keeps(headers) {
        return false;
    }
    // Below the --per-connection limit the device hops count packets (they carry the
    // conntrack entry on the host's side; in the netfilter programs that code makes the
    // verifier's work explode); past it every probe decides from the headers.
    let counts = matches!(
        probe,
        ProbePoint::NetifReceive | ProbePoint::NetDevQueue | ProbePoint::KfreeSkb
    );
    let sampled = match per_connection::decide(headers, ct, head, counts) {
        Decision::Show => false,
        Decision::Sample => true,
        // A telling drop is shown, even of a packet held back until then.
        Decision::Hold if telling => true,
        Decision::Hold => {
            per_connection::count_held_event();
            return false;
        }
    };
    emit(probe, &SkbBytes(skb), |event| {
        if head != 0 {
            event.skb_id = head;
            event.sections |= SECTION_SKB;
        }
        if let Some(headers) = headers {
            event.packet = *headers;
            event.sections |= SECTION_PACKET;
        }
        if sampled {
            event.sections |= SECTION_SAMPLE;
        }
        conntrack(nfct, event);
        device(skb, event);
        fill(event);
    });
    true
}

/// Fills the conntrack section from skb->_nfct (0: no entry).
#[inline(always)]
fn conntrack(nfct: u64, event: &mut PacketEvent) {
    let ct = nfct & !NFCT_INFOMASK;
    if ct == 0 {
        return;
    }
    event.ct_info = (nfct & NFCT_INFOMASK) as u8;
    event.ct_status = read(ct, offset!(ct_status)).unwrap_or(0);
    read_tuple(
        ct + offset!(ct_tuple_original) as u64,
        &mut event.ct_original,
    );
    read_tuple(ct + offset!(ct_tuple_reply) as u64, &mut event.ct_reply);
    event.sections |= SECTION_CONNTRACK;
}

/// skb->dev's ifindex and the inode of its network namespace.
#[inline(always)]
fn device<S: SkbFields>(skb: S, event: &mut PacketEvent) {
    let dev: u64 = skb.field(offset!(skb_dev)).unwrap_or(0);
    if dev == 0 {
        return;
    }
    event.ifindex = read(dev, offset!(dev_ifindex)).unwrap_or(0);
    let net: u64 = read(dev, offset!(dev_nd_net)).unwrap_or(0);
    if net != 0 {
        event.netns = read(net, offset!(net_ns_inum)).unwrap_or(0);
    }
}

/// The inode of the network namespace of skb->dev (0: no device), in three plain loads: from
/// a BTF-typed skb, the verifier lets the program walk skb->dev->nd_net.net like kernel C.
#[inline(always)]
pub fn trusted_netns(skb: TrustedSkb) -> u32 {
    let dev: u64 = trusted_field(skb.0, offset!(skb_dev));
    if dev == 0 {
        return 0;
    }
    let net: u64 = trusted_field(dev, offset!(dev_nd_net));
    if net == 0 {
        return 0;
    }
    trusted_field(net, offset!(net_ns_inum))
}

/// [`observe`] for an skb pointer a kprobe or tracepoint got.
#[inline(always)]
pub fn observe_untrusted(skb_ptr: u64, probe: ProbePoint, fill: impl FnOnce(&mut PacketEvent)) {
    if skb_ptr != 0 && !crate::empty() {
        observe(UntrustedSkb(skb_ptr), probe, false, fill);
    }
}
