//! Merging the recordings of several nodes (`dockflow merge`, `--replay` of several files): no
//! root, no kernel; each packet once, across the nodes it crossed.

use std::{io::Write as _, path::PathBuf};

use anyhow::{Result, bail};
use dockflow::{
    merge::{self, Alignment, NodePaths},
    render::{Style, merged::merged_block},
};
use serde::Serialize;

use crate::cli::Cli;

/// One merged packet as a JSON line.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: usize,
    #[serde(flatten)]
    merged: &'a merge::Merged<'a>,
}

pub fn run(cli: &Cli, recordings: &[PathBuf]) -> Result<()> {
    if recordings.len() < 2 {
        bail!("merging needs the recordings of two nodes or more");
    }
    let nodes: Vec<NodePaths> = recordings
        .iter()
        .map(|path| merge::read(path))
        .collect::<Result<_>>()?;
    for (i, node) in nodes.iter().enumerate() {
        if nodes[..i].iter().any(|other| other.node == node.node) {
            bail!(
                "two recordings are of node {:?}: record each node with its own --node NAME",
                node.node
            );
        }
    }
    let story = merge::stitch(&nodes);
    report(&nodes, &story);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let style = Style::for_stdout();
    for (i, merged) in story.packets.iter().enumerate() {
        let id = i + 1;
        if cli.json {
            let line = Line {
                kind: "merged_packet",
                id,
                merged,
            };
            serde_json::to_writer(&mut out, &line)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", merged_block(id, merged, &nodes, &style))?;
        }
    }
    out.flush()?;
    for node in &nodes {
        if let Some(cut) = &node.cut {
            eprintln!(
                "dockflow: {}: {cut}; everything before it was merged",
                node.node
            );
        }
    }
    Ok(())
}

/// On stderr: the nodes, how their clocks were aligned, how many packets crossed.
fn report(nodes: &[NodePaths], story: &merge::Story) {
    let crossed = story.packets.iter().filter(|m| m.legs.len() > 1).count();
    eprintln!(
        "dockflow: merged {} nodes: {} packets, {crossed} of them across nodes",
        nodes.len(),
        story.packets.len()
    );
    for (node, alignment) in nodes.iter().zip(&story.alignment).skip(1) {
        match alignment {
            Alignment::ByPackets { ahead_ns, pairs } => eprintln!(
                "dockflow: {}'s clock is {:.3} ms ahead of {}'s (from {pairs} packets that crossed both ways)",
                node.node,
                *ahead_ns as f64 / 1e6,
                nodes[0].node
            ),
            Alignment::WallClocks => eprintln!(
                "dockflow: {}'s clock taken as it is against {}'s: no packets crossed both ways to align them",
                node.node, nodes[0].node
            ),
        }
    }
}
