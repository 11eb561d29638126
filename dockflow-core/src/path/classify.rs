//! What each hop means for the packet's path: which layer handled it (the bridge at L2, the IP
//! stack at L3, or an IP hook that br_netfilter runs while the frame is still being bridged),
//! and what happened there, in words.

use super::hop::{Hop, HopKind, Layer};
use crate::model::{
    DropReason, Event, Family, Hook, IpProto, ProbePoint,
    topology::{Place, Topology},
};

/// Classifies one event against the host's topology.
pub fn classify(event: &Event, topology: &Topology) -> (Layer, HopKind) {
    let place = topology.place(event.netns, event.ifindex);
    let name = topology.name(event.netns, event.ifindex);
    let port = || topology.port_label(event.netns, event.ifindex);
    match event.probe {
        ProbePoint::KfreeSkb => {
            let reason = event
                .drop
                .as_ref()
                .map_or(DropReason::NotSpecified, |d| d.reason.clone());
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
        ProbePoint::BrHandleFrame => match place {
            Place::TunnelPort { vni, arp_proxy, .. } => from_tunnel(name, vni, arp_proxy),
            _ => (Layer::L2, HopKind::FromPort { port: port() }),
        },
        ProbePoint::BrForward => (Layer::L2, HopKind::BridgeForward { port: port() }),
        // skb->dev is still the port the frame came in by: the bridge is its master.
        ProbePoint::BrPassFrameUp => {
            let bridge = match place {
                Place::BridgePort { bridge } | Place::TunnelPort { bridge, .. } => {
                    topology.name(event.netns, bridge)
                }
                _ => name,
            };
            (Layer::L2, HopKind::PassedUp { bridge })
        }
        ProbePoint::BrDevXmit => (Layer::L3, HopKind::IntoBridge { bridge: name }),
        ProbePoint::TunnelIngress | ProbePoint::TunnelEgress => {
            let Some(outer) = event.outer.as_deref().copied() else {
                return (
                    Layer::Device,
                    HopKind::Receive {
                        interface: name,
                        host: true,
                    },
                );
            };
            let kind = if event.probe == ProbePoint::TunnelEgress {
                HopKind::ToNode {
                    interface: name,
                    outer,
                }
            } else {
                HopKind::FromNode {
                    interface: name,
                    outer,
                }
            };
            (Layer::Device, kind)
        }
        ProbePoint::TcIngress | ProbePoint::NetifReceive => match place {
            Place::BridgePort { .. } => (Layer::L2, HopKind::FromPort { port: port() }),
            Place::TunnelPort { vni, arp_proxy, .. } => from_tunnel(name, vni, arp_proxy),
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
            Place::TunnelPort { vni, udp_port, .. } => (
                Layer::L2,
                HopKind::ToTunnel {
                    port: name,
                    vni,
                    udp_port,
                },
            ),
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

/// A frame from another node entering the bridge through its VXLAN port `port`.
fn from_tunnel(port: String, vni: u32, arp_proxy: bool) -> (Layer, HopKind) {
    (
        Layer::L2,
        HopKind::FromTunnel {
            port,
            vni,
            arp_proxy,
        },
    )
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
            .is_some_and(|p| p.protocol == IpProto::ICMP || p.protocol == IpProto::ICMPV6);
        if let HopKind::Dropped {
            reason,
            after_delivery,
            ..
        } = &mut hops[i].kind
        {
            *after_delivery = delivered && icmp && *reason == DropReason::NoSocket;
        }
    }
    if !flooded_ports(hops).is_empty() {
        for hop in hops.iter_mut() {
            if let HopKind::Dropped {
                reason, flood_copy, ..
            } = &mut hop.kind
            {
                *flood_copy = *reason == DropReason::OtherHost;
            }
        }
    }
}

/// The ports a flooded frame was sent out of (empty when it was not flooded): more than one
/// port of one bridge in one pass through it. A packet that crosses several bridges (routed
/// from one into the next, or through another namespace) leaves each by its own port.
pub fn flooded_ports(hops: &[Hop]) -> Vec<&str> {
    let mut ports: Vec<&str> = Vec::new();
    let mut bridge_netns = None;
    for hop in hops {
        let left_the_bridge = matches!(hop.layer, Layer::L3 | Layer::Device);
        match &hop.kind {
            HopKind::ToPort { port } => {
                if bridge_netns.is_some_and(|ns| ns != hop.event.netns) {
                    if ports.len() > 1 {
                        return ports;
                    }
                    ports.clear();
                }
                bridge_netns = Some(hop.event.netns);
                if !ports.contains(&port.as_str()) {
                    ports.push(port);
                }
            }
            _ if left_the_bridge && !ports.is_empty() => {
                if ports.len() > 1 {
                    return ports;
                }
                ports.clear();
                bridge_netns = None;
            }
            _ => {}
        }
    }
    if ports.len() > 1 { ports } else { Vec::new() }
}
