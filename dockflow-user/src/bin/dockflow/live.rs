//! A live run: resolve the target, attach the probes, stream the packets' paths until told to
//! stop, then say what was seen and what was not.

use std::{
    collections::VecDeque,
    io::{IsTerminal as _, Write},
    pin::Pin,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Result, bail};
use dockflow::{
    decode::Decoder,
    drain::{self, Drain, Drained, Note},
    filter::Filter,
    follow::Follower,
    kernel::{self, btf::KernelBtf, monotonic_now},
    model::PointNames as _,
    nftrace::{TraceBatch, TraceRules},
    output::{
        Output,
        source::{self, Input, Source},
    },
    probes::{LoadOptions, ProbeError, Probes, RuleTraces, Verdicts},
    record::{Header, Origin, Recorder},
    watch::{self, Target, Watch},
};
use dockflow_common::PLAIN_FREES;
use tokio::{
    runtime::Runtime,
    signal::unix::{Signal, SignalKind, signal},
    sync::mpsc,
    time::{Interval, Sleep},
};

use crate::cli::{Cli, print_summary, reached_count, report_evictions, write_svg};

/// Resolves the target, attaches the probes and streams until a signal, --duration or --count.
pub fn run(cli: &Cli, filter: Option<Filter>) -> Result<()> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "dockflow must run as root (it loads eBPF programs and reads other network namespaces)"
        );
    }
    kernel::capabilities::check()?;
    let target = watch_of(cli)?.resolve()?;
    let btf = KernelBtf::load(&["nf_conntrack", "bridge", "br_netfilter"])?;
    let offsets = kernel::resolve_offsets(&btf)?;
    let decoder = decoder(&btf, cli.pcapng.is_some())?;
    // Packet bytes cost ring-buffer space: captured only where a file keeps them.
    let snaplen = if cli.record.is_some() || cli.pcapng.is_some() {
        cli.snaplen
    } else {
        0
    };
    let topology = watch::topology_of(&target)?;
    let options = LoadOptions {
        ring_bytes: cli.ring_size,
        per_connection: cli.per_connection().unwrap_or(0),
        debug_kernel: cli.debug_kernel,
        snaplen,
        expression: filter.as_ref().map(Filter::possible),
        trace_rules: cli.trace_rules,
        empty: cli.empty_programs,
        plain_frees: plain_frees(&decoder),
    };
    let origin = origin(cli, &target, snaplen);
    let mut probes = Probes::attach(&target, &offsets, &cli.families(), options)?;
    report_attachments(&probes, &target);
    let recorder = match &cli.record {
        Some(path) => {
            let header = Header {
                target: target.label.clone(),
                record_size: options.record_size(),
                decoder: decoder.clone(),
                topology: topology.clone(),
                origin: origin.clone(),
            };
            Some(Recorder::create(path, &header)?)
        }
        None => None,
    };
    // The filter's verdicts on connections go back to the kernel, which then drops the events
    // of a left-out connection's later packets itself.
    let verdicts = filter
        .clone()
        .map(|filter| probes.take_verdicts(filter))
        .transpose()?;
    let mut output = cli
        .output(topology, filter, cli.per_connection())
        .with_shared_rules(cli.trace_rules == TraceRules::First);
    if let Some(pcapng) = cli.pcapng(&target.label, &origin)? {
        output = output.with_pcapng(pcapng);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Signals, timers and the display queue belong to this runtime.
    let _context = runtime.enter();
    // The ring buffer is emptied on a thread of its own; the display gets what it has time for.
    let (to_display, drained) = tokio::sync::mpsc::channel(drain::QUEUE_BATCHES);
    let drain = Drain::start(
        probes.take_events()?,
        options.record_size(),
        recorder,
        output.shows_events().then_some(to_display),
    );
    let mut source = Live {
        runtime: &runtime,
        cli,
        rule_traces: probes.take_rule_traces(),
        follower: Follower::new(watch_of(cli)?, target.clone()),
        probes,
        drain,
        drained,
        decoder,
        record_size: options.record_size(),
        verdicts,
        stops: Stops::new(cli.duration)?,
        tick: tokio::time::interval(Duration::from_millis(50)),
        status: StatusLine::new(),
        // --summary on a terminal: the table again every few seconds while it runs.
        table_due: (cli.summary && std::io::stderr().is_terminal())
            .then(|| Instant::now() + TABLE_EVERY),
        losses: LossCheck {
            lost: 0,
            checked_at: monotonic_now(),
        },
        showing: output.shows_events(),
        traces_dropped: 0,
        done: false,
        counted: false,
        ended: false,
        pending: VecDeque::new(),
        latest_ts: 0,
    };
    eprintln!("dockflow: streaming (Ctrl-C to stop)");
    source::feed(&mut source, &mut output, |output| {
        reached_count(cli, output)
    })?;
    finish(cli, source, &mut output)
}

/// The end of a live run: the drain thread's last records, the kernel's losses, the output's
/// and the recording's ends, and the closing lines.
fn finish(cli: &Cli, source: Live, output: &mut Output<Box<dyn Write>>) -> Result<()> {
    let Live {
        drain,
        mut probes,
        follower,
        verdicts,
        traces_dropped,
        mut losses,
        status,
        ..
    } = source;
    let (drained, recorder) = drain.join()?;
    if let Some(input) = losses.check(&probes) {
        output.take(input)?;
    }
    probes.print_kernel_log();
    if !output.shows_events() {
        // Nothing was decoded: the count is what went to the recording.
        output.stats.events = drained;
    }
    output.finish()?;
    let lost = probes.lost();
    output.finish_pcapng(&lost)?;
    if let Some(mut recorder) = recorder {
        recorder.record_losses(&lost)?;
        recorder.finish()?;
    }
    status.clear();
    // The target as it is now: containers may have come and gone since the start.
    report_summary(
        cli,
        follower.current(),
        &probes,
        verdicts.as_ref(),
        output,
        traces_dropped,
    );
    print_summary(output);
    write_svg(cli, output)?;
    drop(probes);
    Ok(())
}

/// The run's circumstances, as a recording's header and a capture file's section state them.
fn origin(cli: &Cli, target: &Target, snaplen: u32) -> Origin {
    let origin = Origin {
        networks: target.networks.clone(),
        kernel: kernel::kernel_release(),
        clock_offset_ns: kernel::clock_offset_now(),
        started_unix_s: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
        snaplen,
        filter: cli.filter_text(),
        trace_rules: Some(cli.trace_rules),
        per_connection: cli.per_connection(),
        node: None,
        node_address: None,
    };
    with_node(origin, cli.node.as_deref())
}

/// A live run as a [`Source`]: the drain thread's batches, the nftables trace reader, the
/// clock, the Docker watcher and the signals that end it.
struct Live<'a> {
    runtime: &'a Runtime,
    cli: &'a Cli,
    probes: Probes,
    drain: Drain,
    /// Batches from the drain thread (closed when nothing is shown).
    drained: mpsc::Receiver<Drained>,
    decoder: Decoder,
    record_size: usize,
    verdicts: Option<Verdicts>,
    rule_traces: Option<RuleTraces>,
    stops: Stops,
    tick: Interval,
    status: StatusLine,
    table_due: Option<Instant>,
    follower: Follower,
    losses: LossCheck,
    showing: bool,
    traces_dropped: u64,
    /// The run is ending: the drain thread empties the ring a last time and closes the queue.
    done: bool,
    /// --count was reached: what the queue still holds is not shown.
    counted: bool,
    /// The queue is closed and the last traces are taken: nothing more will come.
    ended: bool,
    pending: VecDeque<Input>,
    /// The time of the latest event decoded.
    latest_ts: u64,
}

impl Source for Live<'_> {
    fn next_input(&mut self, shown: &Output<impl Write>) -> Result<Option<Input>> {
        loop {
            if let Some(input) = self.pending.pop_front() {
                return Ok(Some(input));
            }
            if self.ended {
                return Ok(None);
            }
            let runtime = self.runtime;
            runtime.block_on(self.step(shown))?;
        }
    }

    fn stop(&mut self) {
        self.pending.clear();
        self.counted = true;
        self.end_soon();
    }
}

impl Live<'_> {
    /// Waits for the next thing to happen and queues the inputs it makes.
    async fn step(&mut self, shown: &Output<impl Write>) -> Result<()> {
        if self.done && !self.showing {
            return self.take_last_traces().await;
        }
        tokio::select! {
            batch = self.drained.recv(), if self.showing => match batch {
                Some(batch) => self.take_batch(batch),
                None => return self.take_last_traces().await,
            },
            Some(batch) = next_traces(&mut self.rule_traces), if !self.done => {
                self.take_traces(batch);
            }
            _ = self.tick.tick(), if !self.done => self.on_tick(shown)?,
            _ = self.stops.next(), if !self.done => self.end_soon(),
        }
        Ok(())
    }

    /// Asks the drain thread to empty the ring a last time and close the queue.
    fn end_soon(&mut self) {
        self.done = true;
        self.drain.request_stop();
    }

    /// Decodes a batch from the drain thread, or notes what it skipped.
    fn take_batch(&mut self, batch: Drained) {
        if self.counted {
            return;
        }
        match batch {
            Drained::Records(records) => {
                for record in records.chunks_exact(self.record_size) {
                    match self.decoder.decode(record) {
                        Ok(event) => {
                            if let Some(verdicts) = self.verdicts.as_mut() {
                                verdicts.learn(&event);
                            }
                            self.latest_ts = self.latest_ts.max(event.ts_ns);
                            self.pending.push_back(Input::Event(event));
                        }
                        Err(e) => eprintln!("dockflow: skipped a malformed event: {e}"),
                    }
                }
            }
            Drained::Skipped {
                records,
                from_ns,
                to_ns,
            } => self.pending.push_back(Input::NotShown {
                records,
                from_ns,
                to_ns,
            }),
        }
        if !self.done {
            // While batches are waiting, the clock is ahead of them: packets are finished by
            // the time of the last event read, so none is cut off before its later hops.
            let now = if self.drained.is_empty() {
                monotonic_now()
            } else {
                self.latest_ts
            };
            self.pending.push_back(Input::Tick(now));
        }
    }

    /// The clock's regular round: losses, the kernel's log, the clock itself, Docker's
    /// changes, a failed recording, the status line and the --summary table.
    fn on_tick(&mut self, shown: &Output<impl Write>) -> Result<()> {
        // Losses in the kernel: the packets open around them are incomplete.
        self.pending.extend(self.losses.check(&self.probes));
        self.probes.print_kernel_log();
        if self.drained.is_empty() {
            self.pending.push_back(Input::Tick(monotonic_now()));
        }
        if let Some(topology) = self.follower.check(&mut self.probes)? {
            self.drain.record(Note::Topology(topology.clone()));
            self.pending.push_back(Input::Topology(topology));
        }
        // Writing the recording failed: join says why.
        if self.drain.has_ended() {
            self.done = true;
        }
        self.status.show(shown, &self.probes);
        if let Some(due) = self
            .table_due
            .as_mut()
            .filter(|due| **due <= Instant::now())
        {
            *due += TABLE_EVERY;
            self.status.clear();
            print_summary(shown);
        }
        Ok(())
    }

    /// Hands a batch of rule traces to the recording and the output.
    fn take_traces(&mut self, batch: TraceBatch) {
        self.traces_dropped += batch.dropped;
        for trace in batch.traces {
            if self.cli.record.is_some() {
                self.drain.record(Note::Trace(trace.clone()));
            }
            self.pending.push_back(Input::Trace(trace));
        }
    }

    /// Takes the trace messages that arrive until the reader has been silent for
    /// [`TRACES_SETTLE`] (at most [`TRACES_WAIT_MAX`]): a run stopped right after its last
    /// packet still names that packet's rules. Then the source has ended.
    async fn take_last_traces(&mut self) -> Result<()> {
        self.ended = true;
        let Some(mut traces) = self.rule_traces.take() else {
            return Ok(());
        };
        let until = tokio::time::Instant::now() + TRACES_WAIT_MAX;
        while let Ok(Some(batch)) = tokio::time::timeout_at(
            until.min(tokio::time::Instant::now() + TRACES_SETTLE),
            traces.recv(),
        )
        .await
        {
            self.take_traces(batch);
        }
        Ok(())
    }
}

/// What ends a run besides --count: Ctrl-C, SIGTERM, --duration.
struct Stops {
    interrupt: Signal,
    terminate: Signal,
    deadline: Pin<Box<Sleep>>,
}

impl Stops {
    fn new(duration: Option<Duration>) -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            deadline: Box::pin(tokio::time::sleep(duration.unwrap_or(Duration::MAX / 4))),
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.deadline.as_mut() => {}
        }
    }
}

/// The node the run is on: --node, else the engine's name with its swarm address (nodes
/// of a cluster may share a host name); none without a reachable engine.
fn with_node(origin: Origin, named: Option<&str>) -> Origin {
    let engine = dockflow::watch::docker::Docker::from_env().and_then(|d| d.node());
    let address = engine.as_ref().ok().and_then(|(_, address)| *address);
    let node = match (named, &engine) {
        (Some(name), _) => Some(name.to_string()),
        (None, Ok((name, Some(address)))) => Some(format!("{name} {address}")),
        (None, Ok((name, None))) if !name.is_empty() => Some(name.clone()),
        _ => None,
    };
    Origin {
        node,
        node_address: address,
        ..origin
    }
}

/// How often --summary reprints its table on a terminal.
const TABLE_EVERY: Duration = Duration::from_secs(5);

/// What the command line asks to watch.
fn watch_of(cli: &Cli) -> Result<Watch> {
    Ok(if !cli.container.is_empty() {
        Watch::Containers(cli.container.clone())
    } else if let Some(network) = &cli.network {
        Watch::Network(network.clone())
    } else if let Some(service) = &cli.service {
        Watch::Service(service.clone())
    } else if let Some(netns) = &cli.netns {
        Watch::Netns(netns.clone())
    } else if !cli.iface.is_empty() {
        Watch::Interfaces(cli.iface.clone())
    } else {
        bail!(
            "say what to watch: --container NAME, --network NAME, --service NAME, --netns NS, --iface IFACE or --replay FILE (see --help)"
        )
    })
}

/// The drop reasons that are no packet's own drop on this kernel: NOT_SPECIFIED (unnamed
/// frees, clones among them), OTHERHOST (a flooded copy for another host), and 0 (every free
/// on a kernel without reasons).
fn plain_frees(decoder: &Decoder) -> [u32; PLAIN_FREES] {
    let code = |name: &str| {
        decoder
            .drop_reasons
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map_or(u32::MAX, |(code, _)| *code)
    };
    [
        code("SKB_DROP_REASON_NOT_SPECIFIED"),
        code("SKB_DROP_REASON_OTHERHOST"),
        0,
    ]
}

/// What decoding needs from this kernel: drop reason names and hook continuation symbols;
/// `keep_bytes` when the packet bytes are written out (--pcapng).
fn decoder(btf: &KernelBtf, keep_bytes: bool) -> Result<Decoder> {
    Ok(Decoder {
        drop_reasons: btf.enum_names("skb_drop_reason").unwrap_or_default(),
        symbols: kernel::load_symbols(is_hook_continuation)?,
        keep_bytes,
    })
}

/// The closing lines on stderr: what was seen, and everything that was not shown or lost.
fn report_summary(
    cli: &Cli,
    target: &Target,
    probes: &Probes,
    verdicts: Option<&Verdicts>,
    output: &Output<impl Write>,
    traces_dropped: u64,
) {
    let lost: u64 = probes.lost().iter().map(|(_, n)| n).sum();
    eprintln!(
        "dockflow: {} packets, {} events from {}, {lost} lost",
        output.stats.packets, output.stats.events, target.label
    );
    report_evictions(output, cli);
    let kernel_left_out = verdicts.map_or(0, Verdicts::left_out_in_kernel);
    if kernel_left_out > 0 {
        eprintln!("dockflow: {kernel_left_out} events left out by the filter in the kernel");
    }
    if output.stats.not_shown > 0 {
        eprintln!(
            "dockflow: {} events not shown: the display fell behind the kernel{}",
            output.stats.not_shown,
            if cli.record.is_some() {
                " (the recording has them)"
            } else {
                ""
            }
        );
    }
    let (held_events, held_packets) = probes.held_back();
    if held_packets > 0 || held_events > 0 {
        eprintln!(
            "dockflow: {held_events} events held back in the kernel, of about {held_packets} packets past the first {} of their connection (--per-connection; `all` shows every packet)",
            cli.per_connection().unwrap_or(0)
        );
    }
    if output.folded() > 0 {
        eprintln!(
            "dockflow: {} more packets of connections past --per-connection not shown (hops the kernel emitted before it could tell)",
            output.folded()
        );
    }
    if traces_dropped > 0 {
        eprintln!(
            "dockflow: {traces_dropped} nftables trace messages dropped: dockflow fell behind them"
        );
    }
    if output.incomplete_packets() > 0 {
        eprintln!(
            "dockflow: {} packets marked incomplete (events lost on their way)",
            output.incomplete_packets()
        );
    }
    for (point, lost) in probes.lost() {
        eprintln!(
            "dockflow: lost {lost} events at {} (ring buffer full)",
            point.attach_point()
        );
    }
}

/// How long the trace reader may stay silent before the last trace is taken to be in.
const TRACES_SETTLE: Duration = Duration::from_millis(100);
/// The longest the end of a run waits for trace messages.
const TRACES_WAIT_MAX: Duration = Duration::from_secs(1);

/// The next batch of nftables traces; never ready when tracing nftables is off.
async fn next_traces(traces: &mut Option<RuleTraces>) -> Option<TraceBatch> {
    match traces {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The kernel's loss counters as last read.
struct LossCheck {
    lost: u64,
    checked_at: u64,
}

impl LossCheck {
    /// Reads the kernel's loss counters; events lost since the last reading make the packets
    /// on their way in that time incomplete.
    fn check(&mut self, probes: &Probes) -> Option<Input> {
        let lost: u64 = probes.lost().iter().map(|(_, n)| n).sum();
        let now = monotonic_now();
        let from_ns = self.checked_at;
        self.checked_at = now;
        (lost > self.lost).then(|| {
            self.lost = lost;
            Input::LostBetween {
                from_ns,
                to_ns: now,
            }
        })
    }
}

/// A one-line status on stderr while the stream goes elsewhere (a file, a pipe).
struct StatusLine {
    enabled: bool,
}

impl StatusLine {
    fn new() -> Self {
        // With stdout on the same terminal the blocks would tear the status line apart.
        Self {
            enabled: std::io::stderr().is_terminal() && !std::io::stdout().is_terminal(),
        }
    }

    fn show(&self, output: &Output<impl Write>, probes: &Probes) {
        if self.enabled {
            let lost: u64 = probes.lost().iter().map(|(_, n)| n).sum();
            eprint!(
                "\r\x1b[2K[{} packets · {} events · {lost} lost]",
                output.stats.packets, output.stats.events
            );
        }
    }

    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[2K");
        }
    }
}

fn report_attachments(probes: &Probes, target: &Target) {
    eprintln!("dockflow: watching {}", target.label);
    for note in target.notes.iter().chain(&probes.notes) {
        eprintln!("  note      {note}");
    }
    for a in &probes.attachments {
        match &a.result {
            Ok(()) => eprintln!("  attached  {}", a.point),
            Err(e @ ProbeError::Skipped(_)) => eprintln!("  skipped   {}: {e}", a.point),
            Err(e @ ProbeError::Unsupported(_)) => eprintln!("  missing   {}: {e}", a.point),
            Err(e @ ProbeError::Refused(_)) => eprintln!("  refused   {}: {e}", a.point),
        }
    }
}

/// Functions a netfilter hook continues into; br_nf_* ones mean br_netfilter is running the hook.
fn is_hook_continuation(name: &str) -> bool {
    name.starts_with("br_nf_")
        || name.ends_with("_finish")
        || name.contains("xmit")
        || name.contains("okfn")
}
