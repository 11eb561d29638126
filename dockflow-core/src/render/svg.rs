//! A picture of each connection's path (--svg): lanes for where the packet is (outside the
//! bridge on the host's links, the host's IP stack, the bridge, inside containers), time
//! running downwards, the request and the reply as two coloured paths of dots, one dot per
//! hop. NAT rewrites stand beside the hop where they happen, the nftables rules that decided
//! beside their hook, a drop ends its path in red. The request's L3 -> L2 crossing and the
//! reply's L2 -> L3 one are the slants between the middle lanes.
//!
//! Plain SVG text, self-contained (no fonts, scripts or links), which any browser opens.

use std::fmt::Write as _;

use crate::{
    model::{priority_words, topology::Topology},
    path::{
        explain::Explanation,
        hop::{Direction, Hop, HopKind, Layer, PacketPath, RewriteField},
    },
    render::{Style, packet_summary, paths},
};

/// The lanes, left to right.
const LANES: [&str; 4] = [
    "outside the bridge (host links)",
    "host IP stack (L3)",
    "bridge (L2; L3*: br_netfilter's IP hooks)",
    "inside containers",
];
const LANE_WIDTH: usize = 290;
const LEFT: usize = 20;
const ROW: usize = 26;
const HEADER: usize = 70;
const REQUEST_COLOUR: &str = "#1f6fb4";
const REPLY_COLOUR: &str = "#e07b00";
const DROP_COLOUR: &str = "#d62728";

/// A connection to draw: its request and reply, as far as they were seen.
pub struct Connection<'a> {
    pub id: u64,
    pub request: Option<&'a PacketPath>,
    pub reply: Option<&'a PacketPath>,
}

/// One SVG document with a diagram per connection, stacked.
pub fn document(connections: &[Connection], topology: &Topology) -> String {
    let mut body = String::new();
    let mut y = 0;
    for connection in connections {
        let (diagram, height) = diagram(connection, topology, y);
        body.push_str(&diagram);
        y += height + 30;
    }
    let width = LEFT * 2 + LANE_WIDTH * LANES.len() + 360;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" viewBox=\"0 0 {width} {}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n",
        y.max(1),
        y.max(1)
    )
}

/// --html: one page, each connection's diagram beside its explanation, with its packets' hop
/// lists folded underneath; styles inline, no scripts or outside files, so it opens offline.
pub fn page(
    connections: &[Connection],
    explanations: &[Option<&Explanation>],
    topology: &Topology,
) -> String {
    let plain = Style { color: false };
    let mut body = String::new();
    for (connection, explanation) in connections.iter().zip(explanations) {
        let _ = writeln!(
            body,
            "<section id=\"connection-{id}\"><h2>connection {id}</h2><div class=\"row\">",
            id = connection.id
        );
        body.push_str(&document(std::slice::from_ref(connection), topology));
        body.push_str("<div class=\"text\">");
        match explanation {
            Some(explanation) => {
                body.push_str("<ol>");
                for step in &explanation.steps {
                    let _ = write!(body, "<li>{}</li>", escape(&step.text));
                }
                body.push_str("</ol>");
            }
            None => body.push_str("<p>(no explanation: the connection was not complete)</p>"),
        }
        for path in [connection.request, connection.reply].into_iter().flatten() {
            let _ = write!(
                body,
                "<details><summary>packet {} hops</summary><pre>{}</pre></details>",
                path.id,
                escape(&paths::packet_block(path, topology, &plain))
            );
        }
        body.push_str("</div></div></section>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dockflow: packet paths</title><style>{STYLE}</style></head><body><h1>dockflow: packet paths</h1>\n{body}</body></html>\n"
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}section{margin-bottom:2em}.row{display:flex;gap:1em;align-items:flex-start}.text{max-width:48em}li{margin:.3em 0}pre{font-size:11px;overflow-x:auto}";

/// One connection's diagram from height `top`; returns it and its height.
fn diagram(connection: &Connection, topology: &Topology, top: usize) -> (String, usize) {
    let paths: Vec<&PacketPath> = [connection.request, connection.reply]
        .into_iter()
        .flatten()
        .collect();
    let rows: usize = paths.iter().map(|p| p.hops.len().max(1)).sum::<usize>() + paths.len();
    let height = HEADER + rows * ROW + 20;
    let mut out = format!(
        "<g class=\"connection\" data-connection=\"{}\" transform=\"translate(0,{top})\">\n",
        connection.id
    );
    let title = paths.first().map_or(String::new(), |p| {
        let proxy = super::paths::proxy_words(p)
            .map(|w| format!(" · {w}"))
            .unwrap_or_default();
        format!("{}{proxy}", packet_summary(&p.packet))
    });
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"20\" font-size=\"15\" font-weight=\"bold\">connection {}: {}</text>",
        connection.id,
        escape(&title)
    );
    let legend_x = lane_x(LANES.len() - 1) + LANE_WIDTH / 2 + 20;
    for (i, (colour, what)) in [
        (REQUEST_COLOUR, "request"),
        (REPLY_COLOUR, "reply"),
        (DROP_COLOUR, "dropped"),
    ]
    .into_iter()
    .enumerate()
    {
        let y = 60 + i * 18;
        let _ = writeln!(
            out,
            "<g class=\"legend\"><circle cx=\"{legend_x}\" cy=\"{y}\" r=\"5\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{what}</text></g>",
            legend_x + 10,
            y + 4
        );
    }
    for (i, lane) in LANES.iter().enumerate() {
        let x = lane_x(i);
        let _ = writeln!(
            out,
            "<g class=\"lane\"><rect x=\"{}\" y=\"34\" width=\"{}\" height=\"{}\" fill=\"{}\" stroke=\"#bbb\"/><text x=\"{x}\" y=\"50\" text-anchor=\"middle\" font-weight=\"bold\">{}</text></g>",
            x - LANE_WIDTH / 2 + 4,
            LANE_WIDTH - 8,
            height - 40,
            if i % 2 == 0 { "#f6f8fa" } else { "#eef2f6" },
            escape(lane)
        );
    }
    let mut row = 0;
    for path in paths {
        let (colour, role) = match path.direction {
            Some(Direction::Reply) => (REPLY_COLOUR, "reply"),
            _ => (REQUEST_COLOUR, "request"),
        };
        out.push_str(&path_group(path, topology, colour, role, &mut row));
        row += 1;
    }
    out.push_str("</g>\n");
    (out, height)
}

/// The dots, line and labels of one packet.
fn path_group(
    path: &PacketPath,
    topology: &Topology,
    colour: &str,
    role: &str,
    row: &mut usize,
) -> String {
    let mut out = format!("<g class=\"path {role}\" data-packet=\"{}\">\n", path.id);
    let rule_at = path.rule_at.as_slice();
    let mut points = Vec::new();
    let mut lane = 0;
    for (i, hop) in path.hops.iter().enumerate() {
        lane = lane_of(hop, topology, lane);
        let (x, y) = (lane_x(lane), HEADER + *row * ROW);
        *row += 1;
        points.push(format!("{x},{y}"));
        let dropped = matches!(
            hop.kind,
            HopKind::Dropped {
                flood_copy: false,
                after_delivery: false,
                ..
            }
        );
        let fill = if dropped { DROP_COLOUR } else { colour };
        let _ = writeln!(
            out,
            "<circle class=\"hop\" cx=\"{x}\" cy=\"{y}\" r=\"{}\" fill=\"{fill}\"><title>{}</title></circle>",
            if dropped { 7 } else { 5 },
            escape(hop.kind.words())
        );
        let mut label = hop_label(hop);
        for rewrite in &hop.rewrites {
            let field = match rewrite.field {
                RewriteField::Source => "src",
                RewriteField::Destination => "dst",
            };
            let _ = write!(label, "  [{field} {} -> {}]", rewrite.before, rewrite.after);
        }
        let _ = writeln!(
            out,
            "<text class=\"label{}\" x=\"{}\" y=\"{}\"{}>{}</text>",
            if hop.rewrites.is_empty() { "" } else { " nat" },
            x + 10,
            y + 4,
            if hop.rewrites.is_empty() {
                ""
            } else {
                " fill=\"#007a7a\""
            },
            escape(&label)
        );
        let decided: Vec<String> = path
            .rules
            .iter()
            .zip(rule_at)
            .filter(|(r, at)| **at == Some(i) && r.verdict.to_string() != "continue")
            .map(|(r, _)| {
                format!(
                    "nft {} {} {}: {}",
                    r.family,
                    r.table,
                    r.chain,
                    r.rule.as_deref().unwrap_or("policy")
                )
            })
            .collect();
        if let Some(rule) = decided.last() {
            let _ = writeln!(
                out,
                "<text class=\"rule\" x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#666\">{}</text>",
                x + 10,
                y + 15,
                escape(&shorten(rule, 70))
            );
        }
    }
    if points.len() > 1 {
        let _ = writeln!(
            out,
            "<polyline class=\"line\" points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"/>",
            points.join(" ")
        );
    }
    out.push_str("</g>\n");
    out
}

fn lane_x(lane: usize) -> usize {
    LEFT + LANE_WIDTH * lane + LANE_WIDTH / 2
}

/// Which lane a hop is drawn in; `previous`: the lane of the hop before (a drop stays there).
fn lane_of(hop: &Hop, topology: &Topology, previous: usize) -> usize {
    match hop.layer {
        Layer::L3 => 1,
        Layer::L2 | Layer::L3FromBridge => 2,
        Layer::Drop => previous,
        Layer::Device => {
            let host = hop
                .event
                .netns
                .is_none_or(|ns| ns == topology.names.host_netns);
            if host { 0 } else { 3 }
        }
    }
}

/// "L3 ipv4 prerouting -99", "L2 to port vethc (radius)", "dev receive dfext0".
fn hop_label(hop: &Hop) -> String {
    let place = match &hop.kind {
        HopKind::Hook {
            family,
            hook,
            priority,
            ..
        } => format!(
            "{family} {hook}{}",
            priority.map_or(String::new(), |p| format!(" {}", priority_words(p)))
        ),
        HopKind::FromPort { port }
        | HopKind::ToPort { port }
        | HopKind::BridgeForward { port }
        | HopKind::FromTunnel { port, .. }
        | HopKind::ToTunnel { port, .. } => {
            format!("{} {port}", hop.kind.name().replace('_', " "))
        }
        HopKind::PassedUp { bridge }
        | HopKind::IntoBridge { bridge }
        | HopKind::HandedBack { bridge } => {
            format!("{} {bridge}", hop.kind.name().replace('_', " "))
        }
        HopKind::Receive { interface, .. }
        | HopKind::Transmit { interface, .. }
        | HopKind::ToNode { interface, .. }
        | HopKind::FromNode { interface, .. } => {
            format!("{} {interface}", hop.kind.name().replace('_', " "))
        }
        HopKind::Dropped { reason, .. } => format!("dropped: {reason}"),
    };
    format!("{} {place}", hop.layer.tag())
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// Text for SVG: the five characters XML reserves.
/// XML's reserved characters as entities, and control characters (which XML 1.0 does not allow
/// at all) made visible as escapes.
fn escape(text: &str) -> String {
    super::visible(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::tests_support::seed_paths;

    #[test]
    fn draws_lanes_one_dot_per_hop_both_paths_and_the_nat() {
        let (topology, paths) = seed_paths();
        let svg = document(
            &[Connection {
                id: 1,
                request: Some(&paths[0]),
                reply: Some(&paths[1]),
            }],
            &topology,
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert_eq!(svg.matches("class=\"lane\"").count(), LANES.len());
        let hops = paths[0].hops.len() + paths[1].hops.len();
        assert_eq!(svg.matches("class=\"hop\"").count(), hops);
        assert_eq!(svg.matches("class=\"path request\"").count(), 1);
        assert_eq!(svg.matches("class=\"path reply\"").count(), 1);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(
            svg.contains("[dst 10.199.0.1:1812 -&gt; 172.20.0.2:1812]"),
            "{svg}"
        );
        // The request crosses from the IP stack lane into the bridge lane; the reply back.
        let request_lanes = lanes_visited(&paths[0], &topology);
        assert!(
            request_lanes.windows(2).any(|w| w == [1, 2]),
            "{request_lanes:?}"
        );
        let reply_lanes = lanes_visited(&paths[1], &topology);
        assert!(
            reply_lanes.windows(2).any(|w| w == [2, 1]),
            "{reply_lanes:?}"
        );
    }

    fn lanes_visited(path: &PacketPath, topology: &Topology) -> Vec<usize> {
        let mut lane = 0;
        path.hops
            .iter()
            .map(|h| {
                lane = lane_of(h, topology, lane);
                lane
            })
            .collect()
    }

    #[test]
    fn the_page_holds_the_diagram_the_explanation_and_the_hops() {
        let (topology, paths) = seed_paths();
        let explanation = crate::path::explain::explain(1, Some(&paths[0]), Some(&paths[1]));
        let html = page(
            &[Connection {
                id: 1,
                request: Some(&paths[0]),
                reply: Some(&paths[1]),
            }],
            &[Some(&explanation)],
            &topology,
        );
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg ").count(), 1);
        assert_eq!(html.matches("<li>").count(), explanation.steps.len());
        assert_eq!(html.matches("<details>").count(), 2);
        assert!(
            !html.contains("<script") && !html.contains("http://")
                || html.contains("http://www.w3.org/2000/svg")
        );
        assert!(!html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn escapes_what_xml_reserves() {
        assert_eq!(escape("a<b & \"c\">"), "a&lt;b &amp; &quot;c&quot;&gt;");
        assert_eq!(escape("x\u{1b}[31m"), "x\\u{1b}[31m");
    }
}
