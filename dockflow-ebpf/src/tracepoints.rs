//! Raw tracepoints: skb:kfree_skb (every dropped packet with the kernel's reason) and the device
//! hops net:netif_receive_skb and net:net_dev_queue, which show interfaces tc is not on (the
//! host's external link, say).
//!
//! Raw rather than classic tracepoints: a classic one first formats the whole trace record
//! (device name included) for every packet on the host before the program even looks at it;
//! a raw one hands over the tracepoint's arguments as they are.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use dockflow_common::{PacketEvent, ProbePoint, SECTION_DROP};

use crate::{offsets, skb};

/// TP_PROTO(struct sk_buff *skb, void *location, enum skb_drop_reason reason, ...)
#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn df_kfree_skb(ctx: RawTracePointContext) -> i32 {
    let mut event = PacketEvent { sections: SECTION_DROP, ..PacketEvent::default() };
    if offsets().kfree_skb_has_reason != 0 {
        event.drop_reason = ctx.arg::<u64>(2) as u32;
    }
    skb::observe_untrusted(ctx.arg(0), ProbePoint::KfreeSkb, &mut event);
    0
}

/// TP_PROTO(struct sk_buff *skb)
#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn df_netif_rx(ctx: RawTracePointContext) -> i32 {
    skb::observe_untrusted(ctx.arg(0), ProbePoint::NetifReceive, &mut PacketEvent::default());
    0
}

/// TP_PROTO(struct sk_buff *skb)
#[raw_tracepoint(tracepoint = "net_dev_queue")]
pub fn df_dev_queue(ctx: RawTracePointContext) -> i32 {
    skb::observe_untrusted(ctx.arg(0), ProbePoint::NetDevQueue, &mut PacketEvent::default());
    0
}
