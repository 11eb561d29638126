//! BPF netfilter programs (kernel >= 6.4), one per [`NfSlot`]; userspace attaches each to every
//! IPv4/IPv6 hook at the slot's priority. They always accept: dockflow observes, never filters.
//!
//! aya-ebpf has no netfilter macro and aya-obj rejects a `netfilter` section, so the functions
//! sit in `classifier/...` sections and userspace loads them itself with the netfilter type.

use dockflow_common::{NF_INET_FORWARD, NfSlot, PacketEvent, ProbePoint, SECTION_NETFILTER};

use crate::{offset, skb, skipped};

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
netfilter_slot!(
    df_nf_post_nat,
    "classifier/df_nf_post_nat",
    NfSlot::AfterNat
);
netfilter_slot!(df_nf_last, "classifier/df_nf_last", NfSlot::Last);

/// enum ip_conntrack_status: IPS_SRC_NAT_DONE_BIT 7, IPS_DST_NAT_DONE_BIT 8. Both set once the
/// connection's NAT bindings (or its null bindings) are fixed: from then on NAT only maps a
/// packet within the entry's tuples.
const IPS_NAT_DONE_MASK: u64 = 1 << 7 | 1 << 8;

/// A packet crosses up to four of these programs per hook, ten when it is forwarded, and most
/// packets are not the target's. So a slot may reuse the "not wanted" verdict of the previous
/// slot for the same skb and conntrack entry, where nothing between the two changes what the
/// filter looks at: before NAT and last always, after NAT only when the entry's NAT bindings
/// were already complete (NAT then rewrites the headers to addresses of the entry, which the
/// filter already checked). Within one hook's walk the skb is alive, so its address names that
/// packet and no other. The first slot of every hook decides afresh; so does any slot where
/// conntrack attached an entry since, and the slot after NAT for a connection's first packet.
#[inline(always)]
fn observe(ctx: *mut BpfNfCtx, slot: NfSlot) {
    let (state, skb_ptr) = unsafe { ((*ctx).state, (*ctx).skb) };
    let skb = skb::TrustedSkb(skb_ptr);
    let nfct = skb::nfct(skb);
    let Some(skipped) = skipped::entry() else {
        return;
    };
    let reuses = match slot {
        NfSlot::BeforeNat | NfSlot::Last => true,
        NfSlot::AfterNat => skipped.nat_final(),
        NfSlot::First | NfSlot::Entry => false,
    };
    if reuses && skipped.holds(skb_ptr, nfct) {
        return;
    }
    let wanted = skb::observe(skb, ProbePoint::Netfilter, |event| {
        describe_hook(state, slot, event)
    });
    // Only a slot before NAT hands its verdict across it (forward has no NAT).
    let before_nat = match slot {
        NfSlot::BeforeNat => true,
        NfSlot::First => hook(state) != NF_INET_FORWARD,
        _ => false,
    };
    skipped.record(
        skb_ptr,
        nfct,
        wanted,
        !wanted && before_nat && nat_final(nfct),
    );
}

/// state->hook, a plain load: ctx->state is a BTF-typed pointer, like ctx->skb.
#[inline(always)]
fn hook(state: u64) -> u8 {
    skb::trusted_field(state, offset!(state_hook))
}

/// Whether the conntrack entry behind skb->_nfct has both NAT bindings fixed.
#[inline(always)]
fn nat_final(nfct: u64) -> bool {
    let ct = nfct & !skb::NFCT_INFOMASK;
    ct != 0
        && skb::read::<u64>(ct, offset!(ct_status))
            .is_some_and(|status| status & IPS_NAT_DONE_MASK == IPS_NAT_DONE_MASK)
}

/// Fills the netfilter section from a `struct nf_hook_state`.
#[inline(always)]
pub fn describe_hook(state: u64, slot: NfSlot, event: &mut PacketEvent) {
    event.sections |= SECTION_NETFILTER;
    event.nf_slot = slot as u8;
    event.nf_hook = skb::read(state, offset!(state_hook)).unwrap_or(0);
    event.nf_pf = skb::read(state, offset!(state_pf)).unwrap_or(0);
    event.nf_okfn = skb::read(state, offset!(state_okfn)).unwrap_or(0);
    let in_dev: u64 = skb::read(state, offset!(state_in)).unwrap_or(0);
    if in_dev != 0 {
        event.nf_in_ifindex = skb::read(in_dev, offset!(dev_ifindex)).unwrap_or(0);
    }
    let out_dev: u64 = skb::read(state, offset!(state_out)).unwrap_or(0);
    if out_dev != 0 {
        event.nf_out_ifindex = skb::read(out_dev, offset!(dev_ifindex)).unwrap_or(0);
    }
}
