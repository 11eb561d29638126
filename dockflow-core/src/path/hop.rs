//! A packet's observed path, as plain data: its hops in order (each with its layer and what
//! happened there), the NAT rewrites between them, the nftables rules that judged it (each
//! placed at its hop), and where it belongs (connection, direction, proxied exchange). What
//! correlation produces and everything after it reads; the logic lives beside it (classify,
//! correlate, proxy, rules).

use serde::Serialize;

use crate::model::{DropReason, Event, Family, Hook, Outer, Packet, RuleTrace};

/// One hop of a packet's path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub layer: Layer,
    #[serde(flatten)]
    pub kind: HopKind,
    /// NAT rewrites visible at this hop, compared with the previous hop ("dst 10.199.0.1:1812 ->
    /// 172.20.0.2:1812").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<Rewrite>,
    pub event: Event,
}

/// Containers at a packet's ends, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ends {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
}

impl Ends {
    pub fn is_empty(&self) -> bool {
        self.src.is_none() && self.dst.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    pub field: RewriteField,
    pub before: String,
    pub after: String,
}

/// Which end of a packet NAT rewrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewriteField {
    Source,
    Destination,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The connection's original direction (the request).
    Request,
    /// The reply direction.
    Reply,
}

/// A packet's whole observed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketPath {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Headers as first seen.
    pub packet: Packet,
    /// The containers at either end, where an address of the packet (before or after NAT)
    /// is one of theirs.
    #[serde(skip_serializing_if = "Ends::is_empty")]
    pub ends: Ends,
    pub hops: Vec<Hop>,
    /// nftables rules that evaluated the packet, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleTrace>,
    /// For each of `rules`, the index of the first hop it ran at (None: no such hop was seen):
    /// placed once, when the path is finished, for everything that tells the path.
    #[serde(skip)]
    pub rule_at: Vec<Option<usize>>,
    /// Events were lost while this packet was on its way (the kernel's ring buffer overflowed,
    /// or the display fell behind and skipped some): its hops may be missing some.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// Its connection is one leg of an exchange through dockerd's userland proxy (set by
    /// [`super::proxy::ProxyLinker`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyLeg>,
    /// nftables traced only its flow's first packets (--trace-rules first): this one was not
    /// traced, and shares the rules of this earlier packet of its connection and direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_as: Option<u64>,
    /// Past its connection's first --per-connection packets, the kernel showed it as the
    /// connection's sample (one a second; the others only counted), or it is a drop of a
    /// packet held back until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sample: bool,
}

impl PacketPath {
    /// Where the packet itself was dropped (not a flooded copy of it, nor an ICMP message freed
    /// after delivery).
    pub fn dropped(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| {
            matches!(
                h.kind,
                HopKind::Dropped {
                    flood_copy: false,
                    after_delivery: false,
                    ..
                }
            )
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The bridge handles the frame.
    L2,
    /// The host's IP stack handles the packet (routing, local delivery, NAT, forwarding).
    L3,
    /// An IP netfilter hook that br_netfilter runs on behalf of the bridge, for a frame that is
    /// still being bridged (bridge-nf-call-iptables=1).
    L3FromBridge,
    /// A device hands the packet on (receive/transmit) outside the bridge, or the packet is
    /// inside another network namespace (a container's own stack).
    Device,
    /// The kernel freed the packet: it went no further.
    Drop,
}

impl Layer {
    pub fn tag(self) -> &'static str {
        match self {
            Layer::L2 => "L2",
            Layer::L3 => "L3",
            Layer::L3FromBridge => "L3*",
            Layer::Device => "dev",
            Layer::Drop => "DROP",
        }
    }
}

/// What happened at a hop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HopKind {
    /// A frame enters the bridge through a port (from the container behind it).
    FromPort { port: String },
    /// The bridge forwards a frame towards a port.
    BridgeForward { port: String },
    /// The bridge sends a frame out of a port (to the container behind it).
    ToPort { port: String },
    /// A frame from another node enters the bridge through its VXLAN port, unwrapped from
    /// the UDP packet that carried it (an overlay network).
    ///
    /// `arp_proxy`: the device answers ARP itself (Docker's overlays): an ARP reply coming in
    /// through it was made here, not on another node.
    FromTunnel {
        port: String,
        vni: u32,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        arp_proxy: bool,
    },
    /// The bridge sends a frame to another node through its VXLAN port, to be wrapped in UDP
    /// to `udp_port` (where the recording knows it).
    ToTunnel {
        port: String,
        vni: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        udp_port: Option<u16>,
    },
    /// The node sends the VXLAN packet carrying the frame to another node, out of its own
    /// interface (seen there: outer addresses, UDP ports and VNI as sent).
    ToNode { interface: String, outer: Outer },
    /// A VXLAN packet from another node, carrying the frame, arrives at the node's own
    /// interface.
    FromNode { interface: String, outer: Outer },
    /// The bridge passes the frame up to the host's IP stack (L2 -> L3).
    PassedUp { bridge: String },
    /// The IP stack sends the packet into the bridge device (L3 -> L2).
    IntoBridge { bridge: String },
    /// br_netfilter hands a frame it DNATed back to the same bridge (hairpin: the new
    /// destination is behind another port), through a transmit on the bridge device; the bridge
    /// then forwards it. Not routed by the IP stack.
    HandedBack { bridge: String },
    /// A netfilter hook.
    Hook {
        family: Family,
        hook: Hook,
        priority: Option<i32>,
    },
    /// A device outside the bridge receives the packet; `host` tells the host's own devices
    /// from those inside a container's (or another) namespace.
    Receive { interface: String, host: bool },
    /// A device outside the bridge transmits the packet.
    Transmit { interface: String, host: bool },
    /// The packet is dropped. A `flood_copy` is one of the copies a bridge floods to every port
    /// while it does not know the destination MAC: dropped where it was not addressed to.
    ///
    /// `after_delivery`: an ICMP message the host's ICMP code frees for want of a ping socket
    /// (NO_SOCKET) after local input, when raw sockets (ping run as root) have already been
    /// handed their copies. Not the end of the packet's way.
    Dropped {
        reason: DropReason,
        interface: String,
        flood_copy: bool,
        after_delivery: bool,
    },
}

impl HopKind {
    /// The kind's name as JSON spells it ("from_port", "hook", ...).
    pub fn name(&self) -> &'static str {
        match self {
            HopKind::FromPort { .. } => "from_port",
            HopKind::BridgeForward { .. } => "bridge_forward",
            HopKind::ToPort { .. } => "to_port",
            HopKind::FromTunnel { .. } => "from_tunnel",
            HopKind::ToTunnel { .. } => "to_tunnel",
            HopKind::ToNode { .. } => "to_node",
            HopKind::FromNode { .. } => "from_node",
            HopKind::PassedUp { .. } => "passed_up",
            HopKind::IntoBridge { .. } => "into_bridge",
            HopKind::HandedBack { .. } => "handed_back",
            HopKind::Hook { .. } => "hook",
            HopKind::Receive { .. } => "receive",
            HopKind::Transmit { .. } => "transmit",
            HopKind::Dropped { .. } => "dropped",
        }
    }

    /// The interface (or hook) the hop is about, for grouping and display.
    pub fn place(&self) -> String {
        match self {
            HopKind::FromPort { port }
            | HopKind::BridgeForward { port }
            | HopKind::ToPort { port }
            | HopKind::FromTunnel { port, .. }
            | HopKind::ToTunnel { port, .. } => port.clone(),
            HopKind::PassedUp { bridge }
            | HopKind::IntoBridge { bridge }
            | HopKind::HandedBack { bridge } => bridge.clone(),
            HopKind::Receive { interface, .. }
            | HopKind::Transmit { interface, .. }
            | HopKind::ToNode { interface, .. }
            | HopKind::FromNode { interface, .. } => interface.clone(),
            HopKind::Hook { family, hook, .. } => format!("{family} {hook}"),
            HopKind::Dropped { reason, .. } => reason.to_string(),
        }
    }

    /// Whether two hops are of one kind at one place (what [`HopKind::place`] would say for
    /// both), without building the strings.
    pub fn same_place(&self, other: &HopKind) -> bool {
        use HopKind::*;
        match (self, other) {
            (FromPort { port: a }, FromPort { port: b })
            | (BridgeForward { port: a }, BridgeForward { port: b })
            | (ToPort { port: a }, ToPort { port: b })
            | (FromTunnel { port: a, .. }, FromTunnel { port: b, .. })
            | (ToTunnel { port: a, .. }, ToTunnel { port: b, .. }) => a == b,
            (PassedUp { bridge: a }, PassedUp { bridge: b })
            | (IntoBridge { bridge: a }, IntoBridge { bridge: b })
            | (HandedBack { bridge: a }, HandedBack { bridge: b }) => a == b,
            (Receive { interface: a, .. }, Receive { interface: b, .. })
            | (Transmit { interface: a, .. }, Transmit { interface: b, .. })
            | (ToNode { interface: a, .. }, ToNode { interface: b, .. })
            | (FromNode { interface: a, .. }, FromNode { interface: b, .. }) => a == b,
            (
                Hook {
                    family: fa,
                    hook: ha,
                    ..
                },
                Hook {
                    family: fb,
                    hook: hb,
                    ..
                },
            ) => fa == fb && ha == hb,
            (Dropped { reason: a, .. }, Dropped { reason: b, .. }) => a == b,
            _ => false,
        }
    }

    /// Short words for the hop, e.g. "bridge passes it up to the IP stack".
    pub fn words(&self) -> &'static str {
        match self {
            HopKind::FromPort { .. } => "frame enters the bridge port",
            HopKind::BridgeForward { .. } => "bridge forwards the frame",
            HopKind::ToPort { .. } => "bridge sends the frame out of the port",
            HopKind::FromTunnel { .. } => "frame from another node enters the bridge (VXLAN)",
            HopKind::ToTunnel { .. } => "bridge sends the frame to another node (VXLAN)",
            HopKind::ToNode { .. } => "VXLAN packet leaves for another node",
            HopKind::FromNode { .. } => "VXLAN packet arrives from another node",
            HopKind::PassedUp { .. } => "bridge passes the frame up to the IP stack",
            HopKind::IntoBridge { .. } => "IP stack sends the packet into the bridge",
            HopKind::HandedBack { .. } => "br_netfilter hands the DNATed frame back to the bridge",
            HopKind::Hook { .. } => "netfilter hook",
            HopKind::Receive { .. } => "device receives",
            HopKind::Transmit { .. } => "device transmits",
            HopKind::Dropped {
                flood_copy: true, ..
            } => "a flooded copy, not addressed here",
            HopKind::Dropped {
                after_delivery: true,
                ..
            } => "freed after delivery to raw sockets",
            HopKind::Dropped { .. } => "dropped",
        }
    }
}

/// Which half of a proxied exchange a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LegRole {
    /// From the client to the proxy's listening socket.
    Front,
    /// From the proxy to the container.
    Back,
}

/// A connection's place in a proxied exchange, on each of its packets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyLeg {
    pub leg: LegRole,
    /// The docker-proxy process.
    pub pid: u32,
    /// Where it listens: "0.0.0.0:18080".
    pub listen: String,
    /// Where it relays to: "10.213.5.10:5353", and the container there.
    pub relays_to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The exchange: its front leg's connection (None for a back leg whose front leg was not
    /// seen: a client outside what is followed, or one from before the trace began).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u64>,
}
