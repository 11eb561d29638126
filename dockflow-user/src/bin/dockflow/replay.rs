//! Replaying a recording: no root, no kernel; the recording carries what decoding needs.

use std::path::Path;

use anyhow::{Context as _, Result};
use dockflow::{
    filter::Filter,
    nftrace::TraceRules,
    record::{ReadError, Record, Replay},
};

use crate::cli::{Cli, print_summary, reached_count, report_evictions, write_svg};

/// How often replay finishes idle packets, in recorded time.
const REPLAY_TICK_NS: u64 = 10_000_000;

/// Shows a recording as the live run showed it, recorded time driving packet completion.
pub fn run(cli: &Cli, path: &Path, filter: Option<Filter>) -> Result<()> {
    let mut replay = Replay::open(path)?;
    let mut header = replay.header.clone();
    header.decoder.keep_bytes = cli.pcapng.is_some();
    eprintln!("dockflow: replaying {} ({})", path.display(), header.target);
    let filter = match (filter, header.origin.filter.take()) {
        // The kernel kept little else than what the recorded filter matches: show that.
        (None, Some(recorded)) => {
            eprintln!("dockflow: recorded with the filter `{recorded}`; showing what it matches");
            let parsed = Filter::parse(&recorded)
                .with_context(|| format!("{} holds a bad filter", path.display()))?;
            header.origin.filter = Some(recorded);
            Some(parsed)
        }
        (Some(given), recorded) => {
            if let Some(recorded) = recorded {
                eprintln!(
                    "dockflow: recorded with the filter `{recorded}`: what it left out is not in the recording"
                );
            }
            header.origin.filter = cli.filter_text();
            Some(given)
        }
        (None, None) => None,
    };
    let mut output = cli
        .output(
            header.topology.clone(),
            filter,
            header.origin.per_connection,
        )
        .with_shared_rules(header.origin.trace_rules == Some(TraceRules::First));
    if let Some(pcapng) = cli.pcapng(&header.target, &header.origin)? {
        output = output.with_pcapng(pcapng);
    }
    let mut lost = Vec::new();
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
            Record::Losses(counts) => {
                lost = counts;
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
    output.finish_pcapng(&lost)?;
    eprintln!(
        "dockflow: {} packets, {} events from {}",
        output.stats.packets, output.stats.events, header.target
    );
    report_evictions(&output, cli);
    print_summary(&output);
    write_svg(cli, &output)?;
    // What was whole has been shown; the cut itself is not an error of this run.
    if let Some(cut) = cut {
        eprintln!(
            "dockflow: {}: {cut}; everything before it was shown",
            path.display()
        );
    }
    Ok(())
}
