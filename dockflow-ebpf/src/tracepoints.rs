//! Tracepoints. skb:kfree_skb reports every dropped packet with the kernel's reason.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use dockflow_common::{PacketEvent, ProbePoint, SECTION_DROP};

use crate::{emit, offsets, skb};

#[tracepoint]
pub fn df_kfree_skb(ctx: TracePointContext) -> u32 {
    let off = offsets();
    let Ok(skb_ptr) = (unsafe { ctx.read_at::<u64>(off.tp_kfree_skbaddr as usize) }) else {
        return 0;
    };
    let mut event = PacketEvent {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        probe: ProbePoint::KfreeSkb as u8,
        sections: SECTION_DROP,
        drop_reason: unsafe { ctx.read_at::<u32>(off.tp_kfree_reason as usize) }.unwrap_or(0),
        ..PacketEvent::default()
    };
    skb::describe(skb_ptr, &off, &mut event);
    emit(&event);
    0
}
