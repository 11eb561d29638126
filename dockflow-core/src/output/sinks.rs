//! Where finished packets and explanations go: the stream (text or JSON on the writer), the
//! capture file (--pcapng), the --summary table, and the connections kept to draw (--svg,
//! --html). Each is a [`Sink`]; the front hands every item to each in turn.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{self, BufWriter, Write},
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
    pcapng::PcapngWriter,
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

/// The stream on standard output: packet blocks and explanations as text, or JSON lines.
pub struct StreamSink<W: Write> {
    pub(super) writer: W,
    json: bool,
    style: Style,
    /// False with --quiet while packets are still needed (--pcapng, pictures, --summary):
    /// nothing is rendered.
    pub(super) on: bool,
    /// Reused for each JSON line, written whole (serde_json writes token by token).
    json_line: Vec<u8>,
}

impl<W: Write> StreamSink<W> {
    pub fn new(writer: W, json: bool, style: Style) -> Self {
        Self {
            writer,
            json,
            style,
            on: true,
            json_line: Vec::new(),
        }
    }

    /// An nftables rule evaluation on its own line (--raw).
    pub fn raw_trace(&mut self, trace: &RuleTrace) -> io::Result<()> {
        if self.json {
            return write_json_line(&mut self.writer, &mut self.json_line, trace);
        }
        writeln!(
            self.writer,
            "{}",
            visible(&format!(
                "nft {} {} {} {}: {} => {}",
                trace.family,
                trace.table,
                trace.chain,
                trace.kind,
                trace.rule.as_deref().unwrap_or("-"),
                trace.verdict
            ))
        )
    }

    /// --summary --json: the table's rows close the stream (the table itself goes to stderr).
    pub fn summary_rows(&mut self, summary: &Summary) -> io::Result<()> {
        if !self.json {
            return Ok(());
        }
        for row in summary.rows() {
            write_json_line(
                &mut self.writer,
                &mut self.json_line,
                &JsonLine::Connection(row),
            )?;
        }
        Ok(())
    }
}

impl<W: Write> Sink for StreamSink<W> {
    fn take(&mut self, item: &Item, topology: &Topology) -> io::Result<()> {
        if !self.on {
            return Ok(());
        }
        match (item, self.json) {
            (Item::Packet(path), true) => write_json_line(
                &mut self.writer,
                &mut self.json_line,
                &JsonLine::Packet(path),
            ),
            (Item::Explanation(explanation), true) => write_json_line(
                &mut self.writer,
                &mut self.json_line,
                &JsonLine::Explanation(explanation),
            ),
            (Item::Packet(path), false) => {
                let block = paths::packet_block(path, topology, &self.style);
                writeln!(self.writer, "{block}")
            }
            (Item::Explanation(explanation), false) => {
                let block = paths::explanation_block(explanation, &self.style);
                writeln!(self.writer, "{block}")
            }
        }
    }
}

impl Sink for PcapngWriter<BufWriter<File>> {
    fn take(&mut self, item: &Item, topology: &Topology) -> io::Result<()> {
        match item {
            Item::Packet(path) => self.write_path(path, topology),
            Item::Explanation(_) => Ok(()),
        }
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

/// `value` as one JSON line, serialized into `line` (reused) and written in one call.
pub(super) fn write_json_line(
    writer: &mut impl Write,
    line: &mut Vec<u8>,
    value: &impl Serialize,
) -> io::Result<()> {
    line.clear();
    serde_json::to_writer(&mut *line, value)?;
    line.push(b'\n');
    writer.write_all(line)
}
