//! Where finished packets and explanations go: the stream (text or JSON on the writer), the
//! capture file (--pcapng), the --summary table, and the connections kept to draw (--svg,
//! --html). The table and the drawing are [`Sink`]s the front hands every item to in turn;
//! the stream and the capture file take bytes rendered from the items, maybe on other
//! threads ([`super::workers`]), in order.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use serde::Serialize;

use super::pipeline::Item;
use crate::{
    model::{RuleTrace, topology::Topology},
    path::{
        explain::Explanation,
        hop::{Direction, PacketPath},
        summary::{Row, Summary},
    },
    render::{Style, paths, svg, visible},
};

/// One destination of the pipeline's items.
pub trait Sink {
    fn take(&mut self, item: &Item, topology: &Topology) -> io::Result<()>;
}

/// JSON lines in path mode carry a type tag, so tools can tell them apart.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum JsonLine<'a> {
    Packet(&'a PacketPath),
    Explanation(&'a Explanation),
    /// A --summary row, at the end.
    Connection(&'a Row),
}

/// How the stream shows things: text blocks (coloured or not) or JSON lines. Rendering is
/// pure, so it may run on any thread (see [`super::workers`]).
#[derive(Clone, Copy, Debug)]
pub struct StreamFormat {
    pub json: bool,
    pub style: Style,
}

impl StreamFormat {
    /// Appends `item` as shown on the stream to `out`.
    pub fn item(&self, item: &Item, topology: &Topology, out: &mut Vec<u8>) {
        match (item, self.json) {
            (Item::Packet(path), true) => json_line(out, &JsonLine::Packet(path)),
            (Item::Explanation(explanation), true) => {
                json_line(out, &JsonLine::Explanation(explanation))
            }
            (Item::Packet(path), false) => {
                text_line(out, &paths::packet_block(path, topology, &self.style))
            }
            (Item::Explanation(explanation), false) => {
                text_line(out, &paths::explanation_block(explanation, &self.style))
            }
        }
    }

    /// Appends an nftables rule evaluation on its own line (--raw) to `out`.
    pub fn raw_trace(&self, trace: &RuleTrace, out: &mut Vec<u8>) {
        if self.json {
            return json_line(out, trace);
        }
        text_line(
            out,
            &visible(&format!(
                "nft {} {} {} {}: {} => {}",
                trace.family,
                trace.table,
                trace.chain,
                trace.kind,
                trace.rule.as_deref().unwrap_or("-"),
                trace.verdict
            )),
        )
    }
}

/// The stream on standard output, where rendered bytes are written in order.
pub struct StreamSink<W: Write> {
    pub(super) writer: W,
    pub(super) format: StreamFormat,
    /// False with --quiet while packets are still needed (--pcapng, pictures, --summary):
    /// nothing is rendered.
    pub(super) on: bool,
}

impl<W: Write> StreamSink<W> {
    pub fn new(writer: W, json: bool, style: Style) -> Self {
        Self {
            writer,
            format: StreamFormat { json, style },
            on: true,
        }
    }

    /// --summary --json: the table's rows close the stream (the table itself goes to stderr).
    pub fn summary_rows(&mut self, summary: &Summary) -> io::Result<()> {
        if !self.format.json {
            return Ok(());
        }
        let mut rows = Vec::new();
        for row in summary.rows() {
            json_line(&mut rows, &JsonLine::Connection(row));
        }
        self.writer.write_all(&rows)
    }
}

impl Sink for Summary {
    fn take(&mut self, item: &Item, _: &Topology) -> io::Result<()> {
        match item {
            Item::Packet(path) => self.packet(path),
            Item::Explanation(explanation) => self.explanation(explanation),
        }
        Ok(())
    }
}

/// A connection's first request and reply and its explanation, as kept for --svg and --html.
#[derive(Default)]
struct Drawn {
    request: Option<PacketPath>,
    reply: Option<PacketPath>,
    explanation: Option<Explanation>,
}

/// Each connection's first request and reply, kept to draw at the end.
pub struct Drawing {
    drawn: BTreeMap<u64, Drawn>,
    /// Connections remembered at most (--max-connections).
    max_connections: usize,
}

impl Drawing {
    pub fn new(max_connections: usize) -> Self {
        Self {
            drawn: BTreeMap::new(),
            max_connections,
        }
    }

    /// The kept connections (or only `connection`) as one SVG document.
    pub fn svg(&self, connection: Option<u64>, topology: &Topology) -> String {
        svg::document(&self.connections(connection), topology)
    }

    /// The same diagrams as one HTML page, each beside its explanation and its hop lists.
    pub fn html(&self, connection: Option<u64>, topology: &Topology) -> String {
        let connections = self.connections(connection);
        let explanations: Vec<Option<&Explanation>> = connections
            .iter()
            .map(|c| self.drawn.get(&c.id).and_then(|d| d.explanation.as_ref()))
            .collect();
        svg::page(&connections, &explanations, topology)
    }

    fn connections(&self, connection: Option<u64>) -> Vec<svg::Connection<'_>> {
        self.drawn
            .iter()
            .filter(|(id, _)| connection.is_none_or(|c| c == **id))
            .map(|(id, d)| svg::Connection {
                id: *id,
                request: d.request.as_ref(),
                reply: d.reply.as_ref(),
            })
            .collect()
    }
}

impl Sink for Drawing {
    fn take(&mut self, item: &Item, _: &Topology) -> io::Result<()> {
        match item {
            Item::Packet(path) => {
                let Some(connection) = path.connection else {
                    return Ok(());
                };
                // Bounded like the connections the explainer remembers: the oldest go first.
                if !self.drawn.contains_key(&connection)
                    && self.drawn.len() >= self.max_connections.max(1)
                {
                    self.drawn.pop_first();
                }
                let entry = self.drawn.entry(connection).or_default();
                let slot = match path.direction {
                    Some(Direction::Reply) => &mut entry.reply,
                    _ => &mut entry.request,
                };
                if slot.is_none() {
                    *slot = Some((*path).clone());
                }
            }
            Item::Explanation(explanation) => {
                if let Some(drawn) = self.drawn.get_mut(&explanation.connection) {
                    drawn.explanation = Some((*explanation).clone());
                }
            }
        }
        Ok(())
    }
}

/// Appends `value` as one JSON line.
fn json_line(out: &mut Vec<u8>, value: &impl Serialize) {
    serde_json::to_writer(&mut *out, value).expect("JSON into memory");
    out.push(b'\n');
}

/// Appends a text block and its line end.
fn text_line(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}
