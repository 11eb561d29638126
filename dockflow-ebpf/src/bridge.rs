//! Bridge functions and nf_hook_slow through kprobes: the L2 path as the bridge code itself
//! walks it, and the bridge-family netfilter hooks (which BPF netfilter links cannot reach).
//! Kernels without kprobes refuse these; userspace then derives the L2 hops from tc.

use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use dockflow_common::{NFPROTO_BRIDGE, NfSlot, ProbePoint};

use crate::{
    globals::SETTINGS,
    kmem::{self, offset},
    netfilter,
    observe::observe_untrusted,
};

/// rx_handler_result_t br_handle_frame(struct sk_buff **pskb)
#[kprobe]
pub fn df_br_handle_frame(ctx: ProbeContext) -> u32 {
    let pskb: u64 = ctx.arg(0).unwrap_or(0);
    if let Some(skb_ptr) = kmem::read::<u64>(pskb, 0) {
        observe_untrusted(skb_ptr, ProbePoint::BrHandleFrame, |_| ());
    }
    0
}

/// void br_forward(const struct net_bridge_port *to, struct sk_buff *skb, bool local_rcv, bool local_orig)
#[kprobe]
pub fn df_br_forward(ctx: ProbeContext) -> u32 {
    observe_untrusted(ctx.arg(1).unwrap_or(0), ProbePoint::BrForward, |_| ());
    0
}

/// int br_pass_frame_up(struct sk_buff *skb, bool promisc)
#[kprobe]
pub fn df_br_pass_up(ctx: ProbeContext) -> u32 {
    observe_untrusted(ctx.arg(0).unwrap_or(0), ProbePoint::BrPassFrameUp, |_| ());
    0
}

/// netdev_tx_t br_dev_xmit(struct sk_buff *skb, struct net_device *dev)
#[kprobe]
pub fn df_br_dev_xmit(ctx: ProbeContext) -> u32 {
    observe_untrusted(ctx.arg(0).unwrap_or(0), ProbePoint::BrDevXmit, |_| ());
    0
}

/// int nf_hook_slow(struct sk_buff *skb, struct nf_hook_state *state, ...)
#[kprobe]
pub fn df_nf_hook_slow(ctx: ProbeContext) -> u32 {
    let state: u64 = ctx.arg(1).unwrap_or(0);
    let bridge_only = SETTINGS
        .get(0)
        .is_some_and(|s| s.nf_hook_slow_bridge_only != 0);
    if bridge_only && kmem::read::<u8>(state, offset!(state_pf)) != Some(NFPROTO_BRIDGE) {
        return 0;
    }
    observe_untrusted(ctx.arg(0).unwrap_or(0), ProbePoint::NfHookSlow, |event| {
        netfilter::describe_hook(state, NfSlot::Entry, event)
    });
    0
}
