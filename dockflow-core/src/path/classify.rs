//! What each hop means for the packet's path: which layer handled it (the bridge at L2, the IP
//! stack at L3, or an IP hook that br_netfilter runs while the frame is still being bridged),
//! and what happened there, in words.

use dockflow_common::{IPPROTO_ICMP, IPPROTO_ICMPV6};
use serde::Serialize;

use super::hop::Hop;
use crate::model::{
    Event, Family, Hook, ProbePoint,
    topology::{Place, Topology},
};

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
        reason: String,
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
            | HopKind::ToPort { port } => port.clone(),
            HopKind::PassedUp { bridge }
            | HopKind::IntoBridge { bridge }
            | HopKind::HandedBack { bridge } => bridge.clone(),
            HopKind::Receive { interface, .. } | HopKind::Transmit { interface, .. } => {
                interface.clone()
            }
            HopKind::Hook { family, hook, .. } => format!("{family} {hook}"),
            HopKind::Dropped { reason, .. } => reason.clone(),
        }
    }

    /// Whether two hops are of one kind at one place (what [`HopKind::place`] would say for
    /// both), without building the strings.
    pub fn same_place(&self, other: &HopKind) -> bool {
        use HopKind::*;
        match (self, other) {
            (FromPort { port: a }, FromPort { port: b })
            | (BridgeForward { port: a }, BridgeForward { port: b })
            | (ToPort { port: a }, ToPort { port: b }) => a == b,
            (PassedUp { bridge: a }, PassedUp { bridge: b })
            | (IntoBridge { bridge: a }, IntoBridge { bridge: b })
            | (HandedBack { bridge: a }, HandedBack { bridge: b }) => a == b,
            (Receive { interface: a, .. }, Receive { interface: b, .. })
            | (Transmit { interface: a, .. }, Transmit { interface: b, .. }) => a == b,
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

/// Classifies one event against the host's topology.
pub fn classify(event: &Event, topology: &Topology) -> (Layer, HopKind) {
    let place = topology.place(event.netns, event.ifindex);
    let name = topology.name(event.netns, event.ifindex);
    let port = || topology.port_label(event.ifindex);
    match event.probe {
        ProbePoint::KfreeSkb => {
            let reason = event
                .drop
                .as_ref()
                .map_or("unknown".to_string(), |d| d.reason.clone());
            let interface = name;
            (
                Layer::Drop,
                HopKind::Dropped {
                    reason,
                    interface,
                    flood_copy: false,
                    after_delivery: false,
                },
            )
        }
        ProbePoint::Netfilter | ProbePoint::NfHookSlow => {
            let Some(nf) = &event.netfilter else {
                return (
                    Layer::L3,
                    HopKind::Hook {
                        family: Family::Unknown,
                        hook: Hook::Unknown,
                        priority: None,
                    },
                );
            };
            // nf_hook_slow also sees the hooks a container's own stack runs in its namespace:
            // part of the packet's journey, not of the host's L2/L3 path.
            let layer = if place == Place::Elsewhere {
                Layer::Device
            } else if nf.family == Family::Bridge {
                Layer::L2
            } else if nf.from_bridge {
                Layer::L3FromBridge
            } else {
                Layer::L3
            };
            (
                layer,
                HopKind::Hook {
                    family: nf.family,
                    hook: nf.hook,
                    priority: nf.priority,
                },
            )
        }
        ProbePoint::BrHandleFrame => (Layer::L2, HopKind::FromPort { port: port() }),
        ProbePoint::BrForward => (Layer::L2, HopKind::BridgeForward { port: port() }),
        ProbePoint::BrPassFrameUp => (Layer::L2, HopKind::PassedUp { bridge: name }),
        ProbePoint::BrDevXmit => (Layer::L3, HopKind::IntoBridge { bridge: name }),
        ProbePoint::TcIngress | ProbePoint::NetifReceive => match place {
            Place::BridgePort { .. } => (Layer::L2, HopKind::FromPort { port: port() }),
            // A bridge device "receives" exactly the frames the bridge passes up.
            Place::Bridge => (Layer::L2, HopKind::PassedUp { bridge: name }),
            Place::Host | Place::Elsewhere => (
                Layer::Device,
                HopKind::Receive {
                    interface: name,
                    host: place == Place::Host,
                },
            ),
        },
        ProbePoint::TcEgress | ProbePoint::NetDevQueue => match place {
            Place::BridgePort { .. } => (Layer::L2, HopKind::ToPort { port: port() }),
            Place::Bridge => (Layer::L3, HopKind::IntoBridge { bridge: name }),
            Place::Host | Place::Elsewhere => (
                Layer::Device,
                HopKind::Transmit {
                    interface: name,
                    host: place == Place::Host,
                },
            ),
        },
    }
}

/// What only the whole path shows, applied to hops classified one by one: a bridge transmit
/// right after br_netfilter's prerouting, with no routed hop between, is the frame handed back
/// to the bridge after a hairpin DNAT; OTHERHOST drops of a frame sent out of more than one
/// port are copies of a flood.
pub fn refine(hops: &mut [Hop]) {
    for i in 1..hops.len() {
        let HopKind::IntoBridge { bridge } = &hops[i].kind else {
            continue;
        };
        let previous_hook = hops[..i].iter().rev().find(|h| h.layer != Layer::Device);
        // The previous hop may be the same transmit seen by the other probe (tc, tracepoint).
        let after_bridge_dnat = |h: &Hop| match h.kind {
            HopKind::Hook {
                hook: Hook::Prerouting,
                ..
            } => h.layer == Layer::L3FromBridge,
            HopKind::HandedBack { .. } => true,
            _ => false,
        };
        if previous_hook.is_some_and(after_bridge_dnat) {
            hops[i].kind = HopKind::HandedBack {
                bridge: bridge.clone(),
            };
            hops[i].layer = Layer::L2;
        }
    }
    for i in 1..hops.len() {
        let delivered = hops[..i].iter().any(|h| {
            h.layer == Layer::L3
                && matches!(
                    h.kind,
                    HopKind::Hook {
                        hook: Hook::Input,
                        ..
                    }
                )
        });
        let icmp = hops[i]
            .event
            .packet
            .as_ref()
            .is_some_and(|p| p.protocol == IPPROTO_ICMP || p.protocol == IPPROTO_ICMPV6);
        if let HopKind::Dropped {
            reason,
            after_delivery,
            ..
        } = &mut hops[i].kind
        {
            *after_delivery = delivered && icmp && reason == "NO_SOCKET";
        }
    }
    if !flooded_ports(hops).is_empty() {
        for hop in hops.iter_mut() {
            if let HopKind::Dropped {
                reason, flood_copy, ..
            } = &mut hop.kind
            {
                *flood_copy = reason == "OTHERHOST";
            }
        }
    }
}

/// The ports a flooded frame was sent out of (empty when it was not flooded).
pub fn flooded_ports(hops: &[Hop]) -> Vec<&str> {
    let mut ports: Vec<&str> = Vec::new();
    for hop in hops {
        if let HopKind::ToPort { port } = &hop.kind
            && !ports.contains(&port.as_str())
        {
            ports.push(port);
        }
    }
    if ports.len() > 1 { ports } else { Vec::new() }
}
