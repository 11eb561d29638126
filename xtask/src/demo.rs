//! `cargo xtask demo`: the main job on the built-in default, the seed's topology.

use std::{process::Stdio, time::Duration};

use anyhow::{Result, bail};
use dockflow_lab::lab;

use crate::{build, lab as xlab, tracer::Tracer};

pub fn run() -> Result<()> {
    xlab::with_lab(trace_one_exchange)
}

fn trace_one_exchange() -> Result<()> {
    let dockflow = build::dockflow()?;
    let responder = build::lab_responder()?;
    let tracer = Tracer::start(
        &dockflow,
        &["--container", "radius"],
        Stdio::inherit(),
        true,
    )?;
    let radius = lab::service("radius")?;
    eprintln!(
        "demo: sending a RADIUS Access-Request from namespace {} to {}:{}",
        lab::EXTERNAL_NETNS,
        lab::HOST_ADDRESS,
        radius.port
    );
    let answer = lab::client(&responder, radius, &[]);
    // Let the reply's last hops arrive and the packets complete before stopping.
    std::thread::sleep(Duration::from_millis(500));
    let summary = tracer.stop()?;
    eprintln!("demo: client said: {}", answer?);
    if !summary.status.success() {
        bail!("dockflow exited with {}", summary.status);
    }
    Ok(())
}
