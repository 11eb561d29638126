//! A merged packet as text: its hops on each node in turn, the crossings between, and its
//! account with the node of each step.

use std::fmt::Write as _;

use super::{Style, packet_summary, paths::packet_block, visible};
use crate::{
    merge::{Merged, NodePaths},
    path::{
        explain::{Fact, vxlan_port_words},
        hop::Direction,
    },
};

pub fn merged_block(id: usize, merged: &Merged, nodes: &[NodePaths], style: &Style) -> String {
    let mut out = String::new();
    let route: Vec<&str> = merged.legs.iter().map(|l| l.node).collect();
    let role = match merged.direction {
        Some(Direction::Request) => " · request",
        Some(Direction::Reply) => " · reply",
        None => "",
    };
    let across = if route.len() > 1 {
        format!("across {}", route.join(" -> "))
    } else {
        format!("on {}", route[0])
    };
    let _ = writeln!(
        out,
        "{}",
        style.bold(&visible(&format!(
            "packet {id} · {} · {across}{role}",
            packet_summary(merged.packet)
        )))
    );
    let crossings: Vec<&Fact> = merged
        .steps
        .iter()
        .filter(|s| s.node.is_none())
        .map(|s| &s.step.fact)
        .collect();
    for (i, leg) in merged.legs.iter().enumerate() {
        let _ = writeln!(out, "  on {}:", visible(leg.node));
        let block = packet_block(leg.path, &nodes[leg.node_index].topology, style);
        // The leg's own header line is the packet's, said once above.
        for line in block.lines().skip(1) {
            let _ = writeln!(out, "  {line}");
        }
        if let Some(Fact::CrossesNodes {
            vni,
            udp_port,
            outer,
            gap_ns,
            from_address,
            to_address,
            ..
        }) = crossings.get(i)
        {
            let to_port = vxlan_port_words(*udp_port);
            let packet = match (outer, from_address, to_address) {
                (Some(outer), _, _) => format!("UDP {outer} (seen on both nodes)"),
                (None, Some(from), Some(to)) => {
                    format!("VNI {vni}, {from} -> {to} UDP to {to_port}")
                }
                _ => format!("VNI {vni}, UDP to {to_port}"),
            };
            let _ = writeln!(
                out,
                "  ~~ VXLAN {packet} · {:.3} ms on the way",
                *gap_ns as f64 / 1e6
            );
        }
    }
    let _ = writeln!(out, "  explained:");
    for (n, step) in merged.steps.iter().enumerate() {
        let node = step
            .node
            .map(|node| format!("[{node}] "))
            .unwrap_or_default();
        let _ = writeln!(out, "    {}. {node}{}", n + 1, visible(&step.step.text));
    }
    out
}
