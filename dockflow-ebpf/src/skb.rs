//! Reading a `struct sk_buff` at offsets resolved from BTF: through a typed pointer (plain
//! loads) or an untyped one (probe reads), its network header, its device and netns.

use aya_ebpf::helpers::bpf_probe_read_kernel_buf;
use dockflow_common::PacketEvent;

use crate::{
    headers::NetworkHeaderReader,
    kmem::{offset, read, trusted_field},
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
pub struct SkbNetworkHeader(pub u64);

impl NetworkHeaderReader for SkbNetworkHeader {
    #[inline(always)]
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> bool {
        // SAFETY: a BPF helper that checks the kernel address itself and fails (handled) where
        // nothing can be read; `out` is valid for its length.
        unsafe { bpf_probe_read_kernel_buf((self.0 + offset as u64) as *const u8, out).is_ok() }
    }
}

/// skb->dev's ifindex and the inode of its network namespace.
#[inline(always)]
pub fn device<S: SkbFields>(skb: S, event: &mut PacketEvent) {
    let dev: u64 = skb.field(offset!(skb_dev)).unwrap_or(0);
    if dev == 0 {
        return;
    }
    event.ifindex = read(dev, offset!(dev_ifindex)).unwrap_or(0);
    event.netns = device_netns(dev);
}

/// The inode of a net_device's network namespace (0 where unreadable).
#[inline(always)]
pub fn device_netns(dev: u64) -> u32 {
    let net: u64 = read(dev, offset!(dev_nd_net)).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    read(net, offset!(net_ns_inum)).unwrap_or(0)
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
