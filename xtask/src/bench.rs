//! `cargo xtask bench`: what dockflow costs, as figures from one run (no timed assertions).
//!
//! 1. Drain rate: a UDP flood at the radius container's published port while dockflow follows
//!    `radius`; how many events per second reach the terminal pipeline and how many were lost.
//! 2. Throughput: a bulk TCP flow from the external namespace through the host's DNAT and the
//!    bridge to the `proxy` container, without dockflow and with dockflow attached to `radius`
//!    (so every packet crosses our tc and netfilter programs and is filtered out in the kernel),
//!    alternated to cancel drift; the ratio of medians is the overhead figure.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{Context as _, Result, bail};
use dockflow_lab::lab;

use crate::{
    build, lab as xlab,
    tracer::{Summary, Tracer},
};

const ROUNDS: usize = 3;
/// Offered UDP load for the drain test, datagrams per second (0: as fast as the client can).
const DRAIN_RATES: [u64; 6] = [1_000, 2_000, 5_000, 10_000, 20_000, 0];
const SECONDS: f64 = 3.0;

pub fn run() -> Result<()> {
    xlab::up()?;
    let result = measure();
    let down = lab::down();
    result.and(down)
}

fn measure() -> Result<()> {
    let dockflow = build::dockflow()?;
    let responder = build::lab_responder()?;
    let radius = lab::service("radius")?;
    let proxy = lab::service("proxy")?;
    let to = |port: u16| format!("{}:{port}", lab::HOST_ADDRESS);

    // Drain rate: raise the offered load until events are lost; the last lossless step is the
    // sustained figure. Output is JSON to /dev/null, so decoding and rendering are included.
    let mut sustained = 0.0f64;
    for rate in DRAIN_RATES {
        let tracer = Tracer::start(&dockflow, &["--container", "radius", "--json"], Stdio::null(), false)?;
        let args = ["client", "udp-flood", &to(radius.port), "--seconds", &SECONDS.to_string(), "--rate", &rate.to_string()];
        let sent = run_external(&responder, &args)?;
        std::thread::sleep(Duration::from_millis(500));
        let summary = tracer.stop()?;
        let (events, lost) = (summary.events, summary.lost);
        let per_second = events as f64 / SECONDS;
        println!("drain: offered {rate} datagrams/s ({sent} sent) -> {events} events ({per_second:.0} events/s), {lost} lost");
        if lost > 0 {
            break;
        }
        sustained = sustained.max(per_second);
    }
    println!("drain: sustained without loss: {sustained:.0} events/s");

    // Throughput with and without dockflow, alternated.
    let bulk = || -> Result<f64> {
        run_external(&responder, &["client", "tcp-bulk", &to(proxy.port), "--seconds", &SECONDS.to_string()])?
            .parse::<f64>()
            .context("parsing the bulk client's rate")
    };
    let mut baseline = Vec::new();
    let mut traced = Vec::new();
    for round in 1..=ROUNDS {
        baseline.push(bulk()?);
        let tracer = Tracer::start(&dockflow, &["--container", "radius"], Stdio::null(), false)?;
        traced.push(bulk()?);
        let Summary { events, lost, .. } = tracer.stop()?;
        println!(
            "round {round}: without dockflow {:.2} Gbit/s, with dockflow on radius {:.2} Gbit/s ({events} events, {lost} lost)",
            baseline[round - 1] / 1e9,
            traced[round - 1] / 1e9
        );
    }
    let (b, t) = (median(&mut baseline), median(&mut traced));
    println!("throughput: median without {:.2} Gbit/s, with {:.2} Gbit/s, ratio {:.3} (target >= 0.97)", b / 1e9, t / 1e9, t / b);
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run_external(responder: &Path, args: &[&str]) -> Result<String> {
    let out = lab::external_command(responder, args).output().context("running the lab client")?;
    if !out.status.success() {
        bail!("lab client {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
