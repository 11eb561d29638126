//! From a packet's path to the facts it shows, in the order the packet met them.

use super::{
    super::{
        classify::flooded_ports,
        docker::DockerDrop,
        hop::{Hop, HopKind, Layer, LegRole, PacketPath, Rewrite, RewriteField},
        rules::RuleRef,
    },
    facts::{
        Answerer, ArpDelivery, Fact, HookRef, NatKind, Origin, Outcome, ROUTING_MESH_NAMESPACE,
        Role,
    },
};
use crate::model::{ArpOp, CtState, Hook, RuleTrace, TraceKind, Verdict, endpoint};

/// A gratuitous ARP, which expects no answer.
pub(super) fn is_announcement(path: &PacketPath) -> bool {
    path.packet.arp.is_some() && path.packet.src == path.packet.dst
}

/// What dockerd's userland proxy has to do with the request's connection, if anything.
pub(super) fn proxy_fact(request: &PacketPath) -> Option<Fact> {
    let proxy = request.proxy.clone()?;
    let role = Role::Request;
    Some(match proxy.leg {
        LegRole::Front => Fact::ProxyAccepts { role, proxy },
        LegRole::Back => Fact::ProxyOpens { role, proxy },
    })
}

/// The hop's netfilter hook, if it is one.
fn hook_of(hop: &Hop) -> Option<HookRef> {
    match hop.kind {
        HopKind::Hook { family, hook, .. } => Some(HookRef { family, hook }),
        _ => None,
    }
}

/// The distinct hooks of some hops, in order.
fn hooks_in<'a>(hops: impl IntoIterator<Item = &'a Hop>) -> Vec<HookRef> {
    let mut out: Vec<HookRef> = Vec::new();
    for hook in hops.into_iter().filter_map(hook_of) {
        if !out.contains(&hook) {
            out.push(hook);
        }
    }
    out
}

fn is_hook_in(hop: &Hop, layer: Layer, hook: Hook) -> bool {
    hop.layer == layer && hook_of(hop).is_some_and(|h| h.hook == hook)
}

/// The facts of one packet's path, in the order it met them.
pub(super) fn narrate(path: &PacketPath, role: Role) -> Vec<Fact> {
    let mut facts = narrate_path(path, role);
    if path.incomplete {
        facts.push(Fact::Incomplete { role });
    }
    facts
}

fn narrate_path(path: &PacketPath, role: Role) -> Vec<Fact> {
    if let Some(op) = path.packet.arp {
        return narrate_arp(path, role, op);
    }
    let hops = &path.hops;
    let rule_at = path.rule_at.as_slice();
    let mut facts = vec![start(path, role)];
    let flood = flooded_ports(hops);
    let mut bridge_hooks_told: Vec<HookRef> = Vec::new();
    let mut i = 0;
    while i < hops.len() {
        let hop = &hops[i];
        // A run: consecutive hooks of one layer, told as one step.
        let end = if hook_of(hop).is_some() && hop.layer != Layer::Device {
            i + hops[i..]
                .iter()
                .take_while(|h| h.layer == hop.layer && hook_of(h).is_some())
                .count()
        } else {
            i + 1
        };
        let run = &hops[i..end];
        // Two probes at one place (tc and the device tracepoint on a port) are one step.
        let repeated = i > 0 && hops[i - 1].kind == hop.kind;
        match (&hop.kind, hop.layer) {
            _ if repeated => {}
            (HopKind::Hook { .. }, Layer::L3FromBridge) => {
                // A flooded frame runs the same hooks once per port: say them once.
                let hooks: Vec<HookRef> = hooks_in(run)
                    .into_iter()
                    .filter(|h| !bridge_hooks_told.contains(h))
                    .collect();
                if !hooks.is_empty() {
                    bridge_hooks_told.extend(&hooks);
                    facts.push(Fact::BridgeRunsIpHooks { role, hooks });
                }
                let nat = nat_facts(run, role);
                let dnat = nat.iter().any(|f| {
                    matches!(
                        f,
                        Fact::Nat {
                            nat: NatKind::Dnat,
                            ..
                        }
                    )
                });
                facts.extend(nat);
                // A hairpin DNAT the bridge carries on with, with no transmit to show it.
                let next = hops[end..].iter().find(|h| h.layer != Layer::Device);
                if dnat
                    && next.is_some_and(|h| {
                        !matches!(
                            h.kind,
                            HopKind::PassedUp { .. } | HopKind::HandedBack { .. }
                        )
                    })
                {
                    facts.push(Fact::HandedBack { role, bridge: None });
                }
            }
            (HopKind::Hook { .. }, Layer::L3) => {
                facts.push(Fact::IpStackRunsHooks {
                    role,
                    hooks: hooks_in(run),
                });
                facts.extend(nat_facts(run, role));
            }
            (HopKind::ToNode { interface, outer }, _) => facts.push(Fact::ToNode {
                role,
                interface: interface.clone(),
                outer: *outer,
            }),
            // Told even as the first hop: the start says only where it came from.
            (HopKind::FromNode { interface, outer }, _) => facts.push(Fact::FromNode {
                role,
                interface: interface.clone(),
                outer: *outer,
            }),
            _ if i == 0 => {} // told by the start
            (HopKind::FromPort { port }, _) => facts.push(Fact::EntersBridge {
                role,
                port: port.clone(),
            }),
            (HopKind::FromTunnel { port, vni, .. }, _) => facts.push(Fact::FromTunnel {
                role,
                port: port.clone(),
                vni: *vni,
                unwrapped: matches!(hops[i - 1].kind, HopKind::FromNode { .. }),
            }),
            (
                HopKind::ToTunnel {
                    port,
                    vni,
                    udp_port,
                },
                _,
            ) => facts.push(Fact::ToTunnel {
                role,
                port: port.clone(),
                vni: *vni,
                udp_port: *udp_port,
            }),
            // Seen by the port's probe and by the bridge's, with the bridge's input hook
            // between: told once.
            (HopKind::PassedUp { bridge }, _) => {
                let fact = Fact::PassedUp {
                    role,
                    bridge: bridge.clone(),
                };
                if !facts.contains(&fact) {
                    facts.push(fact);
                }
            }
            (HopKind::IntoBridge { bridge }, _) => facts.push(Fact::RoutedIntoBridge {
                role,
                bridge: bridge.clone(),
            }),
            (HopKind::HandedBack { bridge }, _) => facts.push(Fact::HandedBack {
                role,
                bridge: Some(bridge.clone()),
            }),
            (HopKind::ToPort { port }, _) if flood.is_empty() => facts.push(Fact::ToPort {
                role,
                port: port.clone(),
            }),
            (HopKind::ToPort { port }, _) if flood.first() == Some(&port.as_str()) => {
                facts.push(Fact::Flooded {
                    role,
                    ports: flood.iter().map(|p| p.to_string()).collect(),
                    copies_dropped: hops
                        .iter()
                        .filter(|h| {
                            matches!(
                                h.kind,
                                HopKind::Dropped {
                                    flood_copy: true,
                                    ..
                                }
                            )
                        })
                        .count(),
                })
            }
            (
                HopKind::Receive {
                    interface,
                    host: false,
                },
                _,
            ) => facts.push(Fact::ReachesNamespace {
                role,
                interface: interface.clone(),
            }),
            (
                HopKind::Transmit {
                    interface,
                    host: true,
                },
                _,
            ) => facts.push(Fact::LeavesHost {
                role,
                interface: interface.clone(),
            }),
            (
                HopKind::Dropped {
                    reason,
                    after_delivery: true,
                    ..
                },
                _,
            ) => facts.push(Fact::FreedAfterDelivery {
                role,
                reason: reason.clone(),
            }),
            (
                HopKind::Dropped {
                    reason,
                    flood_copy: false,
                    ..
                },
                _,
            ) => {
                let rule = path
                    .rules
                    .iter()
                    .find(|r| r.verdict == Verdict::Drop)
                    .map(RuleRef::of);
                let docker = rule.as_ref().and_then(|r| DockerDrop::of(r, path));
                facts.push(Fact::Dropped {
                    role,
                    reason: reason.clone(),
                    rule,
                    after: hops[..i].iter().rev().find_map(hook_of),
                });
                facts.extend(docker.map(|why| Fact::DockerRule {
                    role,
                    why,
                    container: path.ends.dst.clone(),
                }));
            }
            _ => {}
        }
        facts.extend(accepted_in(path, rule_at, i..end, role, &facts));
        // The last of a run of hops inside one other namespace: what happened to it there.
        let in_namespace = |h: &Hop| h.layer == Layer::Device && h.event.netns == hop.event.netns;
        if hop.layer == Layer::Device && !hops.get(end).is_some_and(in_namespace) {
            let start = i - hops[..i]
                .iter()
                .rev()
                .take_while(|h| in_namespace(h))
                .count();
            facts.extend(nat_in_namespace(path, &hops[start..end], role));
        }
        i = end;
    }
    // Rules whose hook no probe saw (a packet known only from the trace).
    facts.extend(accepted_in(
        path,
        rule_at,
        usize::MAX..usize::MAX,
        role,
        &facts,
    ));
    let balanced = facts.iter().any(|f| {
        matches!(f, Fact::NatInNamespace { namespace, role: Role::Request, .. }
            if namespace == ROUTING_MESH_NAMESPACE)
    });
    facts.extend(outcome(path, role, balanced));
    facts
}

/// ARP never meets an IP hook, NAT or conntrack: its story is who asked, where the bridge
/// sent the frame, and who answered.
fn narrate_arp(path: &PacketPath, role: Role, op: ArpOp) -> Vec<Fact> {
    let p = &path.packet;
    let (sender, target) = (p.src.to_string(), p.dst.to_string());
    let mut ports: Vec<String> = Vec::new();
    for hop in &path.hops {
        if let HopKind::ToPort { port } = &hop.kind
            && !ports.contains(port)
        {
            ports.push(port.clone());
        }
    }
    let entered = path.hops.iter().find_map(|h| match &h.kind {
        HopKind::FromPort { port } => Some(port),
        _ => None,
    });
    let mut facts = vec![start(path, role)];
    let passed_up = path.hops.iter().find_map(|h| match &h.kind {
        HopKind::PassedUp { bridge } => Some(bridge.clone()),
        _ => None,
    });
    // A broadcast reaches every port and the host; with more than one port, or the host and a
    // port (Docker's hairpin mode returns it to the asker's port), it was one.
    let delivery = match (ports.len(), passed_up.is_some()) {
        (n, true) if n > 0 => ArpDelivery::Broadcast,
        (n, _) if n > 1 => ArpDelivery::Broadcast,
        (1, false) if entered.is_none() => ArpDelivery::OnePort,
        _ => ArpDelivery::Unicast,
    };
    facts.push(match op {
        // Asking for one's own address: an announcement, whichever opcode carries it.
        _ if sender == target => Fact::ArpAnnounced {
            role,
            address: sender,
            ports,
            passed_up,
        },
        ArpOp::Request => Fact::ArpAsked {
            role,
            delivery,
            sender,
            target,
            back_to_asker: entered.is_some_and(|p| ports.contains(p)),
            ports,
            passed_up,
        },
        ArpOp::Reply => {
            let first = path.hops.first().map(|h| &h.kind);
            let (answered_by, place) = match first {
                Some(HopKind::IntoBridge { bridge }) => (Answerer::Host, bridge.clone()),
                Some(HopKind::FromPort { port }) => (Answerer::Container, port.clone()),
                Some(HopKind::FromTunnel {
                    port,
                    arp_proxy: true,
                    ..
                }) => (Answerer::TunnelProxy, port.clone()),
                Some(HopKind::Transmit {
                    interface,
                    host: false,
                }) => (Answerer::Container, interface.clone()),
                other => (
                    Answerer::Unknown,
                    other.map(HopKind::place).unwrap_or_default(),
                ),
            };
            Fact::ArpAnswered {
                role,
                sender,
                target,
                answered_by,
                place,
                ports,
                passed_up,
            }
        }
    });
    facts.extend(path.hops.iter().find_map(|h| match &h.kind {
        HopKind::Receive {
            interface,
            host: false,
        } if op == ArpOp::Reply => Some(Fact::ReachesNamespace {
            role,
            interface: interface.clone(),
        }),
        _ => None,
    }));
    facts
}

/// Accept verdicts of rules placed at hops `range` (an empty range past the end: rules placed
/// nowhere), each rule once.
fn accepted_in(
    path: &PacketPath,
    rule_at: &[Option<usize>],
    range: std::ops::Range<usize>,
    role: Role,
    told: &[Fact],
) -> Vec<Fact> {
    let mut out: Vec<Fact> = Vec::new();
    for (rule, at) in path.rules.iter().zip(rule_at) {
        let here = match at {
            Some(at) => range.contains(at),
            None => range.start == usize::MAX,
        };
        if !here || rule.verdict != Verdict::Accept || rule.kind != TraceKind::Rule {
            continue;
        }
        let fact = Fact::Accepted {
            role,
            rule: RuleRef::of(rule),
        };
        if !told.contains(&fact) && !out.contains(&fact) {
            out.push(fact);
        }
    }
    out
}

fn start(path: &PacketPath, role: Role) -> Fact {
    let p = &path.packet;
    let packet = format!(
        "{} {} -> {}",
        p.protocol_name(),
        endpoint(p.src, p.sport),
        endpoint(p.dst, p.dport)
    );
    let Some(first) = path.hops.first() else {
        return Fact::Start {
            role,
            packet,
            origin: Origin::TraceOnly,
            place: String::new(),
        };
    };
    let (origin, place) = match &first.kind {
        HopKind::FromPort { port } => (Origin::BridgePort, port.clone()),
        // An ARP answer the device made itself did not come from another node.
        HopKind::FromTunnel {
            arp_proxy: true, ..
        } if path.packet.arp.is_some() => (Origin::Midway, first.kind.place()),
        HopKind::FromTunnel { port, .. } => (Origin::Tunnel, port.clone()),
        HopKind::FromNode { interface, .. } => (Origin::OtherNode, interface.clone()),
        HopKind::Transmit {
            interface,
            host: false,
        } => (Origin::Container, interface.clone()),
        HopKind::Receive {
            interface,
            host: true,
        } => (Origin::HostInterface, interface.clone()),
        HopKind::Hook {
            hook: Hook::Output, ..
        } if first.layer == Layer::L3 => (Origin::HostProcess, first.kind.place()),
        // A container's own output hook, before it sends the packet out of its interface.
        HopKind::Hook {
            hook: Hook::Output, ..
        } if first.layer == Layer::Device => {
            let sent_from = path.hops.iter().find_map(|h| match &h.kind {
                HopKind::Transmit {
                    interface,
                    host: false,
                } => Some(interface.clone()),
                _ => None,
            });
            match sent_from {
                Some(interface) => (Origin::Container, interface),
                None => (Origin::Midway, first.kind.place()),
            }
        }
        HopKind::IntoBridge { bridge } => (Origin::HostIntoBridge, bridge.clone()),
        other => (Origin::Midway, other.place()),
    };
    Fact::Start {
        role,
        packet,
        origin,
        place,
    }
}

/// The rewrites in a run of hops inside another namespace (the device hops and hooks there,
/// from where it arrived to where it left), told as one step.
fn nat_in_namespace(path: &PacketPath, run: &[Hop], role: Role) -> Option<Fact> {
    let namespace = run.iter().find_map(|h| match &h.kind {
        HopKind::Receive {
            interface,
            host: false,
        }
        | HopKind::Transmit {
            interface,
            host: false,
        } => interface.rsplit_once(':').map(|(ns, _)| ns.to_string()),
        _ => None,
    })?;
    let rewrites: Vec<Rewrite> = run.iter().flat_map(|h| h.rewrites.clone()).collect();
    if rewrites.is_empty() {
        return None;
    }
    let new_destination = rewrites
        .iter()
        .any(|r| r.field == RewriteField::Destination);
    Some(Fact::NatInNamespace {
        role,
        namespace,
        rewrites,
        backend: path
            .ends
            .dst
            .clone()
            .filter(|_| new_destination && role == Role::Request),
    })
}

/// Facts for the NAT rewrites in a run of hooks.
fn nat_facts(run: &[Hop], role: Role) -> Vec<Fact> {
    let mut out = Vec::new();
    for (i, hop) in run.iter().enumerate() {
        let Some(at) = hook_of(hop) else { continue };
        let HopKind::Hook { priority, .. } = hop.kind else {
            continue;
        };
        let before = run[..i].iter().rev().find_map(|h| match h.kind {
            HopKind::Hook {
                priority: Some(p), ..
            } => Some(p),
            _ => None,
        });
        let ct = hop.event.conntrack.as_ref();
        let new_connection = ct.is_some_and(|c| c.state == CtState::New);
        for rewrite in &hop.rewrites {
            let nat = match (rewrite.field, new_connection, role) {
                (RewriteField::Destination, true, _) => NatKind::Dnat,
                (RewriteField::Source, true, _) => NatKind::Snat,
                (RewriteField::Source, false, Role::Reply)
                    if ct.is_some_and(|c| c.status.dst_nat()) =>
                {
                    NatKind::UndoDnat
                }
                (RewriteField::Destination, false, Role::Reply)
                    if ct.is_some_and(|c| c.status.src_nat()) =>
                {
                    NatKind::UndoSnat
                }
                _ => NatKind::Binding,
            };
            out.push(Fact::Nat {
                role,
                nat,
                field: rewrite.field,
                before: rewrite.before.clone(),
                after: rewrite.after.clone(),
                at,
                between: before.zip(priority),
                ct_state: ct.map(|c| c.state),
                ct_direction: ct.map(|c| c.direction),
            });
        }
    }
    out
}

/// What became of the packet, when the path shows it (a dropped packet has its drop instead).
/// `balanced`: the routing mesh sent the request on to a task.
fn outcome(path: &PacketPath, role: Role, balanced: bool) -> Option<Fact> {
    if path.dropped().is_some() || path.hops.is_empty() {
        return None;
    }
    let hops = &path.hops;
    let routed = hops.iter().any(|h| is_hook_in(h, Layer::L3, Hook::Forward));
    let local = hops.iter().any(|h| is_hook_in(h, Layer::L3, Hook::Input));
    let first_l3 = hops
        .iter()
        .find(|h| h.layer == Layer::L3 && hook_of(h).is_some());
    let sent_by_host = first_l3.is_some_and(|h| is_hook_in(h, Layer::L3, Hook::Output));
    let bridged_only = hops.iter().all(|h| h.layer != Layer::L3)
        && !hops
            .iter()
            .any(|h| matches!(h.kind, HopKind::PassedUp { .. }))
        && hops
            .iter()
            .any(|h| matches!(h.kind, HopKind::ToPort { .. }));
    let sent_to_other_node = hops
        .iter()
        .rev()
        .find(|h| h.layer == Layer::L2)
        .is_some_and(|h| matches!(h.kind, HopKind::ToTunnel { .. }));
    let to_other_node = hops.iter().all(|h| h.layer != Layer::L3) && sent_to_other_node;
    let outcome = if local {
        Outcome::DeliveredLocally
    } else if routed && balanced && sent_to_other_node {
        Outcome::BalancedToOtherNode
    } else if routed && balanced {
        Outcome::BalancedToTask
    } else if routed {
        Outcome::Routed
    } else if sent_by_host {
        Outcome::SentByHost
    } else if to_other_node {
        Outcome::ToOtherNode
    } else if bridged_only {
        Outcome::BridgedOnly
    } else {
        return None;
    };
    let last = hops
        .iter()
        .rev()
        .find_map(|h| h.event.packet.as_ref())
        .unwrap_or(&path.packet);
    Some(Fact::Outcome {
        role,
        outcome,
        destination: endpoint(last.dst, last.dport),
        bridge_hooks: if outcome == Outcome::BridgedOnly {
            hooks_in(hops.iter().filter(|h| h.layer == Layer::L3FromBridge))
        } else {
            Vec::new()
        },
    })
}

/// The path as a sequence of L2 (the bridge, br_netfilter's hooks included) and L3 stretches.
fn stretches(path: &PacketPath) -> Vec<Layer> {
    let mut out: Vec<Layer> = Vec::new();
    for hop in &path.hops {
        let layer = match hop.layer {
            Layer::L2 | Layer::L3FromBridge => Layer::L2,
            Layer::L3 => Layer::L3,
            Layer::Device | Layer::Drop => continue,
        };
        if out.last() != Some(&layer) {
            out.push(layer);
        }
    }
    out
}

/// "routed by the host, then bridged to the container", from the path's stretches.
fn journey_words(path: &PacketPath, stretches: &[Layer]) -> String {
    let hops = &path.hops;
    let words: Vec<&str> = stretches
        .iter()
        .enumerate()
        .map(|(i, layer)| match layer {
            Layer::L3 if hops.iter().any(|h| is_hook_in(h, Layer::L3, Hook::Forward)) => {
                "routed by the host"
            }
            Layer::L3 if hops.iter().any(|h| is_hook_in(h, Layer::L3, Hook::Input)) => {
                "delivered to the host"
            }
            Layer::L3 if hops.iter().any(|h| is_hook_in(h, Layer::L3, Hook::Output)) => {
                "sent by the host"
            }
            Layer::L3 => "handled by the host's IP stack",
            _ if stretches.len() == 1 => "bridged from port to port",
            _ if i == 0 => "bridged from the container up to the host",
            _ => "bridged to the container",
        })
        .collect();
    words.join(", then ")
}

/// How request and reply crossed between the bridge and the IP stack, when they differ.
pub(super) fn crossing(request: &PacketPath, reply: &PacketPath) -> Option<Fact> {
    if request.dropped().is_some() || reply.dropped().is_some() {
        return None;
    }
    let (there, back) = (stretches(request), stretches(reply));
    if there == back || there.len() < 2 && back.len() < 2 {
        return None;
    }
    Some(Fact::Crossing {
        request_words: journey_words(request, &there),
        reply_words: journey_words(reply, &back),
        request: there,
        reply: back,
    })
}

/// The reply was evaluated by nftables chains and none was nat, while the request was: the
/// reply's NAT came from conntrack.
pub(super) fn reply_sees_no_nat(request: &PacketPath, reply: &PacketPath) -> Option<Fact> {
    let nat = |r: &RuleTrace| r.table == "nat";
    if reply.rules.is_empty() || reply.rules.iter().any(nat) || !request.rules.iter().any(nat) {
        return None;
    }
    let mut chains: Vec<String> = Vec::new();
    for r in &reply.rules {
        let chain = format!("{} {} {}", r.family, r.table, r.chain);
        if !chains.contains(&chain) {
            chains.push(chain);
        }
    }
    Some(Fact::ReplySeesNoNat { chains })
}
