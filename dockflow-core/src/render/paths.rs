//! Packet blocks for people: one block per packet, one line per stretch of the path (hooks of
//! one netfilter hook folded together), the layer in the first column so the eye sees where the
//! packet leaves the bridge for the IP stack and goes back.

use std::{borrow::Cow, fmt::Write as _};

use super::{Style, packet_summary, visible};
use crate::{
    model::{RuleTrace, TraceKind, Verdict, priority_words, topology::Topology},
    path::{
        explain::Explanation,
        hop::{Direction, Hop, HopKind, Layer, LegRole, PacketPath, RewriteField},
    },
};

/// "to docker-proxy (pid 812, 0.0.0.0:18080)" on a front leg's packets, "docker-proxy (pid
/// 812) relaying connection 3" on a back leg's.
pub fn proxy_words(path: &PacketPath) -> Option<String> {
    let leg = path.proxy.as_ref()?;
    Some(match (leg.leg, leg.group) {
        (LegRole::Front, _) => {
            let way = match path.direction {
                Some(Direction::Reply) => "from",
                _ => "to",
            };
            format!("{way} docker-proxy (pid {}, {})", leg.pid, leg.listen)
        }
        (LegRole::Back, Some(front)) => {
            format!("docker-proxy (pid {}) relaying connection {front}", leg.pid)
        }
        (LegRole::Back, None) => format!("docker-proxy (pid {}) relaying", leg.pid),
    })
}

pub fn packet_block(path: &PacketPath, topology: &Topology, style: &Style) -> String {
    let mut out = String::new();
    let role = match (path.connection, path.direction) {
        (Some(c), Some(Direction::Request)) => format!(" · connection {c}, request"),
        (Some(c), Some(Direction::Reply)) => format!(" · connection {c}, reply"),
        _ => String::new(),
    };
    let proxy = proxy_words(path)
        .map(|w| format!(" · {w}"))
        .unwrap_or_default();
    let sample = match (path.sample, path.hops.as_slice()) {
        (false, _) => "",
        // The kernel shows a held-back packet's drop, not the hops before it.
        (true, [hop]) if hop.event.drop.is_some() => {
            " · dropped past --per-connection: its earlier hops were held back"
        }
        (true, _) => {
            " · sample: past its connection's first packets one a second is shown (--per-connection)"
        }
    };
    let incomplete = if path.incomplete {
        " · INCOMPLETE: events were lost on its way"
    } else {
        ""
    };
    let ends = match (&path.ends.src, &path.ends.dst) {
        (None, None) => String::new(),
        (Some(src), None) => format!(" · from {src}"),
        (None, Some(dst)) => format!(" · to {dst}"),
        (Some(src), Some(dst)) => format!(" · {src} -> {dst}"),
    };
    let _ = writeln!(
        out,
        "{}",
        style.bold(&visible(&format!(
            "packet {} · {}{ends}{role}{proxy}{sample}{incomplete}",
            path.id,
            packet_summary(&path.packet)
        )))
    );
    let rule_at = path.rule_at.as_slice();
    let mut start = 0;
    for group in groups(&path.hops) {
        let _ = writeln!(out, "  {}", group_line(group, topology, style));
        let range = start..start + group.len();
        start = range.end;
        for (rule, _) in path
            .rules
            .iter()
            .zip(rule_at)
            .filter(|(_, at)| at.is_some_and(|at| range.contains(&at)))
        {
            if let Some(line) = rule_line(rule, style) {
                let _ = writeln!(out, "        {line}");
            }
        }
    }
    let rest: Vec<String> = path
        .rules
        .iter()
        .zip(rule_at)
        .filter(|(_, at)| at.is_none())
        .filter_map(|(r, _)| rule_line(r, style))
        .collect();
    if !rest.is_empty() {
        let _ = writeln!(out, "  nftables (no matching hop seen):");
        for line in rest {
            let _ = writeln!(out, "        {line}");
        }
    }
    if let Some(earlier) = path.rules_as {
        let _ = writeln!(
            out,
            "  nft   rules as packet {earlier} (each flow's first packets are traced: --trace-rules first)"
        );
    }
    out
}

/// One line per hop as the packet block shows it (no colour, hooks not folded), each followed
/// by the nftables rules that decided at that hop: the comment of the hop's frame in a capture
/// file.
pub fn hop_lines(path: &PacketPath, topology: &Topology) -> Vec<String> {
    let plain = Style { color: false };
    let rule_at = path.rule_at.as_slice();
    path.hops
        .iter()
        .enumerate()
        .map(|(i, hop)| {
            let mut line = group_line(std::slice::from_ref(hop), topology, &plain);
            for (rule, _) in path
                .rules
                .iter()
                .zip(rule_at)
                .filter(|(_, at)| **at == Some(i))
            {
                if let Some(text) = rule_line(rule, &plain) {
                    let _ = write!(line, "\n  {text}");
                }
            }
            line
        })
        .collect()
}

/// "nft ip nat DOCKER: iifname != "docker1" udp dport 1812 counter dnat to 172.20.0.2:1812 => accept";
/// rules that only let evaluation continue say nothing worth a line.
fn rule_line(rule: &RuleTrace, style: &Style) -> Option<String> {
    if rule.verdict == Verdict::Continue {
        return None;
    }
    let what = match (rule.kind, &rule.rule) {
        (TraceKind::Policy, _) => "policy".to_string(),
        (TraceKind::Return, _) => "end of chain".to_string(),
        (TraceKind::Rule, Some(text)) => text.clone(),
        (TraceKind::Rule, None) => format!("rule {}", rule.handle.unwrap_or(0)),
    };
    Some(format!(
        "{} {}  => {}",
        style.dim(&visible(&format!(
            "nft {} {} {}:",
            rule.family, rule.table, rule.chain
        ))),
        visible(&what),
        style.verdict(&rule.verdict)
    ))
}

pub fn explanation_block(explanation: &Explanation, style: &Style) -> String {
    let mut out = format!(
        "{}\n",
        style.bold(&format!(
            "connection {}, explained:",
            explanation.connection
        ))
    );
    for (i, step) in explanation.steps.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, visible(&step.text));
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
    a.layer == b.layer && a.kind.same_place(&b.kind)
}

fn group_line(group: &[Hop], topology: &Topology, style: &Style) -> String {
    let first = &group[0];
    let last = group.last().unwrap();
    // Borrowed where the words exist already: this runs for every hop of every packet shown
    // (and of every frame of a capture file).
    let words = || Cow::Borrowed(first.kind.words());
    let (label, place, detail): (Cow<str>, Cow<str>, Cow<str>) = match &first.kind {
        HopKind::Hook { family, hook, .. } => {
            let nf = first.event.netfilter.as_ref();
            let dev =
                |i: Option<u32>| i.map_or("-".to_string(), |i| topology.name(first.event.netns, i));
            let devices = nf.map_or(String::new(), |nf| {
                format!("{}>{}", dev(nf.in_ifindex), dev(nf.out_ifindex))
            });
            let mut priorities = group.iter().filter_map(|h| match &h.kind {
                HopKind::Hook {
                    priority: Some(p), ..
                } => Some(*p),
                _ => None,
            });
            let mut detail = String::new();
            if let Some(a) = priorities.next() {
                detail.push_str(&priority_words(a));
                if let Some(b) = priorities.next_back()
                    && b != a
                {
                    let _ = write!(detail, "..{}", priority_words(b));
                }
            }
            if let Some(ct) = last.event.conntrack.as_ref() {
                let _ = write!(detail, "  ct {} {}", ct.state, ct.direction);
            }
            (
                Cow::Owned(format!("{family} {hook}")),
                Cow::Owned(devices),
                Cow::Owned(detail),
            )
        }
        HopKind::FromPort { port } => ("from port".into(), port.into(), words()),
        HopKind::ToPort { port } => ("to port".into(), port.into(), words()),
        HopKind::FromTunnel { port, vni, .. } => (
            "from tunnel".into(),
            port.into(),
            Cow::Owned(format!("{} VNI {vni}", first.kind.words())),
        ),
        HopKind::ToTunnel { port, vni, .. } => (
            "to tunnel".into(),
            port.into(),
            Cow::Owned(format!("{} VNI {vni}", first.kind.words())),
        ),
        HopKind::ToNode { interface, outer } => (
            "vxlan out".into(),
            interface.into(),
            Cow::Owned(outer.to_string()),
        ),
        HopKind::FromNode { interface, outer } => (
            "vxlan in".into(),
            interface.into(),
            Cow::Owned(outer.to_string()),
        ),
        HopKind::BridgeForward { port } => ("bridge forward".into(), port.into(), words()),
        HopKind::PassedUp { bridge } => ("passed up".into(), bridge.into(), words()),
        HopKind::IntoBridge { bridge } => ("into bridge".into(), bridge.into(), words()),
        HopKind::HandedBack { bridge } => ("handed back".into(), bridge.into(), words()),
        HopKind::Receive { interface, .. } => ("receive".into(), interface.into(), "".into()),
        HopKind::Transmit { interface, .. } => ("transmit".into(), interface.into(), "".into()),
        HopKind::Dropped {
            reason,
            interface,
            flood_copy,
            after_delivery,
        } => (
            if *flood_copy {
                "copy dropped"
            } else if *after_delivery {
                "freed"
            } else {
                "DROPPED"
            }
            .into(),
            interface.into(),
            if *flood_copy || *after_delivery {
                Cow::Owned(format!("{reason}: {}", first.kind.words()))
            } else {
                Cow::Owned(reason.to_string())
            },
        ),
    };
    let place = visible(&place);
    let mut line = String::with_capacity(96);
    line.push_str(&style.layer(first.layer));
    line.push_str("  ");
    padded(&mut line, &label, 17);
    line.push(' ');
    padded(&mut line, &place, 26);
    line.push(' ');
    line.push_str(&detail);
    for hop in group {
        for rewrite in &hop.rewrites {
            let at = match &hop.kind {
                HopKind::Hook {
                    priority: Some(p), ..
                } => format!(" (seen at {})", priority_words(*p)),
                _ => String::new(),
            };
            let _ = write!(
                line,
                "  {}",
                style.rewrite(&format!(
                    "{} {} -> {}{at}",
                    short(rewrite.field),
                    rewrite.before,
                    rewrite.after
                ))
            );
        }
    }
    line.truncate(line.trim_end().len());
    line
}

/// `text` left-aligned in `width` characters, as `{:<width}` writes it: spaces pushed at once,
/// not one character at a time (this runs for every hop of every frame of a capture file).
fn padded(line: &mut String, text: &str, width: usize) {
    line.push_str(text);
    let chars = text.chars().count();
    line.extend(std::iter::repeat_n(' ', width.saturating_sub(chars)));
}

fn short(field: RewriteField) -> &'static str {
    match field {
        RewriteField::Source => "src",
        RewriteField::Destination => "dst",
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
        let mut tag = String::with_capacity(4);
        padded(&mut tag, layer.tag(), 4);
        self.paint(code, &tag)
    }

    fn rewrite(&self, text: &str) -> String {
        self.paint("36", text)
    }

    pub(super) fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    fn verdict(&self, verdict: &Verdict) -> String {
        match verdict {
            Verdict::Drop => self.paint("1;31", "drop"),
            Verdict::Accept => self.paint("32", "accept"),
            other => other.to_string(),
        }
    }
}
