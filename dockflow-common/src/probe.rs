//! Where an event was taken (the probe points) and why the tc filter kept or skipped a frame.

// The other modules' items, for the documentation's links.
#[cfg(doc)]
#[allow(unused_imports)]
use crate::*;

/// Where in the kernel an event was taken.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum ProbePoint {
    /// tc ingress on an interface: the frame arrives at the interface from its wire.
    TcIngress = 1,
    /// tc egress on an interface: the frame is handed to the interface to send.
    TcEgress = 2,
    /// A BPF netfilter program at one (family, hook, priority).
    Netfilter = 3,
    /// Tracepoint skb:kfree_skb: the packet was dropped, with a reason.
    KfreeSkb = 4,
    /// Tracepoint net:netif_receive_skb: a device hands the packet to the stack (or bridge).
    NetifReceive = 5,
    /// Tracepoint net:net_dev_queue: the packet is queued for transmission on a device.
    NetDevQueue = 6,
    /// kprobe br_handle_frame: a frame enters a bridge port.
    BrHandleFrame = 7,
    /// br_forward: the bridge forwards (or floods) a frame to a port.
    BrForward = 8,
    /// br_pass_frame_up: the bridge passes a frame up to the host's IP stack.
    BrPassFrameUp = 9,
    /// br_dev_xmit: the host's IP stack sends into the bridge device.
    BrDevXmit = 10,
    /// nf_hook_slow: a netfilter hook of any family runs (bridge family included).
    NfHookSlow = 11,
    /// tc ingress on a node's own interface: a VXLAN packet from another node arrives, an
    /// overlay network's frame inside (see [`PacketEvent`] for where the outer headers go).
    TunnelIngress = 12,
    /// tc egress on a node's own interface: a VXLAN packet leaves for another node.
    TunnelEgress = 13,
}

/// Slots for [`LOST_MAP`]: one per probe point, index = the point's value.
pub const PROBE_POINT_SLOTS: u32 = 16;

impl ProbePoint {
    pub const ALL: [ProbePoint; 13] = [
        ProbePoint::TcIngress,
        ProbePoint::TcEgress,
        ProbePoint::Netfilter,
        ProbePoint::KfreeSkb,
        ProbePoint::NetifReceive,
        ProbePoint::NetDevQueue,
        ProbePoint::BrHandleFrame,
        ProbePoint::BrForward,
        ProbePoint::BrPassFrameUp,
        ProbePoint::BrDevXmit,
        ProbePoint::NfHookSlow,
        ProbePoint::TunnelIngress,
        ProbePoint::TunnelEgress,
    ];

    /// Whether the point sees VXLAN packets between nodes (an event's outer headers).
    pub fn is_tunnel(self) -> bool {
        matches!(self, ProbePoint::TunnelIngress | ProbePoint::TunnelEgress)
    }

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u8 == raw)
    }
}

/// Why the in-kernel filter kept or skipped a frame at tc, as --debug-kernel reports it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterReason {
    /// Bare interfaces: everything on them is wanted.
    NoFilter = 0,
    /// Not an IP or ARP frame the program could read.
    NotIp = 1,
    /// To or from one of the target's addresses.
    Address = 2,
    /// To or from one of its published ports.
    Port = 3,
    /// A learned reply tuple of one of its NATed connections.
    ReplyTuple = 4,
    /// None of these: skipped.
    NotTarget = 5,
    /// The target's, but of a connection the filter expression leaves out: skipped.
    LeftOut = 6,
}

impl FilterReason {
    pub const ALL: [FilterReason; 7] = [
        FilterReason::NoFilter,
        FilterReason::NotIp,
        FilterReason::Address,
        FilterReason::Port,
        FilterReason::ReplyTuple,
        FilterReason::NotTarget,
        FilterReason::LeftOut,
    ];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == raw)
    }
}
