//! The consuming end, shared by live tracing and replay: decoded events in; per event (--raw)
//! or through the [`pipeline`] (correlate, link, share rules, filter, explain) to the
//! [`sinks`]: the stream (text or JSON), the capture file, the --summary table and the pictures.

pub mod pipeline;
pub mod sinks;
pub mod source;
pub mod workers;

use std::io::{self, Write};

use self::{
    pipeline::{Pipeline, Produced},
    sinks::{Drawing, Sink, StreamSink},
    workers::{Batch, Buffers, Rendered, Shown, Workers},
};
use crate::{
    filter::Form,
    model::{Event, ProbePoint, RuleTrace, topology::Topology},
    path::{
        correlate::{Evictions, Limits},
        summary::Summary,
    },
    pcapng::PcapngWriter,
    render::Style,
    write_behind::WriteBehind,
};

/// Packets and explanations rendered together on a render thread.
const BATCH_ITEMS: usize = 128;
/// --raw lines rendered together.
const BATCH_LINES: usize = 1024;
/// Fewer items than this, with nothing on its way, are rendered here and now: a quiet live
/// run shows each packet without waiting for a thread.
const INLINE_BELOW: usize = 16;
/// Batches on their way per render thread before the front waits for the oldest.
const IN_FLIGHT_PER_THREAD: u64 = 4;

pub use self::pipeline::PACKET_IDLE_NS;

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

pub struct Output<W: Write> {
    mode: Mode,
    pipeline: Pipeline,
    stream: StreamSink<W>,
    /// --pcapng: every finished packet's hops as frames too.
    pcapng: Option<PcapngWriter<WriteBehind>>,
    /// --summary: the connections seen.
    summary: Option<Summary>,
    /// --svg, --html: each connection's first request and reply, to draw at the end.
    drawing: Option<Drawing>,
    /// Connections remembered at most (--max-connections), for what is kept to draw.
    max_connections: usize,
    /// Render threads, if any (else everything is rendered on the caller's thread).
    workers: Option<Workers>,
    /// --raw events and traces not rendered yet.
    raw: Vec<Shown>,
    /// --raw text times count from the first event shown.
    first_raw_ts: Option<u64>,
    /// Buffers of batches written, for the next batches (rendering a batch fills megabytes).
    spare: Vec<Buffers>,
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
            pipeline: Pipeline::new(topology, limits),
            stream: StreamSink::new(writer, json, style),
            pcapng: None,
            summary: None,
            drawing: None,
            max_connections: limits.connections,
            workers: None,
            raw: Vec::new(),
            first_raw_ts: None,
            spare: Vec::new(),
            stats: Stats::default(),
        }
    }

    /// Renders on `threads` threads of its own (0: on the caller's thread). The output is the
    /// same; a busy run or a replay goes faster where there are cores to spare.
    pub fn with_render_threads(mut self, threads: usize) -> Self {
        self.workers = (threads > 0).then(|| Workers::start(threads));
        self
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
        self.pipeline.share_rules(on);
        self
    }

    /// Keeps each connection's first request and reply for [`Output::svg`].
    pub fn with_drawing(mut self, on: bool) -> Self {
        self.drawing = on.then(|| Drawing::new(self.max_connections));
        self
    }

    /// The kept connections (or only `connection`) as one SVG document.
    pub fn svg(&self, connection: Option<u64>) -> Option<String> {
        let drawing = self.drawing.as_ref()?;
        Some(drawing.svg(connection, self.pipeline.topology()))
    }

    /// The same diagrams as one HTML page, each beside its explanation and its hop lists.
    pub fn html(&self, connection: Option<u64>) -> Option<String> {
        let drawing = self.drawing.as_ref()?;
        Some(drawing.html(connection, self.pipeline.topology()))
    }

    /// Shows only what `filter` matches.
    pub fn with_filter(mut self, filter: Option<crate::filter::Filter>) -> Self {
        self.pipeline.filter = filter;
        self
    }

    /// Whether packets and explanations are rendered for the stream (false: only the files,
    /// the summary and the pictures get them).
    pub fn with_stream(mut self, on: bool) -> Self {
        self.stream.on = on;
        self
    }

    /// Also writes every finished packet to `pcapng`.
    pub fn with_pcapng(mut self, pcapng: PcapngWriter<WriteBehind>) -> Self {
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
    pub fn set_topology(&mut self, topology: Topology) -> io::Result<()> {
        // Raw lines so far are named by the topology they came with.
        self.render_raw()?;
        self.pipeline.set_topology(topology);
        Ok(())
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
                    .pipeline
                    .filter
                    .as_ref()
                    .is_some_and(|f| !f.matches_events([&event])) =>
            {
                self.stats.filtered_out += 1;
                Ok(())
            }
            Mode::Raw => {
                self.first_raw_ts.get_or_insert(event.ts_ns);
                self.raw_line(Shown::Event(event))
            }
            Mode::Paths => {
                self.pipeline.push(event);
                Ok(())
            }
        }
    }

    /// An nftables rule evaluation (from the trace collector).
    pub fn trace(&mut self, trace: RuleTrace) -> io::Result<()> {
        match self.mode {
            // Raw lines stand alone: a trace whose packet the filter leaves out goes too.
            Mode::Raw if self.leaves_out(&trace) => Ok(()),
            Mode::Raw => self.raw_line(Shown::Trace(trace)),
            Mode::Paths => {
                self.pipeline.push_trace(trace);
                Ok(())
            }
            Mode::Quiet => Ok(()),
        }
    }

    fn leaves_out(&self, trace: &RuleTrace) -> bool {
        let (Some(filter), Some(packet)) = (&self.pipeline.filter, &trace.packet) else {
            return false;
        };
        !filter.matches_any([Form::of_packet(packet)])
    }

    /// The kernel lost events between these times (the ring buffer was full).
    pub fn lost_between(&mut self, from_ns: u64, to_ns: u64) {
        self.pipeline.mark_gap(from_ns, to_ns);
    }

    /// The display skipped `records` events from `from_ns` to `to_ns` (it was behind).
    pub fn not_shown(&mut self, records: u64, from_ns: u64, to_ns: u64) {
        self.stats.not_shown += records;
        self.pipeline.mark_gap(from_ns, to_ns);
    }

    /// Packets past --per-connection whose first hops the kernel emitted, not shown.
    pub fn folded(&self) -> u64 {
        self.pipeline.folded()
    }

    /// Packets shown as incomplete so far.
    pub fn incomplete_packets(&self) -> u64 {
        self.pipeline.incomplete_packets()
    }

    /// What the memory limits cost so far.
    pub fn evictions(&self) -> Evictions {
        self.pipeline.evictions()
    }

    /// Writes the packets that are finished by `now_ns` (kernel monotonic clock).
    pub fn tick(&mut self, now_ns: u64) -> io::Result<()> {
        self.render_raw()?;
        self.deliver(Some(now_ns))?;
        self.write_rendered(false)?;
        self.stream.writer.flush()
    }

    /// Writes everything still open, and explanations of connections left incomplete.
    pub fn finish(&mut self) -> io::Result<()> {
        self.render_raw()?;
        self.deliver(None)?;
        self.write_rendered(true)?;
        if let Some(summary) = &self.summary {
            self.stream.summary_rows(summary)?;
        }
        self.stream.writer.flush()
    }

    /// Runs the pipeline (up to `now_ns`, or to the end), hands each item to the summary and
    /// the drawing, and has the stream's and the capture file's bytes rendered.
    fn deliver(&mut self, now_ns: Option<u64>) -> io::Result<()> {
        let left_out = self.pipeline.filtered_out;
        let produced = match now_ns {
            Some(now_ns) => self.pipeline.tick(now_ns),
            None => self.pipeline.finish(),
        };
        self.stats.filtered_out += self.pipeline.filtered_out - left_out;
        let topology = self.pipeline.topology();
        for item in &produced {
            if matches!(item, Produced::Packet(_)) {
                self.stats.packets += 1;
            }
            let sinks: [Option<&mut dyn Sink>; 2] = [
                self.summary.as_mut().map(|s| s as &mut dyn Sink),
                self.drawing.as_mut().map(|s| s as &mut dyn Sink),
            ];
            for sink in sinks.into_iter().flatten() {
                sink.take(&item.item(), topology)?;
            }
        }
        if !self.stream.on && self.pcapng.is_none() {
            return Ok(());
        }
        let mut produced = produced.into_iter().map(Shown::Item).peekable();
        while produced.peek().is_some() {
            let batch: Vec<Shown> = produced.by_ref().take(BATCH_ITEMS).collect();
            self.render(batch)?;
        }
        Ok(())
    }

    /// Queues a --raw line, rendering the queue once it makes a batch.
    fn raw_line(&mut self, line: Shown) -> io::Result<()> {
        self.raw.push(line);
        if self.raw.len() >= BATCH_LINES {
            self.render_raw()?;
        }
        Ok(())
    }

    fn render_raw(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let raw = std::mem::take(&mut self.raw);
        self.render(raw)
    }

    /// Renders `shown` here or on a render thread; writes what is rendered, in order.
    fn render(&mut self, shown: Vec<Shown>) -> io::Result<()> {
        let batch = Batch {
            topology: self.pipeline.shared_topology(),
            stream: self.stream.on.then_some(self.stream.format),
            frames: self.pcapng.as_ref().map(PcapngWriter::clock_offset_ns),
            first_ts: self.first_raw_ts,
            shown,
            buffers: self.spare.pop().unwrap_or_default(),
        };
        let Some(workers) = self
            .workers
            .as_mut()
            .filter(|w| w.in_flight() > 0 || batch.shown.len() >= INLINE_BELOW)
        else {
            return self.write(batch.render());
        };
        workers.send(batch);
        let limit = IN_FLIGHT_PER_THREAD * workers.threads() as u64;
        self.write_rendered(false)?;
        while self.workers.as_ref().is_some_and(|w| w.in_flight() > limit) {
            self.write_next(true)?;
        }
        Ok(())
    }

    /// Writes the rendered batches that are back, in order (with `wait`: all of them).
    fn write_rendered(&mut self, wait: bool) -> io::Result<()> {
        while self.write_next(wait)? {}
        Ok(())
    }

    /// Writes the next rendered batch, if it is back (with `wait`: once it is); whether there
    /// was one.
    fn write_next(&mut self, wait: bool) -> io::Result<bool> {
        match self.workers.as_mut().and_then(|w| w.next(wait)) {
            Some(rendered) => self.write(rendered).map(|()| true),
            None => Ok(false),
        }
    }

    /// A rendered batch to the stream and the capture file.
    fn write(&mut self, mut rendered: Rendered) -> io::Result<()> {
        if self.stream.on {
            self.stream.writer.write_all(&rendered.buffers.stream)?;
        }
        if let Some(pcapng) = &mut self.pcapng {
            let packets = rendered.shown.iter().filter_map(|shown| match shown {
                Shown::Item(Produced::Packet(path)) => Some(path),
                _ => None,
            });
            pcapng.write_frames(packets, &mut rendered.buffers.frames, &rendered.topology)?;
        }
        if self.spare.len() <= IN_FLIGHT_PER_THREAD as usize * 4 {
            rendered.buffers.clear();
            self.spare.push(rendered.buffers);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::tests_support::seed_paths;
    use crate::render::paths;

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
        output.pipeline.note_shared_rules(&mut first);
        assert_eq!(first.rules_as, None, "traced itself");
        let mut later = paths[0].clone();
        later.id = 7;
        output.pipeline.note_shared_rules(&mut later);
        assert_eq!(later.rules_as, Some(first.id));
        let mut reply = paths[1].clone();
        output.pipeline.note_shared_rules(&mut reply);
        assert_eq!(
            reply.rules_as, None,
            "no traced packet in the reply's direction"
        );
        let block =
            paths::packet_block(&later, output.pipeline.topology(), &Style { color: false });
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
        all.pipeline.note_shared_rules(&mut first);
        all.pipeline.note_shared_rules(&mut later.clone());
        let mut again = paths[0].clone();
        all.pipeline.note_shared_rules(&mut again);
        assert_eq!(again.rules_as, None);
    }
}
