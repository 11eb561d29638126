//! The `dockflow` command: resolve a target, attach probes, stream decoded events.

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use clap::Parser;
use dockflow::{
    event::Decoder,
    kernel::{self, btf::KernelBtf, symbols::KernelSymbols},
    probes::{Family, Probes},
    render::Renderer,
    target::{self, Target, names::InterfaceNames},
};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

/// Show where a Docker container's packets go, hop by hop, live.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Examples:\n  dockflow --container radius\n  dockflow --container radius --json --count 20\n  dockflow --iface docker1 --duration 10"
)]
struct Cli {
    /// Container (name or id) whose traffic to follow.
    #[arg(long, conflicts_with = "iface", required_unless_present = "iface")]
    container: Option<String>,
    /// Host interface(s) to watch instead of a container.
    #[arg(long, num_args = 1..)]
    iface: Vec<String>,
    /// One JSON object per event instead of text.
    #[arg(long)]
    json: bool,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Probe families to attach (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "tc,netfilter,tracepoints,bridge")]
    probes: Vec<Family>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dockflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("dockflow must run as root (it loads eBPF programs and reads other network namespaces)");
    }
    let target = match &cli.container {
        Some(name) => target::resolve_container(name)?,
        None => target::resolve_interfaces(&cli.iface)?,
    };
    let btf = KernelBtf::load(&["nf_conntrack", "bridge", "br_netfilter"])?;
    let offsets = kernel::resolve_offsets(&btf)?;
    let decoder = Decoder {
        drop_reasons: btf.enum_names("skb_drop_reason").unwrap_or_default(),
        symbols: KernelSymbols::load(is_hook_continuation)?,
    };
    let mut probes = Probes::attach(&target, &offsets, &cli.probes)?;
    report_attachments(&probes, &target);
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(probes.take_events()?, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the event ring buffer: {}", e.into_parts().1))?;
    eprintln!("dockflow: streaming (Ctrl-C to stop)");

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let deadline = tokio::time::sleep(cli.duration.map_or(Duration::MAX / 4, Duration::from_secs_f64));
    tokio::pin!(deadline);

    let interfaces = InterfaceNames::collect(target.netns.as_slice())?;
    let mut renderer = Renderer::new(cli.json, interfaces);
    let mut stdout = std::io::stdout().lock();
    let mut seen = 0u64;
    'stream: loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let ring = guard.get_inner_mut();
                while let Some(record) = ring.next() {
                    match decoder.decode(&record) {
                        Ok(event) => writeln!(stdout, "{}", renderer.render(&event))?,
                        Err(e) => eprintln!("dockflow: skipped a malformed event: {e}"),
                    }
                    seen += 1;
                    if cli.count.is_some_and(|n| seen >= n) {
                        break 'stream;
                    }
                }
                stdout.flush()?;
                guard.clear_ready();
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = &mut deadline => break,
        }
    }
    stdout.flush()?;
    eprintln!("dockflow: {seen} events from {}", target.label);
    for (point, lost) in probes.lost() {
        eprintln!("dockflow: lost {lost} events at {point:?} (ring buffer full)");
    }
    drop(probes);
    Ok(())
}

fn report_attachments(probes: &Probes, target: &Target) {
    eprintln!("dockflow: watching {}", target.label);
    for note in &probes.notes {
        eprintln!("  note      {note}");
    }
    for a in &probes.attachments {
        match &a.error {
            None => eprintln!("  attached  {}", a.point),
            Some(e) => eprintln!("  refused   {}: {e}", a.point),
        }
    }
}

/// Functions a netfilter hook continues into; br_nf_* ones mean br_netfilter is running the hook.
fn is_hook_continuation(name: &str) -> bool {
    name.starts_with("br_nf_") || name.ends_with("_finish") || name.contains("xmit") || name.contains("okfn")
}
