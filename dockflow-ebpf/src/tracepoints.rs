//! Tracepoints: skb:kfree_skb (every dropped packet with the kernel's reason) and the device
//! hops net:netif_receive_skb and net:net_dev_queue, which show interfaces tc is not on (the
//! host's external link, say).

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use dockflow_common::{PacketEvent, ProbePoint, SECTION_DROP};

use crate::{emit, offsets, skb};

#[tracepoint]
pub fn df_kfree_skb(ctx: TracePointContext) -> u32 {
    let off = offsets();
    let mut event = PacketEvent {
        sections: SECTION_DROP,
        drop_reason: unsafe { ctx.read_at::<u32>(off.tp_kfree_reason as usize) }.unwrap_or(0),
        ..PacketEvent::default()
    };
    observe(&ctx, off.tp_kfree_skbaddr, ProbePoint::KfreeSkb, &mut event);
    0
}

#[tracepoint]
pub fn df_netif_rx(ctx: TracePointContext) -> u32 {
    observe(&ctx, offsets().tp_netif_receive_skbaddr, ProbePoint::NetifReceive, &mut PacketEvent::default());
    0
}

#[tracepoint]
pub fn df_dev_queue(ctx: TracePointContext) -> u32 {
    observe(&ctx, offsets().tp_net_dev_queue_skbaddr, ProbePoint::NetDevQueue, &mut PacketEvent::default());
    0
}

/// Completes `event` from the record's skb and emits it.
#[inline(always)]
fn observe(ctx: &TracePointContext, skbaddr_offset: u32, probe: ProbePoint, event: &mut PacketEvent) {
    let Ok(skb_ptr) = (unsafe { ctx.read_at::<u64>(skbaddr_offset as usize) }) else {
        return;
    };
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    event.probe = probe as u8;
    if skb::describe(skb::UntrustedSkb(skb_ptr), &offsets(), event) {
        emit(event);
    }
}
