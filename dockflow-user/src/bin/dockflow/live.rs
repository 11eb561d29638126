//! A live run: resolve the target, attach the probes, stream the packets' paths until told to
//! stop, then say what was seen and what was not.

use std::{
    io::{IsTerminal as _, Write},
    time::{Duration, SystemTime},
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
    output::Output,
    probes::{LoadOptions, ProbeError, Probes, RuleTraces, Verdicts},
    record::{Header, Origin, Recorder},
    watch::{self, Target, Watch},
};
use dockflow_common::PLAIN_FREES;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{Cli, print_summary, reached_count, report_evictions, write_svg};

/// Resolves the target, attaches the probes and streams until a signal, --duration or --count.
pub async fn run(cli: &Cli, filter: Option<Filter>) -> Result<()> {
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
    };
    let mut probes = Probes::attach(&target, &offsets, &cli.families(), options)?;
    report_attachments(&probes, &target);
    let mut rule_traces = probes.take_rule_traces();
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
    let mut verdicts = filter
        .clone()
        .map(|filter| probes.take_verdicts(filter))
        .transpose()?;
    let mut output = cli
        .output(topology, filter, cli.per_connection())
        .with_shared_rules(cli.trace_rules == TraceRules::First);
    if let Some(pcapng) = cli.pcapng(&target.label, &origin)? {
        output = output.with_pcapng(pcapng);
    }
    // The ring buffer is emptied on a thread of its own; the display gets what it has time for.
    let (to_display, mut drained) = tokio::sync::mpsc::channel(drain::QUEUE_BATCHES);
    let drain = Drain::start(
        probes.take_events()?,
        options.record_size(),
        recorder,
        output.shows_events().then_some(to_display),
    );
    eprintln!("dockflow: streaming (Ctrl-C to stop)");

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(cli.duration.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let status = StatusLine::new();
    // --summary on a terminal: the table again every few seconds while it runs.
    let mut table_due = (cli.summary && std::io::stderr().is_terminal())
        .then(|| std::time::Instant::now() + TABLE_EVERY);
    let mut follower = Follower::new(watch_of(cli)?, target.clone());
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
                show(batch, &decoder, options.record_size(), &mut output, verdicts.as_mut())?;
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
                traces_dropped += take_traces(batch, cli, &drain, &mut output)?;
            }
            _ = tick.tick(), if !done => {
                // Losses in the kernel: the packets open around them are incomplete.
                note_losses(&probes, &mut output, &mut losses);
                probes.print_kernel_log();
                if drained.is_empty() {
                    output.tick(monotonic_now())?;
                }
                if let Some(topology) = follower.check(&mut probes)? {
                    drain.record(Note::Topology(topology.clone()));
                    output.set_topology(topology);
                }
                // Writing the recording failed: join says why.
                if drain.has_ended() {
                    done = true;
                }
                if reached_count(cli, &output) {
                    done = true;
                    drain.request_stop();
                }
                status.show(&output, &probes);
                if let Some(due) = table_due.as_mut().filter(|due| **due <= std::time::Instant::now()) {
                    *due += TABLE_EVERY;
                    status.clear();
                    print_summary(&output);
                }
            }
            _ = interrupt.recv(), if !done => { done = true; drain.request_stop(); }
            _ = terminate.recv(), if !done => { done = true; drain.request_stop(); }
            _ = &mut deadline, if !done => { done = true; drain.request_stop(); }
        }
        if done && !showing {
            break;
        }
    }
    // The trace messages of the last packets may still be on their way from the reader thread.
    if let Some(traces) = rule_traces.as_mut() {
        traces_dropped += take_last_traces(traces, cli, &drain, &mut output).await?;
    }
    let (drained, recorder) = drain.join()?;
    note_losses(&probes, &mut output, &mut losses);
    probes.print_kernel_log();
    if !showing {
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
        &output,
        traces_dropped,
    );
    print_summary(&output);
    write_svg(cli, &output)?;
    drop(probes);
    Ok(())
}

/// How often --summary reprints its table on a terminal.
const TABLE_EVERY: Duration = Duration::from_secs(5);

/// What the command line asks to watch.
fn watch_of(cli: &Cli) -> Result<Watch> {
    Ok(if !cli.container.is_empty() {
        Watch::Containers(cli.container.clone())
    } else if let Some(network) = &cli.network {
        Watch::Network(network.clone())
    } else if let Some(netns) = &cli.netns {
        Watch::Netns(netns.clone())
    } else if !cli.iface.is_empty() {
        Watch::Interfaces(cli.iface.clone())
    } else {
        bail!(
            "say what to watch: --container NAME, --network NAME, --netns NS, --iface IFACE or --replay FILE (see --help)"
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

/// The next batch of nftables traces; never ready when tracing nftables is off.
/// How long the trace reader may stay silent before the last trace is taken to be in.
const TRACES_SETTLE: Duration = Duration::from_millis(100);
/// The longest the end of a run waits for trace messages.
const TRACES_WAIT_MAX: Duration = Duration::from_secs(1);

/// Takes the trace messages that arrive until the reader has been silent for [`TRACES_SETTLE`]
/// (at most [`TRACES_WAIT_MAX`]): a run stopped right after its last packet still names that
/// packet's rules. Returns the count the reader dropped.
async fn take_last_traces(
    traces: &mut RuleTraces,
    cli: &Cli,
    drain: &Drain,
    output: &mut Output<Box<dyn Write>>,
) -> Result<u64> {
    let mut dropped = 0;
    let until = tokio::time::Instant::now() + TRACES_WAIT_MAX;
    while let Ok(Some(batch)) = tokio::time::timeout_at(
        until.min(tokio::time::Instant::now() + TRACES_SETTLE),
        traces.recv(),
    )
    .await
    {
        dropped += take_traces(batch, cli, drain, output)?;
    }
    Ok(dropped)
}

/// Hands a batch of rule traces to the recording and the output; returns how many messages
/// the reader had to drop before it.
fn take_traces(
    batch: TraceBatch,
    cli: &Cli,
    drain: &Drain,
    output: &mut Output<Box<dyn Write>>,
) -> Result<u64> {
    for trace in batch.traces {
        if cli.record.is_some() {
            drain.record(Note::Trace(trace.clone()));
        }
        output.trace(trace)?;
    }
    Ok(batch.dropped)
}

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
fn show(
    batch: Drained,
    decoder: &Decoder,
    record_size: usize,
    output: &mut Output<impl Write>,
    mut verdicts: Option<&mut Verdicts>,
) -> Result<()> {
    match batch {
        Drained::Records(records) => {
            for record in records.chunks_exact(record_size) {
                match decoder.decode(record) {
                    Ok(event) => {
                        if let Some(verdicts) = verdicts.as_deref_mut() {
                            verdicts.learn(&event);
                        }
                        output.event(event)?
                    }
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
