//! Replaying a recording: no root, no kernel; the recording carries what decoding needs.

use std::path::Path;

use anyhow::{Context as _, Result};
use dockflow::{
    filter::Filter,
    nftrace::TraceRules,
    output::source::{self, Recorded},
    record::Replay,
};

use crate::cli::{Cli, print_summary, reached_count, report_evictions, write_svg};

/// Shows a recording as the live run showed it, recorded time driving packet completion.
pub fn run(cli: &Cli, path: &Path, filter: Option<Filter>) -> Result<()> {
    let replay = Replay::open(path)?;
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
    let mut source = Recorded::new(replay, header.decoder, path.display().to_string());
    source::feed(&mut source, &mut output, |output| {
        reached_count(cli, output)
    })?;
    output.finish()?;
    output.finish_pcapng(&source.lost)?;
    eprintln!(
        "dockflow: {} packets, {} events from {}",
        output.stats.packets, output.stats.events, header.target
    );
    report_evictions(&output, cli);
    print_summary(&output);
    write_svg(cli, &output)?;
    // What was whole has been shown; the cut itself is not an error of this run.
    if let Some(cut) = source.cut {
        eprintln!(
            "dockflow: {}: {cut}; everything before it was shown",
            path.display()
        );
    }
    Ok(())
}
