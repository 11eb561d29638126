//! `cargo xtask bench`: what dockflow costs, as figures from one run (no timed assertions).
//!
//! 1. Drain rate: a UDP flood at the radius container's published port while dockflow follows
//!    `radius`; how many events per second reach the terminal pipeline and how many were lost.
//! 2. Throughput: a bulk TCP flow from the external namespace through the host's DNAT and the
//!    bridge to the `proxy` container, without dockflow and with dockflow attached to `radius`
//!    (so every packet crosses our tc and netfilter programs and is filtered out in the kernel),
//!    alternated to cancel drift; the ratio of medians is the overhead figure, for the default
//!    probe set and for each family alone.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};
use dockflow_lab::lab;

use crate::{build, lab as xlab, tracer::Tracer};

const ROUNDS: usize = 3;
/// Probe sets the throughput test compares, the default (all) first.
const PROBE_SETS: [(&str, &str); 5] = [
    (
        "all probes (default):",
        "tc,netfilter,tracepoints,bridge,nftables",
    ),
    ("tc only:", "tc"),
    ("netfilter only:", "netfilter"),
    ("tracepoints only:", "tracepoints"),
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

pub fn run() -> Result<()> {
    xlab::with_lab(measure)
}

fn measure() -> Result<()> {
    let dockflow = build::dockflow()?;
    let responder = build::lab_responder()?;
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
                &[&["--container", "radius"], args].concat(),
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

    // Throughput with and without dockflow, alternated, for the default probe set and for each
    // family alone (so a user can see what each one costs).
    let bulk = || -> Result<f64> {
        run_external(
            &responder,
            &[
                "client",
                "tcp-bulk",
                &to(proxy.port),
                "--seconds",
                &SECONDS.to_string(),
            ],
        )?
        .parse::<f64>()
        .context("parsing the bulk client's rate")
    };
    for (label, probes) in PROBE_SETS {
        let mut baseline = Vec::new();
        let mut traced = Vec::new();
        let mut lost = 0;
        for _ in 0..ROUNDS {
            baseline.push(bulk()?);
            let tracer = Tracer::start(
                &dockflow,
                &["--container", "radius", "--probes", probes],
                Stdio::null(),
                false,
            )?;
            traced.push(bulk()?);
            lost += tracer.stop()?.lost;
        }
        let (b, t) = (median(&mut baseline), median(&mut traced));
        println!(
            "throughput, {label:<24} without {:.2} Gbit/s, with {:.2} Gbit/s, ratio {:.3} (medians of {ROUNDS}; {lost} events lost)",
            b / 1e9,
            t / 1e9,
            t / b
        );
    }
    println!("target for the default set: ratio >= 0.97");
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run_external(responder: &Path, args: &[&str]) -> Result<String> {
    let out = lab::external_command(responder, args)
        .output()
        .context("running the lab client")?;
    if !out.status.success() {
        bail!(
            "lab client {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
