//! BPF netfilter programs (kernel >= 6.4), one per [`NfSlot`]; userspace attaches each to every
//! IPv4/IPv6 hook at the slot's priority. They always accept: dockflow observes, never filters.
//!
//! aya-ebpf has no netfilter macro and aya-obj rejects a `netfilter` section, so the functions
//! sit in `classifier/...` sections and userspace loads them itself with the netfilter type.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use dockflow_common::{KernelOffsets, NfSlot, PacketEvent, ProbePoint, SECTION_NETFILTER};

use crate::{emit, offsets, skb};

/// struct bpf_nf_ctx { const struct nf_hook_state *state; struct sk_buff *skb; }
#[repr(C)]
pub struct BpfNfCtx {
    state: u64,
    skb: u64,
}

const NF_ACCEPT: i32 = 1;

macro_rules! netfilter_slot {
    ($name:ident, $section:literal, $slot:expr) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $name(ctx: *mut BpfNfCtx) -> i32 {
            observe(ctx, $slot);
            NF_ACCEPT
        }
    };
}

netfilter_slot!(df_nf_first, "classifier/df_nf_first", NfSlot::First);
netfilter_slot!(df_nf_pre_nat, "classifier/df_nf_pre_nat", NfSlot::BeforeNat);
netfilter_slot!(df_nf_post_nat, "classifier/df_nf_post_nat", NfSlot::AfterNat);
netfilter_slot!(df_nf_last, "classifier/df_nf_last", NfSlot::Last);

#[inline(always)]
fn observe(ctx: *mut BpfNfCtx, slot: NfSlot) {
    let (state, skb_ptr) = unsafe { ((*ctx).state, (*ctx).skb) };
    let off = offsets();
    let mut event = PacketEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        probe: ProbePoint::Netfilter as u8,
        ..PacketEvent::default()
    };
    if skb::describe(skb::TrustedSkb(skb_ptr), &off, &mut event) {
        describe_hook(state, slot, &off, &mut event);
        emit(&event);
    }
}

/// Fills the netfilter section from a `struct nf_hook_state`.
#[inline(always)]
pub fn describe_hook(state: u64, slot: NfSlot, off: &KernelOffsets, event: &mut PacketEvent) {
    event.sections |= SECTION_NETFILTER;
    event.nf_slot = slot as u8;
    event.nf_hook = skb::read(state, off.state_hook).unwrap_or(0);
    event.nf_pf = skb::read(state, off.state_pf).unwrap_or(0);
    event.nf_okfn = skb::read(state, off.state_okfn).unwrap_or(0);
    let in_dev: u64 = skb::read(state, off.state_in).unwrap_or(0);
    if in_dev != 0 {
        event.nf_in_ifindex = skb::read(in_dev, off.dev_ifindex).unwrap_or(0);
    }
    let out_dev: u64 = skb::read(state, off.state_out).unwrap_or(0);
    if out_dev != 0 {
        event.nf_out_ifindex = skb::read(out_dev, off.dev_ifindex).unwrap_or(0);
    }
}
