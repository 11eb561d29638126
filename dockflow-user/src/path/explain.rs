//! Plain words for a connection's request and reply, like the numbered walkthrough the seed's
//! author wrote for the request and could not write for the reply.
//!
//! Two stages: a path gives typed facts ([`Fact`]), in the order the packet met them; each fact
//! renders to one sentence. The closing facts (what became of the packet, how request and reply
//! crossed between the bridge and the IP stack) are derived from the hops, and a fact is only
//! stated when the path shows it: no routing for a packet that was only bridged, no drop for a
//! packet that reached its destination.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::Serialize;

use super::{
    classify::{HopKind, Layer, flooded_ports},
    correlate::{Direction, Hop, Limits, PacketPath, RewriteField},
    docker::DockerDrop,
    proxy::{LegRole, ProxyLeg},
    rules,
};
use crate::model::{
    ArpOp, CtDirection, CtState, Family, Hook, RuleTrace, TraceKind, Verdict, endpoint,
    priority_words,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub connection: u64,
    pub steps: Vec<Step>,
}

/// One fact and its sentence; JSON carries both (`kind` and the fields, and `text`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub fact: Fact,
    pub text: String,
}

impl Step {
    fn new(fact: Fact) -> Self {
        let text = fact.sentence();
        Self { fact, text }
    }
}

/// A netfilter hook of one family ("ipv4 prerouting").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HookRef {
    pub family: Family,
    pub hook: Hook,
}

/// An nftables rule that judged the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// nft table family (ip, ip6, inet, bridge).
    pub family: String,
    pub table: String,
    pub chain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub verdict: Verdict,
}

impl RuleRef {
    fn of(r: &RuleTrace) -> Self {
        Self {
            family: r.family.clone(),
            table: r.table.clone(),
            chain: r.chain.clone(),
            hook: r.hook,
            rule: r.rule.clone(),
            verdict: r.verdict.clone(),
        }
    }
}

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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Request,
    Reply,
}

impl Role {
    fn word(self) -> &'static str {
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
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<RuleRef>,
        #[serde(skip_serializing_if = "Option::is_none")]
        after: Option<HookRef>,
    },
    /// The host's ICMP code frees a locally delivered ICMP message no ping socket wants, after
    /// raw sockets got their copies.
    FreedAfterDelivery {
        role: Role,
        reason: String,
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

/// Collects the first request and reply of each connection; explains a connection once both
/// were seen (or, at exit, with what was seen).
pub struct Explainer {
    /// Connections waiting for their other half, oldest (lowest id) first.
    pending: BTreeMap<u64, (Option<PacketPath>, Option<PacketPath>)>,
    explained: HashSet<u64>,
    explained_order: VecDeque<u64>,
    /// How many connections each of the two may hold; past it the oldest pending one is
    /// explained with what was seen, the oldest explained one forgotten.
    limit: usize,
}

impl Default for Explainer {
    fn default() -> Self {
        Self::with_limit(Limits::default().connections)
    }
}

impl Explainer {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            pending: BTreeMap::new(),
            explained: HashSet::new(),
            explained_order: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Feeds a finished packet; returns the explanations it completed: its connection's, and
    /// the oldest waiting one's when the limit is reached.
    pub fn observe(&mut self, path: &PacketPath) -> Vec<Explanation> {
        let (Some(connection), Some(direction)) = (path.connection, path.direction) else {
            return Vec::new();
        };
        if self.explained.contains(&connection) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !self.pending.contains_key(&connection) && self.pending.len() >= self.limit {
            out.extend(self.explain_oldest());
        }
        let entry = self.pending.entry(connection).or_default();
        let slot = if direction == Direction::Request {
            &mut entry.0
        } else {
            &mut entry.1
        };
        slot.get_or_insert_with(|| path.clone());
        if entry.0.is_some() && entry.1.is_some() {
            out.extend(self.explain_now(connection));
        }
        out
    }

    fn explain_oldest(&mut self) -> Option<Explanation> {
        let oldest = *self.pending.keys().next()?;
        self.explain_now(oldest)
    }

    fn explain_now(&mut self, connection: u64) -> Option<Explanation> {
        let (request, reply) = self.pending.remove(&connection)?;
        if self.explained_order.len() >= self.limit
            && let Some(old) = self.explained_order.pop_front()
        {
            self.explained.remove(&old);
        }
        self.explained.insert(connection);
        self.explained_order.push_back(connection);
        Some(explain(connection, request.as_ref(), reply.as_ref()))
    }

    /// Explanations for connections that never completed (a request with no reply, say).
    pub fn finish(&mut self) -> Vec<Explanation> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(connection, (request, reply))| {
                explain(connection, request.as_ref(), reply.as_ref())
            })
            .collect()
    }
}

pub fn explain(
    connection: u64,
    request: Option<&PacketPath>,
    reply: Option<&PacketPath>,
) -> Explanation {
    let mut facts = Vec::new();
    if let Some(request) = request {
        facts.extend(narrate(request, Role::Request));
        facts.extend(proxy_fact(request));
    }
    let is_arp = request.or(reply).is_some_and(|p| p.packet.arp.is_some());
    match reply {
        Some(reply) if is_arp => facts.extend(narrate(reply, Role::Reply)),
        Some(reply) => {
            facts.extend(narrate(reply, Role::Reply));
            facts.extend(request.and_then(|request| crossing(request, reply)));
            facts.extend(request.and_then(|request| reply_sees_no_nat(request, reply)));
        }
        None if request.is_some_and(|r| r.dropped().is_none() && !is_announcement(r)) => {
            facts.push(Fact::NoReply)
        }
        None => {}
    }
    Explanation {
        connection,
        steps: facts.into_iter().map(Step::new).collect(),
    }
}

/// A gratuitous ARP, which expects no answer.
fn is_announcement(path: &PacketPath) -> bool {
    path.packet.arp.is_some() && path.packet.src == path.packet.dst
}

/// What dockerd's userland proxy has to do with the request's connection, if anything.
fn proxy_fact(request: &PacketPath) -> Option<Fact> {
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
fn narrate(path: &PacketPath, role: Role) -> Vec<Fact> {
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
    let rule_at = rules::placed(&path.rules, hops, &path.packet);
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
            _ if i == 0 => {} // told by the start
            (HopKind::FromPort { port }, _) => facts.push(Fact::EntersBridge {
                role,
                port: port.clone(),
            }),
            (HopKind::PassedUp { bridge }, _) => facts.push(Fact::PassedUp {
                role,
                bridge: bridge.clone(),
            }),
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
        facts.extend(accepted_in(path, &rule_at, i..end, role, &facts));
        i = end;
    }
    // Rules whose hook no probe saw (a packet known only from the trace).
    facts.extend(accepted_in(
        path,
        &rule_at,
        usize::MAX..usize::MAX,
        role,
        &facts,
    ));
    facts.extend(outcome(path, role));
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
fn outcome(path: &PacketPath, role: Role) -> Option<Fact> {
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
    let outcome = if local {
        Outcome::DeliveredLocally
    } else if routed {
        Outcome::Routed
    } else if sent_by_host {
        Outcome::SentByHost
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
fn crossing(request: &PacketPath, reply: &PacketPath) -> Option<Fact> {
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
fn reply_sees_no_nat(request: &PacketPath, reply: &PacketPath) -> Option<Fact> {
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

impl std::fmt::Display for HookRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.family, self.hook)
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
                "Bridge {bridge} passes the frame up to the host's IP stack (L2 -> L3; the bridge's input hook runs here): the frame is addressed to the bridge's own MAC, the containers' gateway, so the bridge delivers it to the host instead of forwarding it to a port."
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
                    (true, Some(bridge)) => format!("passes it up to the host through {bridge}"),
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
                    Some(bridge) if !ports.is_empty() => {
                        s.push_str(&format!(" and passes it up to the host through {bridge}"))
                    }
                    Some(bridge) => {
                        s.push_str(&format!(" passes it up to the host through {bridge}"))
                    }
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
                    way.push(format!("up to the host through {bridge}"));
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
                    Answerer::Unknown => format!("{sender} answers (first seen at {place})"),
                };
                let to = match (ports.is_empty(), passed_up) {
                    (false, _) => format!(
                        ", and the bridge delivers the answer to {} only (unicast, L2)",
                        list(ports)
                    ),
                    (true, Some(bridge)) => {
                        format!(
                            ", and the bridge passes the answer up to the host through {bridge} (unicast, L2)"
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
            | Fact::ReachesNamespace { role, .. }
            | Fact::LeavesHost { role, .. }
            | Fact::Dropped { role, .. }
            | Fact::Outcome { role, .. }
            | Fact::FreedAfterDelivery { role, .. }
            | Fact::Incomplete { role }
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
