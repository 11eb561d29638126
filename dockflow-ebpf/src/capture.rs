//! The packet's first bytes behind its event (--snaplen), so that a capture file shows the same
//! packet at every hop: from the MAC header where the skb has one, otherwise behind an Ethernet
//! header written here (zero MACs, the IP version's ethertype), so every record reads as
//! Ethernet. Only what the filter kept is captured, and only as much as --snaplen asks.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel_buf, generated::bpf_skb_load_bytes},
    programs::TcContext,
};
use dockflow_common::{PacketEvent, SECTION_BYTES, SECTION_SYNTHETIC_ETHERNET};

use crate::{
    headers::{self, HEADER_UNSET},
    kmem::offset,
    ring::PacketBytes,
    skb::SkbFields,
};

const ETH_HLEN: u32 = headers::ETH_HLEN as u32;

/// tc: the frame as the device has it, MAC header first.
pub struct TcBytes<'a>(pub &'a TcContext);

impl PacketBytes for TcBytes<'_> {
    #[inline(always)]
    fn capture(&self, out: &mut [u8], snaplen: u32, event: &mut PacketEvent) {
        let len = self.0.len();
        let n = if len < snaplen { len } else { snaplen };
        if n == 0 {
            return;
        }
        // Within 1..=out.len() in a form older verifiers (6.1) can follow: a non-zero test
        // does not raise their lower bound, a mask does (out.len() is a power of two).
        let n = ((n - 1) & (out.len() as u32 - 1)) + 1;
        // SAFETY: a BPF helper on this program's own skb; it checks offset and length against the
        // packet and fails (handled) past its end; `out` holds at least the length asked for.
        let loaded = unsafe {
            bpf_skb_load_bytes(self.0.skb.skb as *const _, 0, out.as_mut_ptr() as *mut _, n)
        };
        if loaded == 0 {
            event.snap_len = n as u16;
            event.wire_len = len;
            event.sections |= SECTION_BYTES;
        }
    }
}

/// An skb pointer (netfilter, tracepoints, kprobes): its bytes read from skb->head.
pub struct SkbBytes<S: SkbFields>(pub S);

impl<S: SkbFields> PacketBytes for SkbBytes<S> {
    #[inline(always)]
    fn capture(&self, out: &mut [u8], snaplen: u32, event: &mut PacketEvent) {
        let skb = self.0;
        let head: u64 = skb.field(offset!(skb_head)).unwrap_or(0);
        let data: u64 = skb.field(offset!(skb_data)).unwrap_or(0);
        let len: u32 = skb.field(offset!(skb_len)).unwrap_or(0);
        let mac: u16 = skb.field(offset!(skb_mac_header)).unwrap_or(HEADER_UNSET);
        let network: u16 = skb
            .field(offset!(skb_network_header))
            .unwrap_or(HEADER_UNSET);
        if head == 0 || data < head || network == HEADER_UNSET {
            return;
        }
        // A MAC header right in front of the network header is the frame's own (no VLAN tag
        // in between, which the bridge would have taken off anyway).
        let has_mac = mac != HEADER_UNSET && mac as u32 + ETH_HLEN == network as u32;
        let start = if has_mac { mac } else { network } as u64;
        let end = data - head + len as u64;
        if end <= start {
            return;
        }
        let mut wire = (end - start) as u32;
        if has_mac {
            // SAFETY: a BPF helper that checks the kernel address itself and fails (handled) where
            // nothing can be read; `out` is valid for its length.
            if unsafe { bpf_probe_read_kernel_buf((head + start) as *const u8, out) }.is_err() {
                return;
            }
        } else {
            let Some(rest) = out.get_mut(ETH_HLEN as usize..) else {
                return;
            };
            // SAFETY: a BPF helper that checks the kernel address itself and fails (handled) where
            // nothing can be read; `out` is valid for its length.
            if unsafe { bpf_probe_read_kernel_buf((head + start) as *const u8, rest) }.is_err() {
                return;
            }
            let ethertype: u16 = match out[ETH_HLEN as usize] >> 4 {
                4 => 0x0800,
                6 => 0x86dd,
                _ => 0,
            };
            for byte in out.iter_mut().take(12) {
                *byte = 0;
            }
            out[12] = (ethertype >> 8) as u8;
            out[13] = ethertype as u8;
            wire += ETH_HLEN;
            event.sections |= SECTION_SYNTHETIC_ETHERNET;
        }
        let mut n = if wire < snaplen { wire } else { snaplen };
        if n > out.len() as u32 {
            n = out.len() as u32;
        }
        event.snap_len = n as u16;
        event.wire_len = wire;
        event.sections |= SECTION_BYTES;
    }
}
