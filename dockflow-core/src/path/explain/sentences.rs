//! Each fact as one sentence.

use super::{
    super::{
        hop::{Layer, ProxyLeg, Rewrite, RewriteField},
        rules::RuleRef,
    },
    facts::{
        Answerer, ArpDelivery, Fact, HookRef, NatKind, Origin, Outcome, ROUTING_MESH_NAMESPACE,
        Role,
    },
};
use crate::model::{CtState, Family, priority_words};

/// "ledger (10.213.5.10:5353)", or the bare address.
fn proxy_target(proxy: &ProxyLeg) -> String {
    match &proxy.container {
        Some(name) => format!("{name} ({})", proxy.relays_to),
        None => proxy.relays_to.clone(),
    }
}

fn list<T: ToString>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(T::to_string).collect();
    match items.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn hooks_words(hooks: &[HookRef]) -> String {
    format!(
        "{} hook{}",
        list(hooks),
        if hooks.len() > 1 { "s" } else { "" }
    )
}

fn rule_words(r: &RuleRef) -> String {
    format!(
        "{} {} chain {}{}",
        r.family,
        r.table,
        r.chain,
        r.hook
            .map_or(String::new(), |h| format!(" at the {h} hook"))
    )
}

/// What a bridge passes frames up to: the host, or, for a bridge in a namespace of its own
/// (named "namespace:bridge": an interface's own name never holds a ':'), that namespace.
fn owner_above(bridge: &str) -> String {
    match bridge.split_once(':') {
        Some((namespace, _)) => format!("{namespace}'s namespace"),
        None => "the host".into(),
    }
}

/// The IP stack a bridge passes frames up to.
fn stack_above(bridge: &str) -> String {
    match bridge.split_once(':') {
        Some((namespace, _)) => format!("the IP stack of {namespace}'s namespace"),
        None => "the host's IP stack".into(),
    }
}

fn nat_in_namespace(
    role: Role,
    namespace: &str,
    rewrites: &[Rewrite],
    backend: Option<&str>,
) -> String {
    let changes: Vec<String> = rewrites
        .iter()
        .map(|r| {
            let end = match r.field {
                RewriteField::Source => "source",
                RewriteField::Destination => "destination",
            };
            format!("the {end} {} becomes {}", r.before, r.after)
        })
        .collect();
    let changes = list(&changes);
    let snat = rewrites.iter().any(|r| r.field == RewriteField::Source);
    match (namespace == ROUTING_MESH_NAMESPACE, role) {
        (true, Role::Request) => format!(
            "In {namespace}, the routing mesh's namespace, IPVS balances the connection to a task{}: {changes}{}.",
            backend.map_or(String::new(), |b| format!(" ({b})")),
            if snat {
                format!(
                    ", an address of {namespace}'s own, so that the reply comes back through {namespace}"
                )
            } else {
                String::new()
            }
        ),
        (true, Role::Reply) => {
            format!("In {namespace}, IPVS undoes its rewrites on the reply: {changes}.")
        }
        (false, _) => format!("Inside {namespace}'s namespace, NAT rewrites it: {changes}."),
    }
}

impl Fact {
    /// The fact as one sentence.
    pub fn sentence(&self) -> String {
        match self {
            Fact::Start {
                role,
                packet,
                origin,
                place,
            } => {
                let r = role.word();
                match origin {
                    Origin::Container => format!("The {r} ({packet}) is sent out of {place}."),
                    Origin::BridgePort => format!(
                        "The {r} ({packet}) leaves its container and enters the bridge through port {place} (L2)."
                    ),
                    Origin::HostInterface => format!("The {r} ({packet}) arrives on {place}."),
                    Origin::HostProcess => format!(
                        "The {r} ({packet}) is sent by a process on the host: it starts at the {place} hook (L3)."
                    ),
                    Origin::HostIntoBridge => {
                        format!("The {r} ({packet}) is sent by the host into bridge {place}.")
                    }
                    Origin::Tunnel => format!(
                        "The {r} ({packet}) comes from another node over VXLAN: unwrapped from the UDP packet that carried it, it enters the bridge through {place} (L2)."
                    ),
                    Origin::OtherNode => format!("The {r} ({packet}) comes from another node."),
                    Origin::Midway => format!("The {r} ({packet}) is first seen at {place}."),
                    Origin::TraceOnly => format!(
                        "The {r} ({packet}) is known only from nftables' trace: no probe saw it."
                    ),
                }
            }
            Fact::EntersBridge { port, .. } => format!(
                "It enters the bridge through port {port} (L2; the bridge's prerouting hook runs here)."
            ),
            Fact::BridgeRunsIpHooks { hooks, .. } => format!(
                "While the frame is still inside the bridge, br_netfilter runs the {} on it (bridge-nf-call-{}=1): IP rules see it although the bridge, not the IP stack, is handling it.",
                hooks_words(hooks),
                if hooks.iter().any(|h| h.family == Family::Ipv6) {
                    "ip6tables"
                } else {
                    "iptables"
                }
            ),
            Fact::IpStackRunsHooks { hooks, .. } => {
                format!("The IP stack (L3) runs the {}.", hooks_words(hooks))
            }
            Fact::Nat {
                nat,
                field,
                before,
                after,
                at,
                between,
                ct_state,
                ct_direction,
                ..
            } => {
                let what = match nat {
                    NatKind::Dnat => "DNAT: a nat rule rewrites the destination",
                    NatKind::Snat => "SNAT/masquerade: a nat rule rewrites the source",
                    NatKind::UndoDnat => {
                        "conntrack undoes the request's DNAT on the reply: it rewrites the source"
                    }
                    NatKind::UndoSnat => {
                        "conntrack undoes the request's SNAT on the reply: it rewrites the destination"
                    }
                    NatKind::Binding => match field {
                        RewriteField::Source => {
                            "conntrack applies the connection's NAT binding to the source"
                        }
                        RewriteField::Destination => {
                            "conntrack applies the connection's NAT binding to the destination"
                        }
                    },
                };
                let stage = between.map_or(String::new(), |(a, b)| {
                    format!(
                        " between priorities {} and {}",
                        priority_words(a),
                        priority_words(b)
                    )
                });
                let mut s = format!("{what} {before} -> {after} at {at}{stage}.");
                if let (Some(state), Some(direction)) = (ct_state, ct_direction)
                    && *state != CtState::New
                {
                    s.push_str(&format!(
                            " The packet belongs to a known connection (conntrack state {}, {} direction), and nat chains are only consulted for a connection's first packet, so no nat chain sees this one.",
                            state.word(),
                            direction.word()
                        ));
                }
                s
            }
            Fact::Accepted { rule, .. } => format!(
                "nftables: {} accepts it with the rule `{}`.",
                rule_words(rule),
                rule.rule.as_deref().unwrap_or("?")
            ),
            Fact::PassedUp { bridge, .. } => format!(
                "Bridge {bridge} passes the frame up to {} (L2 -> L3; the bridge's input hook runs here): the frame is addressed to the bridge's own MAC, the containers' gateway, so the bridge delivers it to {} instead of forwarding it to a port.",
                stack_above(bridge),
                owner_above(bridge)
            ),
            Fact::RoutedIntoBridge { bridge, .. } => format!(
                "The IP stack routes it out through {bridge}: it goes back into the bridge (L3 -> L2; the bridge's output and postrouting hooks run here)."
            ),
            Fact::HandedBack { bridge, .. } => format!(
                "After the DNAT its new destination is behind another port of the same bridge, so br_netfilter hands the frame straight back to the bridge{} and the bridge forwards it (L2; the bridge's forward hook, not output): the IP stack does not route it.",
                bridge.as_ref().map_or(String::new(), |b| format!(
                    " (a transmit on {b}, as the neighbour entry had no cached header yet)"
                ))
            ),
            Fact::Flooded {
                ports,
                copies_dropped,
                ..
            } => {
                let mut s = format!(
                    "The bridge does not know the destination MAC yet and floods the frame to every port ({}); the copies to other containers are dropped there, not addressed to them",
                    list(ports)
                );
                if *copies_dropped > 0 {
                    s.push_str(&format!(
                        " ({copies_dropped} such drop{} seen, OTHERHOST)",
                        if *copies_dropped > 1 { "s" } else { "" }
                    ));
                }
                s.push('.');
                s
            }
            Fact::ToPort { port, .. } => format!("The bridge sends it out of port {port} (L2)."),
            Fact::FromTunnel {
                port,
                vni,
                unwrapped: true,
                ..
            } => format!(
                "The kernel unwraps the frame (VNI {vni}) and it enters the bridge through {port} (L2)."
            ),
            Fact::FromTunnel { port, vni, .. } => format!(
                "It comes from another node over VXLAN (VNI {vni}) and enters the bridge through {port} (L2)."
            ),
            Fact::NatInNamespace {
                role,
                namespace,
                rewrites,
                backend,
            } => nat_in_namespace(*role, namespace, rewrites, backend.as_deref()),
            Fact::ToNode {
                interface, outer, ..
            } => format!(
                "The VXLAN packet carrying it leaves the node through {interface}: UDP {outer}."
            ),
            Fact::FromNode {
                interface, outer, ..
            } => format!("It arrives on {interface} inside a VXLAN packet: UDP {outer}."),
            Fact::ToTunnel {
                port,
                vni,
                udp_port,
                ..
            } => format!(
                "The bridge sends it to another node through {port} (L2): the kernel wraps the frame in a UDP packet to {} of the node the destination's MAC address was learned from (VXLAN, VNI {vni}).",
                vxlan_port_words(*udp_port)
            ),
            Fact::ReachesNamespace { interface, .. } => format!("It arrives on {interface}."),
            Fact::LeavesHost { interface, .. } => format!("It leaves the host on {interface}."),
            Fact::Dropped {
                reason,
                rule,
                after,
                ..
            } => match (rule, after) {
                (Some(r), _) => format!(
                    "It is dropped by nftables, {}, rule `{}` (kernel drop reason {reason}); it goes no further.",
                    rule_words(r),
                    r.rule.as_deref().unwrap_or("?")
                ),
                (None, Some(hook)) => {
                    format!("It is dropped ({reason}) after {hook}; it goes no further.")
                }
                (None, None) => format!("It is dropped ({reason}); it goes no further."),
            },
            Fact::Outcome {
                outcome,
                destination,
                bridge_hooks,
                ..
            } => match outcome {
                Outcome::Routed => format!(
                    "It is routed through the host (IP forward) and never delivered to a local socket, so no IP input hook sees it: after NAT its destination {destination} is not one of the host's addresses."
                ),
                Outcome::BalancedToTask => format!(
                    "It is routed through the host (IP forward) to {ROUTING_MESH_NAMESPACE}, never to a local socket of the host; IPVS there sends it on to {destination}, and that task's own IP stack takes it."
                ),
                Outcome::BalancedToOtherNode => format!(
                    "It is routed through the host (IP forward) to {ROUTING_MESH_NAMESPACE}, never to a local socket of the host; IPVS there sends it on to {destination}, a task on another node: the ingress overlay carries it there over VXLAN, and the rest of its way is on that node."
                ),
                Outcome::DeliveredLocally => format!(
                    "It is delivered to the host itself (IP input, destination {destination}): a local socket or the kernel's own protocol handling takes it; it is not forwarded."
                ),
                Outcome::SentByHost => format!(
                    "It starts on the host, so no IP prerouting, input or forward hook sees it: the host's output path takes it to {destination}."
                ),
                Outcome::BridgedOnly if bridge_hooks.is_empty() => format!(
                    "It never leaves the bridge: it is bridged at L2 only, to {destination}, and never routed."
                ),
                Outcome::BridgedOnly => format!(
                    "It never leaves the bridge: it is bridged at L2 only, to {destination}, and never routed. The IP hooks it crosses ({}) are run by br_netfilter from inside the bridge.",
                    list(bridge_hooks)
                ),
                Outcome::ToOtherNode => format!(
                    "It leaves this node inside VXLAN, bridged at L2 only: {destination} is on another node, and the rest of its way is there (dockflow on that node shows it)."
                ),
            },
            Fact::ArpAsked {
                sender,
                target,
                delivery: delivery @ (ArpDelivery::Unicast | ArpDelivery::OnePort),
                ports,
                passed_up,
                ..
            } => {
                let to = match (ports.is_empty(), passed_up) {
                    (true, Some(bridge)) => {
                        format!("passes it up to {} through {bridge}", owner_above(bridge))
                    }
                    _ => format!("sends it to {} only", list(ports)),
                };
                format!(
                    "ARP request: {sender} asks who has {target}, sent to the MAC it already has for it (Linux rechecks a stale neighbour entry by unicast{}). ARP is L2 only: no IP hook, NAT or conntrack takes part. The bridge {to}.",
                    if *delivery == ArpDelivery::OnePort {
                        "; or this bridge has no other port"
                    } else {
                        ""
                    }
                )
            }
            Fact::ArpAsked {
                sender,
                target,
                ports,
                back_to_asker,
                passed_up,
                ..
            } => {
                let mut s = format!(
                    "ARP request: {sender} asks who has {target}. ARP is L2 only: no IP hook, NAT or conntrack takes part. The question is a broadcast, so the bridge"
                );
                if !ports.is_empty() {
                    s.push_str(&format!(" sends it out of every port ({})", list(ports)));
                }
                match passed_up {
                    Some(bridge) if !ports.is_empty() => s.push_str(&format!(
                        " and passes it up to {} through {bridge}",
                        owner_above(bridge)
                    )),
                    Some(bridge) => s.push_str(&format!(
                        " passes it up to {} through {bridge}",
                        owner_above(bridge)
                    )),
                    None if ports.is_empty() => s.push_str(" handles it"),
                    None => {}
                }
                s.push('.');
                if *back_to_asker {
                    s.push_str(" The asker's own port gets a copy too: the port is in hairpin mode (Docker sets it when the userland proxy is off).");
                }
                s
            }
            Fact::ArpAnnounced {
                address,
                ports,
                passed_up,
                ..
            } => {
                let mut way = Vec::new();
                if !ports.is_empty() {
                    way.push(format!("out of every port ({})", list(ports)));
                }
                if let Some(bridge) = passed_up {
                    way.push(format!("up to {} through {bridge}", owner_above(bridge)));
                }
                let way = if way.is_empty() {
                    String::new()
                } else {
                    format!(" The bridge floods it {}.", way.join(" and "))
                };
                format!(
                    "Gratuitous ARP: the owner of {address} announces that {address} is at its MAC. It asks for its own address, so nobody answers; hosts and containers that hear it update their neighbour caches. Docker 28 and later send a few for every new endpoint, as container MACs are random now.{way}"
                )
            }
            Fact::ArpAnswered {
                sender,
                target,
                answered_by,
                place,
                ports,
                passed_up,
                ..
            } => {
                let who = match answered_by {
                    Answerer::Host => format!(
                        "the host answers: {sender} is its own address on bridge {place}, so it sends \"{sender} is at my MAC\" into the bridge"
                    ),
                    Answerer::Container => {
                        format!("the container answers from {place}: {sender} is at its MAC")
                    }
                    Answerer::TunnelProxy => format!(
                        "the VXLAN device {place} answers for {sender}, a task on another node, from its own neighbour table (proxy ARP: Docker fills it for every task of the overlay), so the question never leaves this node"
                    ),
                    Answerer::Unknown => format!("{sender} answers (first seen at {place})"),
                };
                let to = match (ports.is_empty(), passed_up) {
                    (false, _) => format!(
                        ", and the bridge delivers the answer to {} only (unicast, L2)",
                        list(ports)
                    ),
                    (true, Some(bridge)) => {
                        format!(
                            ", and the bridge passes the answer up to {} through {bridge} (unicast, L2)",
                            owner_above(bridge)
                        )
                    }
                    (true, None) => String::new(),
                };
                format!("ARP reply to {target}: {who}{to}.")
            }
            Fact::FreedAfterDelivery { reason, .. } => format!(
                "The host's ICMP code finds no ping socket for it and frees it ({reason}); raw sockets (a ping run as root) were handed their own copy just before, so that is not a loss."
            ),
            Fact::Incomplete { role } => format!(
                "Some events of the {} were lost (the kernel's ring buffer overflowed, or the display fell behind): the steps above may miss hops, so this account cannot be complete.",
                role.word()
            ),
            Fact::DockerRule { why, container, .. } => why.sentence(container.as_deref()),
            Fact::ProxyAccepts { proxy, .. } => format!(
                "The socket that takes it is docker-proxy's (pid {}), dockerd's userland proxy for {}: no nat rule sent it on to the container (Docker's rules leave out loopback destinations and traffic from the container's own bridge while the proxy is on), so the proxy accepts it on the host and relays it over a connection of its own to {}; the container sees the proxy's connection, not this one.",
                proxy.pid,
                proxy.listen,
                proxy_target(proxy)
            ),
            Fact::ProxyOpens { proxy, .. } => {
                let of = match proxy.group {
                    Some(front) => format!("to relay connection {front}, which it accepted"),
                    None => "to relay a connection it accepted (not seen by this trace)".into(),
                };
                format!(
                    "The process that sends it is docker-proxy (pid {}), dockerd's userland proxy for {}: it opens this connection {of}; together they are one exchange, and {} sees the proxy's address on the bridge as the client, not the original one.",
                    proxy.pid,
                    proxy.listen,
                    proxy_target(proxy)
                )
            }
            Fact::NoReply => "No reply was seen.".to_string(),
            Fact::CrossesNodes {
                from,
                to,
                from_address,
                to_address,
                vni,
                udp_port,
                outer,
                gap_ns,
                ..
            } => {
                if let Some(outer) = outer {
                    return format!(
                        "It crosses from node {from} to node {to} inside VXLAN: UDP {outer} carries the frame, seen leaving {from} and arriving at {to}; node {to} has it {:.3} ms later.",
                        *gap_ns as f64 / 1e6
                    );
                }
                let at = |node: &str, address: &Option<String>| match address {
                    Some(address) => format!("{node} ({address})"),
                    None => node.to_string(),
                };
                format!(
                    "It crosses from node {} to node {} inside VXLAN: a UDP packet to {} between the two nodes' addresses carries the frame, VNI {vni}; node {to} has it {:.3} ms later.",
                    at(from, from_address),
                    at(to, to_address),
                    vxlan_port_words(*udp_port),
                    *gap_ns as f64 / 1e6
                )
            }
            Fact::Crossing {
                request,
                reply,
                request_words,
                reply_words,
            } => {
                let arrows =
                    |l: &[Layer]| l.iter().map(|l| l.tag()).collect::<Vec<_>>().join(" -> ");
                let mut back = reply.clone();
                back.reverse();
                let other_way = if back == *request {
                    " the other way,"
                } else {
                    ""
                };
                format!(
                    "The request went {} ({request_words}); the reply went{other_way} {} ({reply_words}).",
                    arrows(request),
                    arrows(reply)
                )
            }
            Fact::ReplySeesNoNat { chains } => format!(
                "nftables' own trace saw the reply in {} and in no nat chain: nat chains are consulted only for a connection's first packet.",
                list(chains)
            ),
        }
    }
}

impl Fact {
    /// Whose fact this is: the request's, the reply's, or (None) the connection's.
    pub fn role(&self) -> Option<Role> {
        match self {
            Fact::Start { role, .. }
            | Fact::EntersBridge { role, .. }
            | Fact::BridgeRunsIpHooks { role, .. }
            | Fact::IpStackRunsHooks { role, .. }
            | Fact::Nat { role, .. }
            | Fact::Accepted { role, .. }
            | Fact::PassedUp { role, .. }
            | Fact::RoutedIntoBridge { role, .. }
            | Fact::HandedBack { role, .. }
            | Fact::Flooded { role, .. }
            | Fact::ToPort { role, .. }
            | Fact::FromTunnel { role, .. }
            | Fact::ToTunnel { role, .. }
            | Fact::ToNode { role, .. }
            | Fact::NatInNamespace { role, .. }
            | Fact::FromNode { role, .. }
            | Fact::ReachesNamespace { role, .. }
            | Fact::LeavesHost { role, .. }
            | Fact::Dropped { role, .. }
            | Fact::Outcome { role, .. }
            | Fact::FreedAfterDelivery { role, .. }
            | Fact::Incomplete { role }
            | Fact::CrossesNodes { role, .. }
            | Fact::ArpAsked { role, .. }
            | Fact::ArpAnswered { role, .. }
            | Fact::ArpAnnounced { role, .. }
            | Fact::DockerRule { role, .. }
            | Fact::ProxyAccepts { role, .. }
            | Fact::ProxyOpens { role, .. } => Some(*role),
            Fact::NoReply | Fact::Crossing { .. } | Fact::ReplySeesNoNat { .. } => None,
        }
    }
}

/// "port 4789", or, from a recording that did not keep it, "the overlay's VXLAN port".
pub fn vxlan_port_words(udp_port: Option<u16>) -> String {
    match udp_port {
        Some(port) => format!("port {port}"),
        None => "the overlay's VXLAN port".to_string(),
    }
}
