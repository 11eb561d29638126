//! The `dockflow` command: resolve a target, attach probes, stream the packets' paths; or replay
//! a recording.

use std::{
    io::{IsTerminal as _, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use dockflow::{
    decode::Decoder,
    drain::{self, Drain, Drained},
    follow::Follower,
    kernel::{self, btf::KernelBtf, monotonic_now},
    model::topology::Topology,
    nftrace::TraceBatch,
    output::{Mode, Output},
    path::correlate::Limits,
    probes::{Family, LoadOptions, ProbeError, Probes, RuleTraces},
    record::{Header, ReadError, Record, Recorder, Replay},
    render::Style,
    watch::{self, Target},
};
use dockflow_common::PACKET_EVENT_SIZE;
use tokio::signal::unix::{SignalKind, signal};

/// Show where a Docker container's packets go, hop by hop, live: which hops the bridge (L2)
/// handles and which the IP stack (L3), NAT rewrites, conntrack state, drops with their reason,
/// and a plain-language account of each connection's request and reply.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:
  dockflow --container radius                  follow a container's packets, explained
  dockflow --container radius --raw            one line per probe event instead
  dockflow --container radius --json           one JSON object per packet/explanation
  dockflow --container radius --record r.dfl   also write the events to a file
  dockflow --replay r.dfl                      show a recording again (no root needed)
  dockflow --netns dockflow-ext                follow a network namespace's packets
  dockflow --iface docker1 --duration 10       watch host interfaces, no container

Layers: L2 = the bridge, L3 = the host's IP stack, L3* = an IP netfilter hook that
br_netfilter runs for a frame still inside the bridge, dev = a device receives/sends."
)]
struct Cli {
    /// Container (name or id) whose traffic to follow.
    #[arg(long, group = "target")]
    container: Option<String>,
    /// Network namespace (name under /run/netns, or a path like /proc/PID/ns/net) whose
    /// traffic to follow, for targets outside Docker.
    #[arg(long, group = "target")]
    netns: Option<String>,
    /// Host interface(s) to watch instead of a container.
    #[arg(long, num_args = 1.., group = "target")]
    iface: Vec<String>,
    /// Show a recording made with --record instead of tracing.
    #[arg(long, group = "target", conflicts_with_all = ["record", "probes", "duration", "debug_kernel"])]
    replay: Option<PathBuf>,
    /// JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// One line per probe event instead of one block per packet.
    #[arg(long)]
    raw: bool,
    /// Stop after this many packets (events with --raw).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Stop after this many seconds (a positive number, fractions allowed).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Probe families to attach (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "tc,netfilter,drops,devices,bridge,nftables"
    )]
    probes: Vec<Family>,
    /// Also write every event to this file (see --replay).
    #[arg(long)]
    record: Option<PathBuf>,
    /// Print nothing but the summary; with --record, events go to the file undecoded (the
    /// fastest way to capture a busy target).
    #[arg(long, short)]
    quiet: bool,
    /// Size of the kernel's event ring buffer in MiB, or KiB with a K suffix (a power of two).
    /// The default holds about 100 ms of events at 2 million events/s, so a busy moment does
    /// not overflow it.
    #[arg(long, default_value = "64", allow_negative_numbers = true, value_parser = parse_ring_size)]
    ring_size: u32,
    /// Show the first N packets of each connection in full and only count the rest. Decided
    /// in the kernel, so a busy connection costs the ring buffer nothing once it was shown.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    per_connection: Option<u32>,
    /// Packets followed at once; past this the oldest is shown early (and counted). Each holds
    /// a few KiB while open.
    #[arg(
        long,
        default_value = "16384",
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_open_packets: u64,
    /// Print the kernel programs' own diagnostics on stderr: why the filter kept or skipped
    /// each frame at tc. Costs nothing when off.
    #[arg(long)]
    debug_kernel: bool,
    /// Connections remembered to pair requests with replies; past this the oldest is
    /// forgotten (and counted).
    #[arg(
        long,
        default_value = "65536",
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_connections: u64,
}

impl Cli {
    fn limits(&self) -> Limits {
        Limits {
            open_packets: self.max_open_packets as usize,
            connections: self.max_connections as usize,
            per_connection: self.per_connection,
        }
    }

    fn output<W: Write>(&self, topology: Topology, writer: W) -> Output<W> {
        Output::with_limits(
            mode(self),
            self.json,
            Style::for_stdout(),
            topology,
            writer,
            self.limits(),
        )
    }
}

/// --ring-size: MiB, or KiB with a K suffix ("256K"); a power of two from 4 KiB (a page) to
/// 1 GiB. Returned in bytes.
fn parse_ring_size(text: &str) -> Result<u32, String> {
    let (number, unit) = match text.strip_suffix(['K', 'k']) {
        Some(kib) => (kib, 10),
        None => (text.strip_suffix(['M', 'm']).unwrap_or(text), 20),
    };
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_shl(unit))
        .ok_or_else(|| format!("{text:?} is not a size in MiB (or KiB with a K suffix)"))?;
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(format!(
            "{text}: the ring buffer size must be a power of two from 4K to 1024 (MiB)"
        ));
    }
    Ok(bytes as u32)
}

/// Seconds for --duration: finite, positive and at most a year (clap reports anything else in
/// one line, exit status 2).
fn parse_seconds(text: &str) -> Result<Duration, String> {
    const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > MAX_SECONDS {
        return Err(format!(
            "{text} is not a duration dockflow can wait (more than 0, at most {MAX_SECONDS} seconds)"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match &cli.replay {
        Some(path) => replay(&cli, path),
        None => runtime.block_on(trace(&cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dockflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A reader that went away (`dockflow ... | head`) ends the run; it is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn mode(cli: &Cli) -> Mode {
    match (cli.quiet, cli.raw) {
        (true, _) => Mode::Quiet,
        (false, true) => Mode::Raw,
        (false, false) => Mode::Paths,
    }
}

fn reached_count(cli: &Cli, output: &Output<impl Write>) -> bool {
    let seen = if cli.raw {
        output.stats.events
    } else {
        output.stats.packets
    };
    cli.count.is_some_and(|n| seen >= n)
}

async fn trace(cli: &Cli) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "dockflow must run as root (it loads eBPF programs and reads other network namespaces)"
        );
    }
    let target = match (&cli.container, &cli.netns) {
        (Some(name), _) => watch::resolve_container(name)?,
        (_, Some(netns)) => watch::resolve_netns(netns)?,
        _ if !cli.iface.is_empty() => watch::resolve_interfaces(&cli.iface)?,
        _ => bail!(
            "say what to watch: --container NAME, --netns NS, --iface IFACE or --replay FILE (see --help)"
        ),
    };
    let btf = KernelBtf::load(&["nf_conntrack", "bridge", "br_netfilter"])?;
    let offsets = kernel::resolve_offsets(&btf)?;
    let decoder = Decoder {
        drop_reasons: btf.enum_names("skb_drop_reason").unwrap_or_default(),
        symbols: kernel::load_symbols(is_hook_continuation)?,
    };
    let topology = watch::topology_of(&target)?;
    let options = LoadOptions {
        ring_bytes: cli.ring_size,
        per_connection: cli.per_connection.unwrap_or(0),
        debug_kernel: cli.debug_kernel,
    };
    let mut probes = Probes::attach(&target, &offsets, &cli.probes, options)?;
    report_attachments(&probes, &target);
    let mut rule_traces = probes.take_rule_traces();
    let recorder = match &cli.record {
        Some(path) => {
            let header = Header {
                target: target.label.clone(),
                record_size: PACKET_EVENT_SIZE,
                decoder: decoder.clone(),
                topology: topology.clone(),
            };
            Some(Arc::new(Mutex::new(Recorder::create(path, &header)?)))
        }
        None => None,
    };
    let mut output = cli.output(topology, stdout());
    // The ring buffer is emptied on a thread of its own; the display gets what it has time for.
    let (to_display, mut drained) = tokio::sync::mpsc::channel(drain::QUEUE_BATCHES);
    let drain = Drain::start(
        probes.take_events()?,
        recorder.clone(),
        output.shows_events().then_some(to_display),
    );
    eprintln!("dockflow: streaming (Ctrl-C to stop)");

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(cli.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let status = StatusLine::new();
    let mut follower = Follower::new(cli.container.as_deref(), target.clone());
    let mut losses = LossCheck {
        lost: 0,
        checked_at: monotonic_now(),
    };
    let showing = output.shows_events();
    let mut traces_dropped = 0;
    // Set once the run should end: the drain thread then empties the ring a last time and
    // closes the queue, and the loop ends when the display has taken the rest.
    let mut done = false;
    loop {
        tokio::select! {
            batch = drained.recv(), if showing => {
                let Some(batch) = batch else { break };
                if done && reached_count(cli, &output) {
                    continue;
                }
                show(batch, &decoder, &mut output)?;
                if reached_count(cli, &output) {
                    done = true;
                    drain.request_stop();
                } else if !done {
                    // While batches are waiting, the clock is ahead of them: packets are
                    // finished by the time of the last event read, so none is cut off before
                    // its later hops.
                    let now = if drained.is_empty() { monotonic_now() } else { output.latest_ts() };
                    output.tick(now)?;
                }
            }
            Some(batch) = next_traces(&mut rule_traces), if !done => {
                traces_dropped += batch.dropped;
                for trace in batch.traces {
                    if let Some(recorder) = &recorder {
                        recorder.lock().expect("recorder lock").record_trace(&trace)?;
                    }
                    output.trace(trace)?;
                }
            }
            _ = tick.tick(), if !done => {
                // Losses in the kernel: the packets open around them are incomplete.
                note_losses(&probes, &mut output, &mut losses);
                probes.print_kernel_log();
                if drained.is_empty() {
                    output.tick(monotonic_now())?;
                }
                if let Some(topology) = follower.check(&mut probes)? {
                    if let Some(recorder) = &recorder {
                        recorder.lock().expect("recorder lock").record_topology(&topology)?;
                    }
                    output.set_topology(topology);
                }
                if reached_count(cli, &output) {
                    done = true;
                    drain.request_stop();
                }
                status.show(&output, &probes);
            }
            _ = interrupt.recv(), if !done => { done = true; drain.request_stop(); }
            _ = terminate.recv(), if !done => { done = true; drain.request_stop(); }
            _ = &mut deadline, if !done => { done = true; drain.request_stop(); }
        }
        if done && !showing {
            break;
        }
    }
    let drained = drain.join()?;
    note_losses(&probes, &mut output, &mut losses);
    probes.print_kernel_log();
    if !showing {
        // Nothing was decoded: the count is what went to the recording.
        output.stats.events = drained;
    }
    output.finish()?;
    if let Some(recorder) = recorder {
        let recorder = Arc::into_inner(recorder).expect("the drain thread has ended");
        recorder.into_inner().expect("recorder lock").finish()?;
    }
    status.clear();
    let lost: u64 = probes.lost().iter().map(|(_, n)| n).sum();
    eprintln!(
        "dockflow: {} packets, {} events from {}, {lost} lost",
        output.stats.packets, output.stats.events, target.label
    );
    report_evictions(&output, cli);
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
            "dockflow: {held_events} events held back in the kernel, of about {held_packets} packets past the first {} of their connection (--per-connection)",
            options.per_connection
        );
    }
    if output.folded() > 0 {
        eprintln!(
            "dockflow: {} more packets of connections past --per-connection not shown (their netfilter hooks and nftables trace, which the kernel does not hold back)",
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
    drop(probes);
    Ok(())
}

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

/// Reads the kernel's loss counters; events lost since the last reading make the packets on
/// their way in that time incomplete.
fn note_losses(probes: &Probes, output: &mut Output<impl Write>, check: &mut LossCheck) {
    let lost: u64 = probes.lost().iter().map(|(_, n)| n).sum();
    let now = monotonic_now();
    if lost > check.lost {
        output.lost_between(check.checked_at, now);
        check.lost = lost;
    }
    check.checked_at = now;
}

/// Decodes a batch from the drain thread into the output, or marks what it skipped.
fn show(batch: Drained, decoder: &Decoder, output: &mut Output<impl Write>) -> Result<()> {
    match batch {
        Drained::Records(records) => {
            for record in records.chunks_exact(PACKET_EVENT_SIZE) {
                match decoder.decode(record) {
                    Ok(event) => output.event(event)?,
                    Err(e) => eprintln!("dockflow: skipped a malformed event: {e}"),
                }
            }
        }
        Drained::Skipped {
            records,
            from_ns,
            to_ns,
        } => output.not_shown(records, from_ns, to_ns),
    }
    Ok(())
}

/// Standard output through a large buffer: one write per batch of lines, not per line (the
/// output flushes it on every tick).
fn stdout() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock())
}

/// How often replay finishes idle packets, in recorded time.
const REPLAY_TICK_NS: u64 = 10_000_000;

fn replay(cli: &Cli, path: &Path) -> Result<()> {
    let mut replay = Replay::open(path)?;
    let header = replay.header.clone();
    eprintln!("dockflow: replaying {} ({})", path.display(), header.target);
    let mut output = cli.output(header.topology.clone(), stdout());
    let mut cut = None;
    let mut next_tick = 0;
    loop {
        let record = match replay.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e @ ReadError::Cut { .. }) => {
                cut = Some(e);
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let ts = match record {
            Record::Kernel(bytes) => {
                let event = header
                    .decoder
                    .decode(&bytes)
                    .with_context(|| format!("{} holds an undecodable event", path.display()))?;
                let ts = event.ts_ns;
                output.event(event)?;
                ts
            }
            Record::Topology(topology) => {
                output.set_topology(*topology);
                continue;
            }
            Record::Trace(trace) => {
                let ts = trace.ts_ns;
                output.trace(trace)?;
                ts
            }
        };
        // Recorded time drives packet completion, as the clock did live; checked every few
        // milliseconds of it, not per record.
        if ts >= next_tick {
            output.tick(ts)?;
            next_tick = ts.saturating_add(REPLAY_TICK_NS);
        }
        if reached_count(cli, &output) {
            break;
        }
    }
    output.finish()?;
    eprintln!(
        "dockflow: {} packets, {} events from {}",
        output.stats.packets, output.stats.events, header.target
    );
    report_evictions(&output, cli);
    // What was whole has been shown; the cut itself is not an error of this run.
    if let Some(cut) = cut {
        eprintln!(
            "dockflow: {}: {cut}; everything before it was shown",
            path.display()
        );
    }
    Ok(())
}

/// What the memory limits cost, if anything.
fn report_evictions(output: &Output<impl Write>, cli: &Cli) {
    let evicted = output.evictions();
    if evicted.packets > 0 {
        eprintln!(
            "dockflow: {} packets shown before they were complete (more than --max-open-packets {} open at once)",
            evicted.packets, cli.max_open_packets
        );
    }
    if evicted.connections > 0 {
        eprintln!(
            "dockflow: {} connections forgotten (more than --max-connections {}); their later packets start new ones",
            evicted.connections, cli.max_connections
        );
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
    for note in &probes.notes {
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
