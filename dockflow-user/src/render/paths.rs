//! Packet blocks for people: one block per packet, one line per stretch of the path (hooks of
//! one netfilter hook folded together), the layer in the first column so the eye sees where the
//! packet leaves the bridge for the IP stack and goes back.

use std::fmt::Write as _;

use super::{Style, packet_summary};
use crate::path::{
    classify::{HopKind, Layer},
    correlate::{Direction, Hop, PacketPath},
    explain::Explanation,
    topology::Topology,
};

pub fn packet_block(path: &PacketPath, topology: &Topology, style: &Style) -> String {
    let mut out = String::new();
    let role = match (path.connection, path.direction) {
        (Some(c), Some(Direction::Request)) => format!(" · connection {c}, request"),
        (Some(c), Some(Direction::Reply)) => format!(" · connection {c}, reply"),
        _ => String::new(),
    };
    let _ = writeln!(out, "{}", style.bold(&format!("packet {} · {}{role}", path.id, packet_summary(&path.packet))));
    for group in groups(&path.hops) {
        let _ = writeln!(out, "  {}", group_line(group, topology, style));
    }
    out
}

pub fn explanation_block(explanation: &Explanation, style: &Style) -> String {
    let mut out = format!("{}\n", style.bold(&format!("connection {}, explained:", explanation.connection)));
    for step in &explanation.steps {
        let _ = writeln!(out, "  {step}");
    }
    out
}

/// Consecutive hops that say the same thing at the same place.
fn groups(hops: &[Hop]) -> Vec<&[Hop]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=hops.len() {
        if i == hops.len() || !same_place(&hops[start], &hops[i]) {
            out.push(&hops[start..i]);
            start = i;
        }
    }
    out
}

fn same_place(a: &Hop, b: &Hop) -> bool {
    a.layer == b.layer && std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind) && a.kind.place() == b.kind.place()
}

fn group_line(group: &[Hop], topology: &Topology, style: &Style) -> String {
    let first = &group[0];
    let last = group.last().unwrap();
    let (label, place, detail) = match &first.kind {
        HopKind::Hook { family, hook, .. } => {
            let nf = first.event.netfilter.as_ref();
            let dev = |i: Option<u32>| i.map_or("-".to_string(), |i| topology.name(first.event.netns, i));
            let devices = nf.map_or(String::new(), |nf| format!("{}>{}", dev(nf.in_ifindex), dev(nf.out_ifindex)));
            let priorities: Vec<String> = group.iter().filter_map(|h| match &h.kind {
                HopKind::Hook { priority: Some(p), .. } => Some(priority_label(*p)),
                _ => None,
            }).collect();
            let range = match (priorities.first(), priorities.last()) {
                (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
                (Some(a), _) => a.clone(),
                _ => String::new(),
            };
            let mut detail = range;
            if let Some(ct) = last.event.conntrack.as_ref() {
                let _ = write!(detail, "  ct {} {}", ct.state, ct.direction);
            }
            (format!("{family} {hook}"), devices, detail)
        }
        HopKind::FromPort { port } => ("from port".into(), port.clone(), first.kind.words().into()),
        HopKind::ToPort { port } => ("to port".into(), port.clone(), first.kind.words().into()),
        HopKind::BridgeForward { port } => ("bridge forward".into(), port.clone(), first.kind.words().into()),
        HopKind::PassedUp { bridge } => ("passed up".into(), bridge.clone(), first.kind.words().into()),
        HopKind::IntoBridge { bridge } => ("into bridge".into(), bridge.clone(), first.kind.words().into()),
        HopKind::Receive { interface } => ("receive".into(), interface.clone(), String::new()),
        HopKind::Transmit { interface } => ("transmit".into(), interface.clone(), String::new()),
        HopKind::Dropped { reason } => ("DROPPED".into(), reason.clone(), String::new()),
    };
    let mut line = format!("{}  {label:<17} {place:<26} {detail}", style.layer(first.layer));
    for hop in group {
        for rewrite in &hop.rewrites {
            let at = match &hop.kind {
                HopKind::Hook { priority: Some(p), .. } => format!(" (seen at {})", priority_label(*p)),
                _ => String::new(),
            };
            let _ = write!(line, "  {}", style.rewrite(&format!("{} {} -> {}{at}", short(rewrite.field), rewrite.before, rewrite.after)));
        }
    }
    line.trim_end().to_string()
}

fn short(field: &str) -> &str {
    if field == "source" { "src" } else { "dst" }
}

fn priority_label(p: i32) -> String {
    match p {
        p if p == i32::MIN + 1 => "first".into(),
        p if p == i32::MAX - 1 => "last".into(),
        p => p.to_string(),
    }
}

impl Style {
    fn layer(&self, layer: Layer) -> String {
        let code = match layer {
            Layer::L2 => "34",
            Layer::L3 => "32",
            Layer::L3FromBridge => "33",
            Layer::Device => "2",
            Layer::Drop => "1;31",
        };
        self.paint(code, &format!("{:<4}", layer.tag()))
    }

    fn rewrite(&self, text: &str) -> String {
        self.paint("36", text)
    }

    fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
}
