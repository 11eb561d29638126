//! BPF netfilter programs (kernel >= 6.4), one per [`NfSlot`]; userspace attaches each to every
//! IPv4/IPv6 hook at the slot's priority. They always accept: dockflow observes, never filters.
//!
//! aya-ebpf has no netfilter macro and aya-obj rejects a `netfilter` section, so the functions
//! sit in `classifier/...` sections and userspace loads them itself with the netfilter type.

use dockflow_common::{NfSlot, PacketEvent, ProbePoint, SECTION_NETFILTER};

use crate::{
    conntrack::nfct,
    globals::empty,
    kmem::{self, offset},
    observe, reply_tuples,
    skb::{self, TrustedSkb},
    skipped,
};

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
            if !empty() {
                observe(ctx, $slot);
            }
            NF_ACCEPT
        }
    };
}

netfilter_slot!(df_nf_first, "classifier/df_nf_first", NfSlot::First);
netfilter_slot!(df_nf_pre_nat, "classifier/df_nf_pre_nat", NfSlot::BeforeNat);
netfilter_slot!(
    df_nf_post_nat,
    "classifier/df_nf_post_nat",
    NfSlot::AfterNat
);
netfilter_slot!(df_nf_last, "classifier/df_nf_last", NfSlot::Last);

/// A packet crosses up to four of these programs per hook, ten when it is forwarded, and most
/// packets are not the target's. So a slot may reuse the "not wanted" verdict the last full
/// evaluation on this CPU took for the same skb and conntrack entry (see skipped.rs), where
/// nothing between the two can change the filter's answer:
/// - before NAT and at the last slot: between the slot before and these, only conntrack acts
///   on the packet (it changes `nfct`, so no match), not NAT;
/// - after NAT and at a hook's first slot: only when the verdict is settled, i.e. it holds for
///   every packet of that connection in that direction (see [`skipped::settled`]).
///
/// So a forwarded packet of an established connection is decided twice (at prerouting's first
/// slot, before conntrack, and before NAT, with the entry) instead of at every hook.
#[inline(always)]
fn observe(ctx: *mut BpfNfCtx, slot: NfSlot) {
    // SAFETY: `ctx` is the program's own context, valid for its run.
    let (state, skb_ptr) = unsafe { ((*ctx).state, (*ctx).skb) };
    let skb = TrustedSkb(skb_ptr);
    let nfct = nfct(skb);
    let Some(skipped) = skipped::entry() else {
        return;
    };
    let reuses = match slot {
        NfSlot::BeforeNat | NfSlot::Last => true,
        NfSlot::First | NfSlot::AfterNat => skipped.settled(),
        NfSlot::Entry => false,
    };
    if reuses && skipped.holds(skb_ptr, nfct) {
        return;
    }
    let mut hook = (0, 0);
    let wanted = observe::observe(skb, ProbePoint::Netfilter, false, |event| {
        describe_hook(state, slot, event);
        hook = (event.nf_hook, event.nf_pf);
    });
    skipped.record(skb_ptr, nfct, wanted);
    if wanted && slot == NfSlot::Last {
        reply_tuples::learn(hook.0, hook.1, nfct);
    }
}

/// Fills the netfilter section from a `struct nf_hook_state`.
#[inline(always)]
pub fn describe_hook(state: u64, slot: NfSlot, event: &mut PacketEvent) {
    event.sections |= SECTION_NETFILTER;
    event.nf_slot = slot as u8;
    event.nf_hook = kmem::read(state, offset!(state_hook)).unwrap_or(0);
    event.nf_pf = kmem::read(state, offset!(state_pf)).unwrap_or(0);
    event.nf_okfn = kmem::read(state, offset!(state_okfn)).unwrap_or(0);
    let in_dev: u64 = kmem::read(state, offset!(state_in)).unwrap_or(0);
    if in_dev != 0 {
        event.nf_in_ifindex = kmem::read(in_dev, offset!(dev_ifindex)).unwrap_or(0);
    }
    let out_dev: u64 = kmem::read(state, offset!(state_out)).unwrap_or(0);
    if out_dev != 0 {
        event.nf_out_ifindex = kmem::read(out_dev, offset!(dev_ifindex)).unwrap_or(0);
    }
    // A locally sent packet has no skb->dev yet: its hook runs in the namespace of the device
    // it goes out of (a container's own output hook is not the host's).
    if event.netns == 0 {
        let dev = if out_dev != 0 { out_dev } else { in_dev };
        if dev != 0 {
            event.netns = skb::device_netns(dev);
        }
    }
}
