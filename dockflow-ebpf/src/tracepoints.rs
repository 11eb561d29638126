//! BTF-typed tracepoints (tp_btf): skb:kfree_skb (every dropped packet with the kernel's
//! reason) and the device hops net:netif_receive_skb and net:net_dev_queue, which show
//! interfaces tc is not on (the host's external link, say).
//!
//! BTF-typed rather than classic or raw: a classic tracepoint formats its whole record (device
//! name included) for every packet on the host before the program looks at it, and a raw one
//! hands over an skb pointer the verifier knows nothing about, so every field costs a helper
//! call. Here the skb is typed, and its fields are plain loads, as in the netfilter programs.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use dockflow_common::{ProbePoint, SECTION_DROP};

use crate::{
    conntrack::nfct,
    filter,
    globals::{SETTINGS, empty},
    kmem::offset,
    observe::observe,
    skb::{TrustedSkb, trusted_netns},
    skipped,
};

/// TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...)
#[btf_tracepoint(function = "kfree_skb")]
pub fn df_kfree_skb(ctx: BtfTracePointContext) -> i32 {
    if empty() {
        return 0;
    }
    let reason = if offset!(kfree_skb_has_reason) != 0 {
        ctx.arg::<u64>(2) as u32
    } else {
        0
    };
    let telling = !SETTINGS
        .get(0)
        .is_some_and(|s| s.plain_frees.contains(&reason));
    observe(
        TrustedSkb(ctx.arg(0)),
        ProbePoint::KfreeSkb,
        telling,
        |event| {
            event.sections |= SECTION_DROP;
            event.drop_reason = reason;
        },
    );
    0
}

/// TP_PROTO(struct sk_buff *skb)
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn df_netif_rx(ctx: BtfTracePointContext) -> i32 {
    device_hop(ctx.arg(0), ProbePoint::NetifReceive, false);
    0
}

/// TP_PROTO(struct sk_buff *skb)
#[btf_tracepoint(function = "net_dev_queue")]
pub fn df_dev_queue(ctx: BtfTracePointContext) -> i32 {
    device_hop(ctx.arg(0), ProbePoint::NetDevQueue, true);
    0
}

/// One device hop, in the host's or the target's namespace (others are skipped first). It may
/// reuse the "not wanted" verdict of the probe just before it on this CPU for the same skb and
/// conntrack entry (see skipped.rs): when that verdict is settled (a packet the bridge passes
/// up was decided at the IP hooks br_netfilter ran for it), or, for a packet being queued for
/// transmit, whenever the skb has a conntrack entry (typically the last netfilter slot of
/// postrouting was just before). Never without an entry: in namespaces without conntrack a
/// freed skb's address and buffer may come back at once for another flow's packet of the same
/// shape.
#[inline(always)]
fn device_hop(skb_ptr: u64, probe: ProbePoint, transmit: bool) {
    if empty() {
        return;
    }
    let skb = TrustedSkb(skb_ptr);
    if !filter::watches_netns(trusted_netns(skb)) {
        return;
    }
    let nfct = nfct(skb);
    let Some(skipped) = skipped::entry() else {
        return;
    };
    let reuses = nfct != 0 && (transmit || skipped.settled());
    if reuses && skipped.holds(skb_ptr, nfct) {
        return;
    }
    let wanted = observe(skb, probe, false, |_| ());
    skipped.record(skb_ptr, nfct, wanted);
}
