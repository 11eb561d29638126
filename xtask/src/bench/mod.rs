//! `cargo xtask bench`: what dockflow costs, as figures from one run (no timed assertions).
//!
//! 0. The pipeline under a flood (pipeline.rs; alone: `cargo xtask bench pipeline`), and what
//!    packet bytes cost (capture.rs; alone: `cargo xtask bench capture`).
//! 1. Drain rate: a UDP flood at the radius container's published port while dockflow follows
//!    `radius`; how many events per second reach the terminal pipeline and how many were lost.
//! 2. Kernel cost: with the default probes attached and the kernel's BPF statistics switched on
//!    for one bulk TCP run (see 3), the runs and nanoseconds of each of dockflow's programs.
//!    Precise where 3 is noisy: it counts only the programs' own time, not the hook dispatch.
//! 3. Throughput: a bulk TCP flow from the external namespace through the host's DNAT and the
//!    bridge to the `proxy` container, without dockflow and with dockflow attached to `radius`
//!    (so every packet crosses our programs and is filtered out in the kernel). Rounds run
//!    without-with-with-without, each run after the same pause, and each round gives one ratio;
//!    the figures are their median and mean with a 95% interval, for the default probe set and
//!    each family, and for a control that attaches nothing (its ratio shows the method's own
//!    bias). On a small shared VM single runs vary by 10% or more: read the interval.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result};
use dockflow_lab::lab;

use crate::{build, lab as xlab, setup, tracer::Tracer};

/// Throughput rounds (each: without, with, with, without) for the default set, the default
/// without devices, and per family. One round's ratio varies by about 5% (standard deviation)
/// on a small shared VM, so the headline figure needs many rounds for a 95% interval of about
/// +-0.025; the per-family figures are rougher.
const ROUNDS: [usize; 3] = [16, 8, 4];
/// Rounds of the control, which attaches nothing: its ratio should come out near 1.
const ROUNDS_CONTROL: usize = 8;
/// Pause before every bulk run, so that no run starts from a different state of the machine.
const SETTLE: Duration = Duration::from_secs(1);
/// Probe sets the throughput test compares, the default (all) first.
const PROBE_SETS: [(&str, &str); 6] = [
    (
        "all probes (default):",
        "tc,netfilter,drops,devices,bridge,nftables",
    ),
    (
        "default without devices:",
        "tc,netfilter,drops,bridge,nftables",
    ),
    ("tc only:", "tc"),
    ("netfilter only:", "netfilter"),
    ("devices only:", "devices"),
    ("nftables trace only:", "nftables"),
];
/// Output modes the drain test measures.
const DRAIN_MODES: [(&str, &[&str]); 2] = [
    ("events as JSON (--raw --json)", &["--raw", "--json"]),
    ("packets as JSON (--json)", &["--json"]),
];
/// Offered UDP load for the drain test, datagrams per second (0: as fast as the client can).
const DRAIN_RATES: [u64; 6] = [1_000, 2_000, 5_000, 10_000, 20_000, 0];
const SECONDS: f64 = 3.0;
/// Length of one bulk TCP run.
const BULK_SECONDS: f64 = 2.0;

mod capture;
mod pipeline;
mod soak;

/// Which part of the bench to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Everything.
    All,
    /// dockflow's own pipeline under a flood (about two minutes).
    Pipeline,
    /// What packet bytes (--snaplen) cost, and converting a recording to pcapng (a minute).
    Capture,
    /// Bulk TCP throughput following the whole lab network, with and without filters that
    /// leave the flow out, against one container (about ten minutes).
    Network,
    /// dockflow following a network whose containers come and go, for --minutes.
    Soak,
}

pub fn run(part: Part, minutes: f64) -> Result<()> {
    xlab::with_lab(|| {
        let dockflow = build::dockflow()?;
        let responder = build::lab_responder()?;
        match part {
            Part::Network => return network(&dockflow, &responder),
            Part::Soak => return soak::measure(&dockflow, &responder, minutes),
            _ => {}
        }
        if part != Part::Capture {
            pipeline::measure(&dockflow, &responder)?;
        }
        if part != Part::Pipeline {
            capture::measure(&dockflow, &responder)?;
        }
        if part == Part::All {
            measure(&dockflow, &responder)?;
        }
        Ok(())
    })
}

fn measure(dockflow: &Path, responder: &Path) -> Result<()> {
    let (dockflow, responder) = (dockflow.to_path_buf(), responder.to_path_buf());
    let radius = lab::service("radius")?;
    let proxy = lab::service("proxy")?;
    let to = |port: u16| format!("{}:{port}", lab::HOST_ADDRESS);

    // Drain rate: raise the offered load until events are lost; the last lossless step is the
    // sustained figure. Output goes to /dev/null, so decoding, correlation and rendering count.
    for (label, args) in DRAIN_MODES {
        let mut sustained = 0.0f64;
        for rate in DRAIN_RATES {
            let tracer = Tracer::start(
                &dockflow,
                // Every packet: the flood is one connection.
                &[&["--container", "radius", "--per-connection", "all"], args].concat(),
                Stdio::null(),
                false,
            )?;
            let flood = [
                "client",
                "udp-flood",
                &to(radius.port),
                "--seconds",
                &SECONDS.to_string(),
                "--rate",
                &rate.to_string(),
            ];
            let sent = run_external(&responder, &flood)?;
            std::thread::sleep(Duration::from_millis(500));
            let summary = tracer.stop()?;
            let per_second = summary.events as f64 / SECONDS;
            println!(
                "drain, {label}: offered {rate} datagrams/s ({sent} sent) -> {} events ({per_second:.0} events/s), {} lost",
                summary.events, summary.lost
            );
            if summary.lost > 0 {
                break;
            }
            sustained = sustained.max(per_second);
        }
        println!("drain, {label}: sustained without loss: {sustained:.0} events/s");
    }

    let bulk = || -> Result<f64> {
        std::thread::sleep(SETTLE);
        run_external(
            &responder,
            &[
                "client",
                "tcp-bulk",
                &to(proxy.port),
                "--seconds",
                &BULK_SECONDS.to_string(),
            ],
        )?
        .parse::<f64>()
        .context("parsing the bulk client's rate")
    };
    kernel_cost(&dockflow, &bulk)?;

    // Throughput with and without dockflow, for the default probe set and for each family alone
    // (so a user can see what each one costs), then a control that attaches nothing: how far
    // apart two identical runs come out here.
    for (i, (label, probes)) in PROBE_SETS.into_iter().enumerate() {
        let mut lost = 0;
        let mut traced = || -> Result<f64> {
            let tracer = Tracer::start(
                &dockflow,
                &["--container", "radius", "--probes", probes],
                Stdio::null(),
                false,
            )?;
            let rate = bulk()?;
            lost += tracer.stop()?.lost;
            Ok(rate)
        };
        let figures = throughput_rounds(ROUNDS[i.min(ROUNDS.len() - 1)], &bulk, &mut traced)?;
        println!("throughput, {label:<24} {figures}; {lost} events lost");
    }
    let figures = throughput_rounds(ROUNDS_CONTROL, &bulk, &mut || bulk())?;
    println!(
        "throughput, {:<24} {figures}",
        "control (nothing attached):"
    );
    println!("target for the default set: ratio >= 0.97");
    Ok(())
}

/// Rounds for the network comparison. Every round runs each setting once, between two runs
/// without dockflow, in an order that turns from round to round; one run's ratio varies by
/// about 0.08 on this project's 2-vCPU VM, so 16 rounds give a 95% interval of about +-0.04.
const ROUNDS_NETWORK: usize = 16;

/// Bulk TCP to `proxy` with dockflow following `--network infranet` (proxy among the targets)
/// against runs without dockflow. The settings: the floor, programs that return at once at the
/// same attach points (`--empty-programs`, no nftables trace); `--container radius` (every
/// packet filtered out in the kernel); the default (the flow's first 64 packets in full, then
/// one a second, nftables tracing each flow's first packets); the default without the nftables
/// trace; every packet (`--per-connection all`); and a filter expression that leaves the bulk
/// connection out, `udp` (the kernel drops every TCP packet from its first hop by protocol).
/// The settings are interleaved within each round, so that the machine's drift over minutes
/// (the larger part of the noise on a shared VM) falls on all of them alike; each ratio is also
/// given as a share of the floor's, per round.
fn network(dockflow: &Path, responder: &Path) -> Result<()> {
    let proxy = lab::service("proxy")?;
    let to = format!("{}:{}", lab::HOST_ADDRESS, proxy.port);
    let bulk = || -> Result<f64> {
        std::thread::sleep(SETTLE);
        run_external(
            responder,
            &[
                "client",
                "tcp-bulk",
                &to,
                "--seconds",
                &BULK_SECONDS.to_string(),
            ],
        )?
        .parse::<f64>()
        .context("parsing the bulk client's rate")
    };
    let network = format!("--network={}", lab::NETWORK);
    let net = network.as_str();
    let settings: [(&str, &[&str]); 6] = [
        (
            "floor (empty programs, same attach points):",
            &[net, "--empty-programs", "--trace-rules", "none"],
        ),
        ("--container radius:", &["--container", "radius"]),
        ("--network infranet (default):", &[net]),
        (
            "--network infranet --trace-rules none:",
            &[net, "--trace-rules", "none"],
        ),
        (
            "--network infranet --per-connection all:",
            &[net, "--per-connection", "all"],
        ),
        ("--network infranet udp:", &[net, "udp"]),
    ];
    let mut ratios = vec![Vec::new(); settings.len()];
    let mut lost = vec![0; settings.len()];
    for round in 0..ROUNDS_NETWORK {
        let before = bulk()?;
        let mut rates = vec![0.0; settings.len()];
        for turn in 0..settings.len() {
            let i = (turn + round) % settings.len();
            let tracer = Tracer::start(dockflow, settings[i].1, Stdio::null(), false)?;
            rates[i] = bulk()?;
            lost[i] += tracer.stop()?.lost;
        }
        let without = (before + bulk()?) / 2.0;
        for (i, rate) in rates.iter().enumerate() {
            ratios[i].push(rate / without);
        }
    }
    let floor = ratios[0].clone();
    for (i, (label, _)) in settings.iter().enumerate() {
        let of_floor: Vec<f64> = ratios[i].iter().zip(&floor).map(|(r, f)| r / f).collect();
        println!(
            "network, {label:<45} {}; {} events lost; {} of the floor",
            ratio_figures(&ratios[i]),
            lost[i],
            ratio_figures(&of_floor)
        );
    }
    Ok(())
}

/// A list of per-round ratios as its median and mean with a 95% interval.
fn ratio_figures(ratios: &[f64]) -> String {
    let (mean, half_width) = mean_and_interval(ratios);
    let median = median(&mut ratios.to_vec());
    format!(
        "ratio {median:.3} (median of {} rounds; mean {mean:.3} +- {half_width:.3}, 95%)",
        ratios.len()
    )
}

/// Section 2: per-program runs and time from the kernel's BPF statistics during one bulk run.
fn kernel_cost(dockflow: &Path, bulk: &dyn Fn() -> Result<f64>) -> Result<()> {
    let tracer = Tracer::start(dockflow, &["--container", "radius"], Stdio::null(), false)?;
    let stats = BpfStats::enable()?;
    let before = df_program_stats()?;
    let started = std::time::Instant::now();
    bulk()?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = df_program_stats()?;
    drop(stats);
    tracer.stop()?;
    let mut total_ns = 0;
    for (name, (runs, ns)) in &after {
        let (runs0, ns0) = before.get(name).copied().unwrap_or_default();
        let (runs, ns) = (runs - runs0, ns - ns0);
        total_ns += ns;
        if runs > 0 {
            println!(
                "kernel cost, {name:<20} {:>9.0} runs/s, {:>5.0} ns per run",
                runs as f64 / elapsed,
                ns as f64 / runs as f64
            );
        }
    }
    println!(
        "kernel cost, all programs: {:.1}% of one CPU during the bulk run",
        total_ns as f64 / elapsed / 1e7
    );
    Ok(())
}

/// kernel.bpf_stats_enabled switched on for as long as this lives, then put back.
struct BpfStats(String);

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous =
            std::fs::read_to_string(BPF_STATS).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Self(previous))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.0.trim());
    }
}

/// (runs, nanoseconds) per loaded program named df_*, summed over programs of the same name.
fn df_program_stats() -> Result<std::collections::BTreeMap<String, (u64, u64)>> {
    let out =
        setup::output(std::process::Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let programs: Vec<serde_json::Value> =
        serde_json::from_str(&out).context("parsing bpftool's JSON")?;
    let mut stats = std::collections::BTreeMap::new();
    for p in programs {
        let Some(name) = p["name"].as_str().filter(|n| n.starts_with("df_")) else {
            continue;
        };
        let entry: &mut (u64, u64) = stats.entry(name.to_string()).or_default();
        entry.0 += p["run_cnt"].as_u64().unwrap_or(0);
        entry.1 += p["run_time_ns"].as_u64().unwrap_or(0);
    }
    Ok(stats)
}

/// Rounds of without-with-with-without bulk runs; each round gives one ratio. Returns the
/// figures as one line.
fn throughput_rounds(
    rounds: usize,
    without: &dyn Fn() -> Result<f64>,
    with: &mut dyn FnMut() -> Result<f64>,
) -> Result<String> {
    let (mut ratios, mut rates_without, mut rates_with) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (a, b, c, d) = (without()?, with()?, with()?, without()?);
        ratios.push((b + c) / (a + d));
        rates_without.extend([a, d]);
        rates_with.extend([b, c]);
    }
    let line = format!(
        "{}; without {:.2} Gbit/s, with {:.2} Gbit/s (medians)",
        ratio_figures(&ratios),
        median(&mut rates_without) / 1e9,
        median(&mut rates_with) / 1e9,
    );
    Ok(line)
}

/// The mean and the half-width of its 95% confidence interval (normal approximation; with few
/// rounds, a rough guide).
fn mean_and_interval(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, 1.96 * (variance / n).sqrt())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run_external(responder: &Path, args: &[&str]) -> Result<String> {
    let out = setup::output(&mut lab::external_command(responder, args))
        .with_context(|| format!("lab client {args:?}"))?;
    Ok(out.trim().to_string())
}
