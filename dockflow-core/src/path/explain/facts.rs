//! What an explanation can say: typed facts, each one sentence (sentences.rs), and the
//! small types they carry.

use serde::Serialize;

use super::super::{
    docker::DockerDrop,
    hop::{Layer, ProxyLeg, Rewrite, RewriteField},
    rules::RuleRef,
};
use crate::model::{CtDirection, CtState, DropReason, Family, Hook, Outer};

/// A netfilter hook of one family ("ipv4 prerouting").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HookRef {
    pub family: Family,
    pub hook: Hook,
}

/// Swarm's routing mesh balances a published port's connections in this namespace (IPVS),
/// as Docker names it.
pub const ROUTING_MESH_NAMESPACE: &str = "ingress_sbox";

/// Where a packet was first seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// A container sends it out of its own interface (seen inside its namespace).
    Container,
    /// It enters a bridge port from the container (or namespace) behind it.
    BridgePort,
    /// It arrives on one of the host's own interfaces.
    HostInterface,
    /// A process on the host sends it (the first hook is IP output).
    HostProcess,
    /// The host sends it into a bridge, with no IP hook before (ARP, say).
    HostIntoBridge,
    /// It comes from another node over VXLAN and enters a bridge through its VXLAN port.
    Tunnel,
    /// It comes from another node inside a VXLAN packet seen arriving on this node's own
    /// interface.
    OtherNode,
    /// First seen somewhere along the way (a probe point further in).
    Midway,
    /// No probe saw it; only nftables' trace did.
    TraceOnly,
}

/// What a NAT rewrite is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NatKind {
    /// A nat rule rewrites the destination of a connection's first packet.
    Dnat,
    /// A nat rule rewrites the source (SNAT or masquerade) of a connection's first packet.
    Snat,
    /// conntrack reverses the request's DNAT on a reply (its source).
    UndoDnat,
    /// conntrack reverses the request's SNAT on a reply (its destination).
    UndoSnat,
    /// conntrack applies an existing binding to a later packet of the connection.
    Binding,
}

/// What became of a packet that was not dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The IP stack forwarded it (IP forward hook), never to a local socket.
    Routed,
    /// Delivered to a socket on the host (IP input hook).
    DeliveredLocally,
    /// Sent by the host itself: it starts at IP output.
    SentByHost,
    /// Never handed to the IP stack: the bridge carried it from port to port.
    BridgedOnly,
    /// The bridge sent it to another node over VXLAN: the rest of its way is there.
    ToOtherNode,
    /// The host forwarded it to Swarm's routing mesh (`ingress_sbox`), where IPVS sent it on
    /// to a task.
    BalancedToTask,
    /// As [`Outcome::BalancedToTask`], to a task on another node: the ingress overlay's VXLAN
    /// carries it there.
    BalancedToOtherNode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Request,
    Reply,
}

impl Role {
    pub(super) fn word(self) -> &'static str {
        match self {
            Role::Request => "request",
            Role::Reply => "reply",
        }
    }
}

/// How an ARP question travelled, as the bridge's handling shows it (dockflow does not capture
/// MAC addresses, and Linux leaves the target MAC empty even in a unicast recheck).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArpDelivery {
    /// Sent out of ports and passed up to the host: a broadcast.
    Broadcast,
    /// Only one port, or only the host: the destination MAC was known.
    Unicast,
    /// The host asked and the bridge sent it to one port: a unicast, or a bridge with one port.
    OnePort,
}

/// Who answered an ARP question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answerer {
    /// The host, for one of its own addresses (a bridge's: the containers' gateway).
    Host,
    /// A container, for its own address.
    Container,
    /// An overlay's VXLAN device, for a task on another node: it answers from its neighbour
    /// table (proxy ARP), so the question never leaves this node.
    TunnelProxy,
    Unknown,
}

/// Everything an explanation can say. Each variant is one sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    Start {
        role: Role,
        packet: String,
        origin: Origin,
        place: String,
    },
    EntersBridge {
        role: Role,
        port: String,
    },
    /// br_netfilter runs IP hooks for a frame the bridge is handling.
    BridgeRunsIpHooks {
        role: Role,
        hooks: Vec<HookRef>,
    },
    IpStackRunsHooks {
        role: Role,
        hooks: Vec<HookRef>,
    },
    Nat {
        role: Role,
        nat: NatKind,
        field: RewriteField,
        before: String,
        after: String,
        at: HookRef,
        /// The priorities of the probes on either side of the rewrite.
        #[serde(skip_serializing_if = "Option::is_none")]
        between: Option<(i32, i32)>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ct_state: Option<CtState>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ct_direction: Option<CtDirection>,
    },
    Accepted {
        role: Role,
        rule: RuleRef,
    },
    PassedUp {
        role: Role,
        bridge: String,
    },
    RoutedIntoBridge {
        role: Role,
        bridge: String,
    },
    /// After a DNAT inside the bridge, br_netfilter returns the frame to the same bridge.
    /// `bridge` is named when the hand-back was a transmit on the bridge device (the neighbour
    /// entry had no cached header yet); otherwise it is direct and no probe sees it.
    HandedBack {
        role: Role,
        #[serde(skip_serializing_if = "Option::is_none")]
        bridge: Option<String>,
    },
    Flooded {
        role: Role,
        ports: Vec<String>,
        copies_dropped: usize,
    },
    ToPort {
        role: Role,
        port: String,
    },
    /// A frame from another node, unwrapped from VXLAN, enters the bridge.
    FromTunnel {
        role: Role,
        port: String,
        vni: u32,
        /// The VXLAN packet was seen arriving on the node's own interface just before.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        unwrapped: bool,
    },
    /// Inside another network namespace the packet's addresses are rewritten between the
    /// device it arrived on and the one it leaves by: NAT there, or IPVS (Swarm's routing
    /// mesh in `ingress_sbox`).
    NatInNamespace {
        role: Role,
        namespace: String,
        /// In the order seen.
        rewrites: Vec<Rewrite>,
        /// The container that owns the new destination (the task the mesh chose).
        #[serde(skip_serializing_if = "Option::is_none")]
        backend: Option<String>,
    },
    /// The VXLAN packet carrying it leaves the node through its own interface.
    ToNode {
        role: Role,
        interface: String,
        outer: Outer,
    },
    /// A VXLAN packet carrying it arrives at the node's own interface.
    FromNode {
        role: Role,
        interface: String,
        outer: Outer,
    },
    /// The bridge sends the frame to another node, to be wrapped in VXLAN.
    ToTunnel {
        role: Role,
        port: String,
        vni: u32,
        /// The UDP port the VXLAN packet goes to, where the recording knows it.
        #[serde(skip_serializing_if = "Option::is_none")]
        udp_port: Option<u16>,
    },
    /// A device inside a container's (or another) namespace receives it.
    ReachesNamespace {
        role: Role,
        interface: String,
    },
    LeavesHost {
        role: Role,
        interface: String,
    },
    Dropped {
        role: Role,
        reason: DropReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<RuleRef>,
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<HookRef>,
    },
    /// The host's ICMP code frees a locally delivered ICMP message no ping socket wants, after
    /// raw sockets got their copies.
    FreedAfterDelivery {
        role: Role,
        reason: DropReason,
    },
    Outcome {
        role: Role,
        outcome: Outcome,
        destination: String,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        bridge_hooks: Vec<HookRef>,
    },
    /// An ARP question: broadcast (the bridge floods it and passes it up to the host), or sent
    /// to the MAC the asker already has (Linux rechecks a stale neighbour entry by unicast).
    ArpAsked {
        role: Role,
        delivery: ArpDelivery,
        sender: String,
        target: String,
        /// The ports the bridge sent it out of.
        ports: Vec<String>,
        /// One of them is the port it came in through (the port is in hairpin mode).
        back_to_asker: bool,
        /// The bridge that passed it up to the host, if it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        passed_up: Option<String>,
    },
    /// A gratuitous ARP: `address` announces itself (the question is about the asker's own
    /// address, so nobody answers); neighbours update their caches.
    ArpAnnounced {
        role: Role,
        address: String,
        ports: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        passed_up: Option<String>,
    },
    /// An ARP answer: `sender` is at the answerer's MAC.
    ArpAnswered {
        role: Role,
        sender: String,
        target: String,
        /// The host (through this bridge's device) or the container behind this port.
        answered_by: Answerer,
        /// Where the answer was first seen: a bridge, or the answering container's port.
        place: String,
        ports: Vec<String>,
        /// The bridge that passed the answer up to the host (when the host asked).
        #[serde(skip_serializing_if = "Option::is_none")]
        passed_up: Option<String>,
    },
    /// The rule that dropped it is one of Docker's own: what it protects, and how to allow.
    DockerRule {
        role: Role,
        why: DockerDrop,
        /// The container the packet was for.
        #[serde(skip_serializing_if = "Option::is_none")]
        container: Option<String>,
    },
    /// The connection ends at a docker-proxy's listening socket (the front leg of an exchange
    /// through dockerd's userland proxy).
    ProxyAccepts {
        role: Role,
        #[serde(flatten)]
        proxy: ProxyLeg,
    },
    /// docker-proxy opened this connection to relay another (the back leg).
    ProxyOpens {
        role: Role,
        #[serde(flatten)]
        proxy: ProxyLeg,
    },
    /// Events of this packet were lost: what is said of it may miss hops.
    Incomplete {
        role: Role,
    },
    /// It goes from one node of a cluster to another inside VXLAN (recordings merged).
    CrossesNodes {
        role: Role,
        from: String,
        to: String,
        /// The nodes' swarm addresses: the VXLAN packet's outer source and destination.
        #[serde(skip_serializing_if = "Option::is_none")]
        from_address: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        to_address: Option<String>,
        vni: u32,
        /// The UDP port the first node's VXLAN port sends to, where its recording knows it.
        #[serde(skip_serializing_if = "Option::is_none")]
        udp_port: Option<u16>,
        /// The VXLAN packet as the first node's own interface sent it, when both nodes saw it
        /// there (leaving one, arriving at the other).
        #[serde(skip_serializing_if = "Option::is_none")]
        outer: Option<Outer>,
        /// From its last hop on one node to its first on the other, clocks aligned.
        gap_ns: i64,
    },
    NoReply,
    /// How request and reply went between the bridge (L2) and the IP stack (L3).
    Crossing {
        request: Vec<Layer>,
        reply: Vec<Layer>,
        request_words: String,
        reply_words: String,
    },
    /// nftables' trace saw the reply in these chains, none of them nat.
    ReplySeesNoNat {
        chains: Vec<String>,
    },
}

impl std::fmt::Display for HookRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.hook)
    }
}
