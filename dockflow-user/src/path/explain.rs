//! Plain words for a connection's request and reply, like the numbered walkthrough the seed's
//! author wrote for the request and could not write for the reply. Every sentence is derived
//! from the structured path (layers, hooks, rewrites, conntrack state), none from the lab.

use std::collections::HashMap;

use serde::Serialize;

use crate::event::endpoint;

use super::{
    classify::{HopKind, Layer},
    correlate::{Direction, Hop, PacketPath},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub connection: u64,
    pub steps: Vec<String>,
}

/// Collects the first request and reply of each connection; explains a connection once both
/// were seen (or, at exit, with what was seen).
#[derive(Default)]
pub struct Explainer {
    pending: HashMap<u64, (Option<PacketPath>, Option<PacketPath>)>,
    explained: Vec<u64>,
}

impl Explainer {
    /// Feeds a finished packet; returns the connection's explanation when it became complete.
    pub fn observe(&mut self, path: &PacketPath) -> Option<Explanation> {
        let (Some(connection), Some(direction)) = (path.connection, path.direction) else {
            return None;
        };
        if self.explained.contains(&connection) {
            return None;
        }
        let entry = self.pending.entry(connection).or_default();
        let slot = if direction == Direction::Request {
            &mut entry.0
        } else {
            &mut entry.1
        };
        slot.get_or_insert_with(|| path.clone());
        if entry.0.is_some() && entry.1.is_some() {
            let (request, reply) = self.pending.remove(&connection).unwrap();
            self.explained.push(connection);
            return Some(explain(connection, request.as_ref(), reply.as_ref()));
        }
        None
    }

    /// Explanations for connections that never completed (a request with no reply, say).
    pub fn finish(&mut self) -> Vec<Explanation> {
        let mut out: Vec<Explanation> = self
            .pending
            .drain()
            .map(|(connection, (request, reply))| {
                explain(connection, request.as_ref(), reply.as_ref())
            })
            .collect();
        out.sort_by_key(|e| e.connection);
        out
    }
}

pub fn explain(
    connection: u64,
    request: Option<&PacketPath>,
    reply: Option<&PacketPath>,
) -> Explanation {
    let mut steps = Vec::new();
    if let Some(request) = request {
        steps.extend(narrate(request, "request"));
    }
    match reply {
        Some(reply) => {
            steps.extend(narrate(reply, "reply"));
            steps.extend(why_the_reply_differs(request, reply));
        }
        None if request.is_some_and(|r| r.dropped().is_none()) => {
            steps.push("No reply was seen.".to_string())
        }
        None => {}
    }
    let steps = steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| format!("{}. {s}", i + 1))
        .collect();
    Explanation { connection, steps }
}

/// Consecutive hops of one layer (device hops attach to their neighbours).
fn runs(path: &PacketPath) -> Vec<&[Hop]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=path.hops.len() {
        let boundary = i == path.hops.len()
            || path.hops[i].layer != path.hops[start].layer
            || kind_changes(&path.hops[i - 1], &path.hops[i]);
        if boundary {
            out.push(&path.hops[start..i]);
            start = i;
        }
    }
    out
}

/// Inside one layer, a change of what happens (passed up, into the bridge) starts a new run.
fn kind_changes(a: &Hop, b: &Hop) -> bool {
    let transition = |h: &Hop| {
        matches!(
            h.kind,
            HopKind::PassedUp { .. }
                | HopKind::IntoBridge { .. }
                | HopKind::ToPort { .. }
                | HopKind::FromPort { .. }
        )
    };
    std::mem::discriminant(&a.kind) != std::mem::discriminant(&b.kind)
        && (transition(a) || transition(b))
}

fn hook_names(hops: &[Hop]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for hop in hops {
        if let HopKind::Hook { family, hook, .. } = &hop.kind {
            let name = format!("{family} {hook}");
            if names.last() != Some(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn narrate(path: &PacketPath, role: &str) -> Vec<String> {
    let mut steps = Vec::new();
    let p = &path.packet;
    let first = &path.hops[0];
    steps.push(match &first.kind {
        HopKind::FromPort { port } => format!("The {role} ({} {} -> {}) leaves its container and enters the bridge through port {port} (L2).", p.protocol_name(), endpoint(p.src, p.sport), endpoint(p.dst, p.dport)),
        HopKind::Transmit { interface } => format!("The {role} ({} {} -> {}) is sent out of {interface}.", p.protocol_name(), endpoint(p.src, p.sport), endpoint(p.dst, p.dport)),
        HopKind::Receive { interface } => format!("The {role} ({} {} -> {}) arrives on {interface}.", p.protocol_name(), endpoint(p.src, p.sport), endpoint(p.dst, p.dport)),
        other => format!("The {role} ({} {} -> {}) is first seen at {}.", p.protocol_name(), endpoint(p.src, p.sport), endpoint(p.dst, p.dport), other.place()),
    });
    let hooks_all = hook_names(
        &path
            .hops
            .iter()
            .filter(|h| h.layer == Layer::L3 || h.layer == Layer::L3FromBridge)
            .cloned()
            .collect::<Vec<_>>(),
    );
    let runs = runs(path);
    for run in &runs {
        let layer = run[0].layer;
        match (&run[0].kind, layer) {
            (HopKind::PassedUp { bridge }, _) => steps.push(format!(
                "Bridge {bridge} passes the frame up to the host's IP stack (L2 -> L3; the bridge's input hook runs here): the frame is addressed to the bridge's own MAC, the containers' gateway, so the bridge delivers it to the host instead of forwarding it to a port."
            )),
            (HopKind::IntoBridge { bridge }, _) => steps.push(format!(
                "The IP stack routes it out through {bridge}: it goes back into the bridge (L3 -> L2; the bridge's output and postrouting hooks run here)."
            )),
            (HopKind::ToPort { port }, _) => steps.push(format!("The bridge sends it out of port {port} (L2).")),
            (HopKind::FromPort { port }, _) if !std::ptr::eq(&run[0], first) => {
                steps.push(format!("It enters the bridge through port {port} (L2; the bridge's prerouting hook runs here)."));
            }
            (HopKind::BridgeForward { port }, _) => steps.push(format!("The bridge forwards the frame (L2, from {port}).")),
            (HopKind::Dropped { reason }, _) => {
                let last_hook = path.hops.iter().take_while(|h| h.layer != Layer::Drop).filter_map(|h| match &h.kind {
                    HopKind::Hook { family, hook, priority } => Some(format!("{family} {hook}{}", priority.map_or(String::new(), |p| format!(" (last seen at priority {})", priority_words(p))))),
                    _ => None,
                }).last();
                let by_rule = path.rules.iter().find(|r| r.verdict == "drop");
                steps.push(match (by_rule, last_hook) {
                    (Some(r), _) => format!(
                        "It is dropped by nftables, {} {} chain {}{}, rule `{}` (kernel drop reason {reason}); it goes no further.",
                        r.family,
                        r.table,
                        r.chain,
                        r.hook.as_deref().map_or(String::new(), |h| format!(" at the {h} hook")),
                        r.rule.as_deref().unwrap_or("?")
                    ),
                    (None, Some(hook)) => format!("It is dropped ({reason}) after {hook}; it goes no further."),
                    (None, None) => format!("It is dropped ({reason}); it goes no further."),
                });
            }
            (_, Layer::L3FromBridge) => steps.push(format!(
                "While the frame is still inside the bridge, br_netfilter runs the {} hook on it (bridge-nf-call-iptables=1): IP rules see it although the bridge, not the IP stack, is handling it.",
                list(&hook_names(run))
            )),
            (_, Layer::L3) => {
                let hooks = hook_names(run);
                if !hooks.is_empty() {
                    steps.push(format!("The IP stack (L3) runs the {} hook{}.", list(&hooks), if hooks.len() > 1 { "s" } else { "" }));
                }
                steps.extend(nat_sentences(run, role));
            }
            // Names with a namespace prefix ("radius:eth0") are not the host's own devices.
            (HopKind::Transmit { interface }, Layer::Device) if !interface.contains(':') => {
                steps.push(format!("It leaves the host on {interface}."));
            }
            _ => {}
        }
    }
    // NAT that happened inside a from-the-bridge run is reported too.
    for run in runs.iter().filter(|r| r[0].layer == Layer::L3FromBridge) {
        steps.extend(nat_sentences(run, role));
    }
    steps.extend(rule_sentences(path));
    let forwarded = hooks_all.iter().any(|h| h.ends_with(" forward"));
    let local = hooks_all.iter().any(|h| h.ends_with(" input"));
    if path.dropped().is_some() {
        // Where it would have gone is beside the point.
    } else if forwarded && !local {
        steps.push(format!(
            "It is routed through the host (IP forward) and never delivered to a local socket, so no IP input hook sees it: after NAT its destination {} is not one of the host's addresses.",
            path.hops.iter().rev().find_map(|h| h.event.packet.as_ref()).map_or(String::new(), |q| endpoint(q.dst, q.dport))
        ));
    } else if local {
        steps.push("It is delivered to the host itself (IP input).".to_string());
    }
    steps
}

/// Sentences for the NAT rewrites in a run of hooks.
fn nat_sentences(run: &[Hop], role: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, hop) in run.iter().enumerate() {
        for rewrite in &hop.rewrites {
            let HopKind::Hook {
                family,
                hook,
                priority,
            } = &hop.kind
            else {
                continue;
            };
            let before = run[..i].iter().rev().find_map(|h| match &h.kind {
                HopKind::Hook {
                    priority: Some(p), ..
                } => Some(*p),
                _ => None,
            });
            let stage = match (before, priority) {
                (Some(a), Some(b)) => format!(
                    " between priorities {} and {}",
                    priority_words(a),
                    priority_words(*b)
                ),
                _ => String::new(),
            };
            let ct = hop.event.conntrack.as_ref();
            let new_connection = ct.is_some_and(|c| c.state == "new");
            let what = match (rewrite.field, new_connection, role) {
                ("destination", true, _) => "DNAT: a nat rule rewrites the destination",
                ("source", true, _) => "SNAT/masquerade: a nat rule rewrites the source",
                ("source", false, "reply") if ct.is_some_and(|c| c.status.contains(&"dst_nat")) => {
                    "conntrack undoes the request's DNAT on the reply: it rewrites the source"
                }
                ("destination", false, "reply")
                    if ct.is_some_and(|c| c.status.contains(&"src_nat")) =>
                {
                    "conntrack undoes the request's SNAT on the reply: it rewrites the destination"
                }
                ("source", _, _) => "conntrack applies the connection's NAT binding to the source",
                _ => "conntrack applies the connection's NAT binding to the destination",
            };
            let mut sentence = format!(
                "{what} {} -> {} at {family} {hook}{stage}.",
                rewrite.before, rewrite.after
            );
            if !new_connection {
                if let Some(ct) = ct {
                    sentence.push_str(&format!(
                        " The packet belongs to a known connection (conntrack state {}, {} direction), and nat chains are only consulted for a connection's first packet, so no nat chain sees this one.",
                        ct.state, ct.direction
                    ));
                }
            }
            out.push(sentence);
        }
    }
    out
}

/// The nftables rules that accepted the packet (a DNAT rule's verdict is accept too).
fn rule_sentences(path: &PacketPath) -> Vec<String> {
    path.rules
        .iter()
        // A drop is told with the drop itself.
        .filter(|r| r.verdict == "accept")
        .filter(|r| r.kind == "rule")
        .map(|r| {
            let at = r
                .hook
                .as_deref()
                .map_or(String::new(), |h| format!(" at the {h} hook"));
            format!(
                "nftables: {} {} chain {}{at} accepts it with the rule `{}`.",
                r.family,
                r.table,
                r.chain,
                r.rule.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

/// The seed's questions, answered from the reply's path.
fn why_the_reply_differs(request: Option<&PacketPath>, reply: &PacketPath) -> Vec<String> {
    let mut out = Vec::new();
    let passed_up = reply
        .hops
        .iter()
        .any(|h| matches!(h.kind, HopKind::PassedUp { .. }));
    let into_bridge = reply
        .hops
        .iter()
        .any(|h| matches!(h.kind, HopKind::IntoBridge { .. }));
    let from_bridge_hooks = hook_names(
        &reply
            .hops
            .iter()
            .filter(|h| h.layer == Layer::L3FromBridge)
            .cloned()
            .collect::<Vec<_>>(),
    );
    let request_bridged = request.is_some_and(|r| {
        r.hops
            .iter()
            .any(|h| matches!(h.kind, HopKind::IntoBridge { .. } | HopKind::ToPort { .. }))
    });
    if passed_up && request_bridged {
        out.push("The request went L3 -> L2 (routed by the host, then bridged to the container); the reply goes the other way, L2 -> L3 (bridged from the container up to the host, then routed out).".to_string());
    }
    if !reply.rules.is_empty() && reply.rules.iter().all(|r| r.table != "nat") {
        let chains: Vec<String> = reply
            .rules
            .iter()
            .map(|r| format!("{} {} {}", r.family, r.table, r.chain))
            .fold(Vec::new(), |mut acc, c| {
                if !acc.contains(&c) {
                    acc.push(c);
                }
                acc
            });
        out.push(format!(
            "nftables' own trace confirms it: the reply was evaluated by {} and by no nat chain.",
            list(&chains)
        ));
    }
    let routed = reply.hops.iter().any(|h| h.layer == Layer::L3);
    if !passed_up && !into_bridge && !routed && !from_bridge_hooks.is_empty() {
        out.push(format!(
            "The reply never leaves the bridge: it is bridged at L2 only and never routed. The IP hooks it crosses ({}) are run by br_netfilter from inside the bridge.",
            list(&from_bridge_hooks)
        ));
    }
    out
}

fn priority_words(p: i32) -> String {
    match p {
        p if p == i32::MIN + 1 => "first".into(),
        p if p == i32::MAX - 1 => "last".into(),
        p => p.to_string(),
    }
}
