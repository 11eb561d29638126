//! The consuming end of the pipeline, shared by live tracing and replay: decoded events in,
//! text or JSON out, either per event (--raw) or per packet with explanations.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{self, BufWriter, Write},
};

use serde::Serialize;

use crate::{
    filter::{Filter, Form},
    model::{Event, ProbePoint, RuleTrace, topology::Topology},
    path::{
        correlate::{Correlator, Evictions, Limits},
        explain::{Explainer, Explanation},
        hop::{Direction, PacketPath},
        proxy::ProxyLinker,
        summary::{Row, Summary},
    },
    pcapng::PcapngWriter,
    render::{Renderer, Style, paths, svg},
};

/// A connection's first request and reply and its explanation, as kept for --svg and --html.
#[derive(Default)]
struct Drawn {
    request: Option<PacketPath>,
    reply: Option<PacketPath>,
    explanation: Option<Explanation>,
}

/// A packet is finished once no probe has seen it for this long.
pub const PACKET_IDLE_NS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One line per event.
    Raw,
    /// One block per packet, explanations per connection.
    Paths,
    /// Nothing but the counts (--quiet): events are not even decoded.
    Quiet,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub packets: u64,
    /// The latest event time seen (kernel monotonic clock).
    pub latest_ts: u64,
    /// Events the display skipped because it was behind.
    pub not_shown: u64,
    /// Packets (events with --raw) the filter expression left out.
    pub filtered_out: u64,
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

pub struct Output<W: Write> {
    mode: Mode,
    json: bool,
    style: Style,
    renderer: Renderer,
    correlator: Correlator,
    explainer: Explainer,
    /// Links the two connections of an exchange through dockerd's userland proxy.
    proxies: ProxyLinker,
    /// With nftables tracing each flow's first packets only: the latest traced packet of each
    /// (connection, direction), for the later ones that share its rules.
    traced: Option<HashMap<(u64, Direction), u64>>,
    writer: W,
    /// Reused for each JSON line, written whole (serde_json writes token by token).
    json_line: Vec<u8>,
    /// False with --quiet while packets are still needed (--pcapng, pictures, --summary):
    /// nothing is rendered for the stream.
    stream: bool,
    /// The filter expression: packets (events with --raw) it does not match are left out.
    filter: Option<Filter>,
    /// --summary: the connections seen.
    summary: Option<Summary>,
    /// --svg: each connection's first request and reply, to draw at the end.
    drawn: Option<BTreeMap<u64, Drawn>>,
    /// Connections remembered at most (--max-connections), for what is kept to draw.
    max_connections: usize,
    /// --pcapng: every finished packet's hops as frames too.
    pcapng: Option<PcapngWriter<BufWriter<File>>>,
    pub stats: Stats,
}

impl<W: Write> Output<W> {
    pub fn new(mode: Mode, json: bool, style: Style, topology: Topology, writer: W) -> Self {
        Self::with_limits(mode, json, style, topology, writer, Limits::default())
    }

    pub fn with_limits(
        mode: Mode,
        json: bool,
        style: Style,
        topology: Topology,
        writer: W,
        limits: Limits,
    ) -> Self {
        Self {
            mode,
            json,
            style,
            renderer: Renderer::new(json, topology.names.clone()),
            correlator: Correlator::with_limits(topology, limits),
            explainer: Explainer::with_limit(limits.connections),
            proxies: ProxyLinker::with_limit(limits.connections),
            traced: None,
            writer,
            json_line: Vec::new(),
            stream: true,
            pcapng: None,
            filter: None,
            summary: None,
            drawn: None,
            max_connections: limits.connections,
            stats: Stats::default(),
        }
    }

    /// Keeps a table of the connections seen (see [`Output::summary`]).
    pub fn with_summary(mut self, on: bool) -> Self {
        self.summary = on.then(Summary::default);
        self
    }

    /// The connections seen so far, with --summary.
    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }

    /// nftables traced each flow's first packets only (--trace-rules first): a later packet
    /// says whose rules it shares.
    pub fn with_shared_rules(mut self, on: bool) -> Self {
        self.traced = on.then(HashMap::new);
        self
    }

    /// Notes the packet's rules, or the earlier packet whose rules it shares.
    fn share_rules(&mut self, path: &mut PacketPath) {
        let (Some(traced), Some(connection), Some(direction)) =
            (&mut self.traced, path.connection, path.direction)
        else {
            return;
        };
        if !path.rules.is_empty() {
            // Bounded like the other per-connection tables; a forgotten flow is traced anew.
            if traced.len() >= self.max_connections.max(1) * 2 {
                traced.clear();
            }
            traced.insert((connection, direction), path.id);
        } else if path.packet.arp.is_none() {
            path.rules_as = traced.get(&(connection, direction)).copied();
        }
    }

    /// Keeps each connection's first request and reply for [`Output::svg`].
    pub fn with_drawing(mut self, on: bool) -> Self {
        self.drawn = on.then(BTreeMap::new);
        self
    }

    /// The kept connections (or only `connection`) as one SVG document.
    pub fn svg(&self, connection: Option<u64>) -> Option<String> {
        let connections = self.drawn_connections(connection)?;
        Some(svg::document(&connections, self.correlator.topology()))
    }

    /// The same diagrams as one HTML page, each beside its explanation and its hop lists.
    pub fn html(&self, connection: Option<u64>) -> Option<String> {
        let connections = self.drawn_connections(connection)?;
        let drawn = self.drawn.as_ref()?;
        let explanations: Vec<Option<&Explanation>> = connections
            .iter()
            .map(|c| drawn.get(&c.id).and_then(|d| d.explanation.as_ref()))
            .collect();
        Some(svg::page(
            &connections,
            &explanations,
            self.correlator.topology(),
        ))
    }

    fn drawn_connections(&self, connection: Option<u64>) -> Option<Vec<svg::Connection<'_>>> {
        let drawn = self.drawn.as_ref()?;
        Some(
            drawn
                .iter()
                .filter(|(id, _)| connection.is_none_or(|c| c == **id))
                .map(|(id, d)| svg::Connection {
                    id: *id,
                    request: d.request.as_ref(),
                    reply: d.reply.as_ref(),
                })
                .collect(),
        )
    }

    /// Shows only what `filter` matches.
    pub fn with_filter(mut self, filter: Option<Filter>) -> Self {
        self.filter = filter;
        self
    }

    /// Whether packets and explanations are rendered for the stream (false: only the files,
    /// the summary and the pictures get them).
    pub fn with_stream(mut self, on: bool) -> Self {
        self.stream = on;
        self
    }

    /// Also writes every finished packet to `pcapng`.
    pub fn with_pcapng(mut self, pcapng: PcapngWriter<BufWriter<File>>) -> Self {
        self.pcapng = Some(pcapng);
        self
    }

    /// Closes the capture file (if any) with the kernel's losses per probe point.
    pub fn finish_pcapng(&mut self, lost: &[(ProbePoint, u64)]) -> io::Result<()> {
        match self.pcapng.take() {
            Some(pcapng) => pcapng.finish(lost).map(drop),
            None => Ok(()),
        }
    }

    /// New interface names and roles (a followed container came back on a new veth).
    pub fn set_topology(&mut self, topology: Topology) {
        self.renderer = Renderer::new(self.json, topology.names.clone());
        self.correlator.set_topology(topology);
    }

    /// Whether events need decoding at all.
    pub fn shows_events(&self) -> bool {
        self.mode != Mode::Quiet
    }

    /// Counts an event that was not decoded (--quiet).
    pub fn count_event(&mut self) {
        self.stats.events += 1;
    }

    /// The time of the latest event seen.
    pub fn latest_ts(&self) -> u64 {
        self.stats.latest_ts
    }

    pub fn event(&mut self, event: Event) -> io::Result<()> {
        self.stats.events += 1;
        self.stats.latest_ts = self.stats.latest_ts.max(event.ts_ns);
        match self.mode {
            Mode::Quiet => Ok(()),
            Mode::Raw
                if self
                    .filter
                    .as_ref()
                    .is_some_and(|f| !f.matches_events([&event])) =>
            {
                self.stats.filtered_out += 1;
                Ok(())
            }
            Mode::Raw => self.renderer.write_line(&event, &mut self.writer),
            Mode::Paths => {
                self.correlator.push(event);
                Ok(())
            }
        }
    }

    /// An nftables rule evaluation (from the trace collector).
    pub fn trace(&mut self, trace: RuleTrace) -> io::Result<()> {
        match self.mode {
            // Raw lines stand alone: a trace whose packet the filter leaves out goes too.
            Mode::Raw if self.leaves_out(&trace) => Ok(()),
            Mode::Raw if self.json => {
                write_json_line(&mut self.writer, &mut self.json_line, &trace)
            }
            Mode::Raw => writeln!(
                self.writer,
                "{}",
                crate::render::visible(&format!(
                    "nft {} {} {} {}: {} => {}",
                    trace.family,
                    trace.table,
                    trace.chain,
                    trace.kind,
                    trace.rule.as_deref().unwrap_or("-"),
                    trace.verdict
                ))
            ),
            Mode::Paths => {
                self.correlator.push_trace(trace);
                Ok(())
            }
            Mode::Quiet => Ok(()),
        }
    }

    fn leaves_out(&self, trace: &RuleTrace) -> bool {
        let (Some(filter), Some(packet)) = (&self.filter, &trace.packet) else {
            return false;
        };
        !filter.matches_any([Form::of_packet(packet)])
    }

    /// The kernel lost events between these times (the ring buffer was full).
    pub fn lost_between(&mut self, from_ns: u64, to_ns: u64) {
        self.correlator.mark_gap(from_ns, to_ns);
    }

    /// The display skipped `records` events from `from_ns` to `to_ns` (it was behind).
    pub fn not_shown(&mut self, records: u64, from_ns: u64, to_ns: u64) {
        self.stats.not_shown += records;
        self.correlator.mark_gap(from_ns, to_ns);
    }

    /// Packets past --per-connection whose first hops the kernel emitted, not shown.
    pub fn folded(&self) -> u64 {
        self.correlator.folded()
    }

    /// Packets shown as incomplete so far.
    pub fn incomplete_packets(&self) -> u64 {
        self.correlator.incomplete
    }

    /// What the memory limits cost so far.
    pub fn evictions(&self) -> Evictions {
        self.correlator.evictions
    }

    /// Writes the packets that are finished by `now_ns` (kernel monotonic clock).
    pub fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        let done = self.correlator.flush_idle(now_ns, PACKET_IDLE_NS);
        self.write_paths(done)?;
        self.writer.flush()
    }

    /// Writes everything still open, and explanations of connections left incomplete.
    pub fn finish(&mut self) -> io::Result<()> {
        let rest = self.correlator.finish();
        self.write_paths(rest)?;
        if self.mode == Mode::Paths {
            for explanation in self.explainer.finish() {
                self.write_explanation(&explanation)?;
            }
        }
        // --summary --json: the table's rows close the stream (the table itself goes to stderr).
        if let (true, Some(summary)) = (self.json, &self.summary) {
            for row in summary.rows() {
                write_json_line(
                    &mut self.writer,
                    &mut self.json_line,
                    &JsonLine::Connection(row),
                )?;
            }
        }
        self.writer.flush()
    }

    fn write_paths(&mut self, paths: Vec<PacketPath>) -> io::Result<()> {
        for mut path in paths {
            // Before the filter: a proxied exchange's legs are linked whichever is shown.
            self.proxies.annotate(&mut path, self.correlator.topology());
            self.share_rules(&mut path);
            if let Some(filter) = &self.filter
                && !filter.matches_events(path.hops.iter().map(|h| &h.event))
                && !filter.matches_any([Form::of_packet(&path.packet)])
            {
                self.stats.filtered_out += 1;
                continue;
            }
            self.stats.packets += 1;
            if let Some(pcapng) = &mut self.pcapng {
                pcapng.write_path(&path, self.correlator.topology())?;
            }
            if let Some(summary) = &mut self.summary {
                summary.packet(&path);
            }
            if let (Some(drawn), Some(connection)) = (&mut self.drawn, path.connection) {
                // Bounded like the connections the explainer remembers: the oldest go first.
                if !drawn.contains_key(&connection) && drawn.len() >= self.max_connections.max(1) {
                    drawn.pop_first();
                }
                let entry = drawn.entry(connection).or_default();
                let slot = match path.direction {
                    Some(Direction::Reply) => &mut entry.reply,
                    _ => &mut entry.request,
                };
                if slot.is_none() {
                    *slot = Some(path.clone());
                }
            }
            self.show_packet(&path)?;
            for explanation in self.explainer.observe(&path) {
                self.write_explanation(&explanation)?;
            }
        }
        Ok(())
    }

    /// A finished packet on the stream, as JSON or as its text block.
    fn show_packet(&mut self, path: &PacketPath) -> io::Result<()> {
        if !self.stream {
            return Ok(());
        }
        if self.json {
            write_json_line(
                &mut self.writer,
                &mut self.json_line,
                &JsonLine::Packet(path),
            )
        } else {
            let block = paths::packet_block(path, self.correlator.topology(), &self.style);
            writeln!(self.writer, "{block}")
        }
    }

    fn write_explanation(&mut self, explanation: &Explanation) -> io::Result<()> {
        if let Some(summary) = &mut self.summary {
            summary.explanation(explanation);
        }
        if let Some(drawn) = self
            .drawn
            .as_mut()
            .and_then(|d| d.get_mut(&explanation.connection))
        {
            drawn.explanation = Some(explanation.clone());
        }
        if !self.stream {
            Ok(())
        } else if self.json {
            write_json_line(
                &mut self.writer,
                &mut self.json_line,
                &JsonLine::Explanation(explanation),
            )
        } else {
            writeln!(
                self.writer,
                "{}",
                paths::explanation_block(explanation, &self.style)
            )
        }
    }
}

/// `value` as one JSON line, serialized into `line` (reused) and written in one call.
fn write_json_line(
    writer: &mut impl Write,
    line: &mut Vec<u8>,
    value: &impl Serialize,
) -> io::Result<()> {
    line.clear();
    serde_json::to_writer(&mut *line, value)?;
    line.push(b'\n');
    writer.write_all(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::tests_support::seed_paths;

    #[test]
    fn a_later_untraced_packet_shares_the_rules_of_its_flows_traced_one() {
        let (topology, paths) = seed_paths();
        let mut output = Output::new(
            Mode::Paths,
            true,
            Style { color: false },
            topology,
            Vec::new(),
        )
        .with_shared_rules(true);
        let mut first = paths[0].clone();
        first.rules = vec![crate::model::RuleTrace {
            ts_ns: 1,
            trace_id: 1,
            family: crate::model::NftFamily::Ip,
            table: "nat".into(),
            chain: "DOCKER".into(),
            hook: None,
            kind: crate::model::TraceKind::Rule,
            handle: Some(14),
            rule: Some("udp dport 1812 dnat to 172.20.0.2:1812".into()),
            verdict: crate::model::Verdict::Accept,
            packet: Some(first.packet.clone()),
        }];
        crate::path::rules::place(&mut first);
        output.share_rules(&mut first);
        assert_eq!(first.rules_as, None, "traced itself");
        let mut later = paths[0].clone();
        later.id = 7;
        output.share_rules(&mut later);
        assert_eq!(later.rules_as, Some(first.id));
        let mut reply = paths[1].clone();
        output.share_rules(&mut reply);
        assert_eq!(
            reply.rules_as, None,
            "no traced packet in the reply's direction"
        );
        let block = paths::packet_block(
            &later,
            output.correlator.topology(),
            &Style { color: false },
        );
        assert!(
            block.contains(&format!("rules as packet {}", first.id)),
            "{block}"
        );
        // Without --trace-rules first nothing is said.
        let mut all = Output::new(
            Mode::Paths,
            true,
            Style { color: false },
            seed_paths().0,
            Vec::new(),
        );
        all.share_rules(&mut first);
        all.share_rules(&mut later.clone());
        let mut again = paths[0].clone();
        all.share_rules(&mut again);
        assert_eq!(again.rules_as, None);
    }
}
