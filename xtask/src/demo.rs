//! `cargo xtask demo`: the main job on the built-in default, the seed's topology.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use dockflow_lab::lab;

use crate::{build, lab as xlab};

pub fn run() -> Result<()> {
    xlab::up()?;
    let result = trace_one_exchange();
    let down = lab::down();
    result.and(down)
}

fn trace_one_exchange() -> Result<()> {
    let dockflow = build::dockflow()?;
    let responder = build::lab_responder()?;
    let mut child = Command::new(&dockflow)
        .args(["--container", "radius"])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting dockflow")?;
    // Forward dockflow's status lines and notice when it is streaming.
    let (ready_tx, ready_rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let forwarder = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            if line.contains("streaming") {
                let _ = ready_tx.send(());
            }
        }
    });
    if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        bail!("dockflow did not start streaming within 30 s");
    }
    let radius = lab::service("radius")?;
    eprintln!("demo: sending a RADIUS Access-Request from namespace {} to {}:{}", lab::EXTERNAL_NETNS, lab::HOST_ADDRESS, radius.port);
    let answer = lab::client(&responder, radius, &[]);
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    let _ = forwarder.join();
    eprintln!("demo: client said: {}", answer?);
    if !status.success() {
        bail!("dockflow exited with {status}");
    }
    Ok(())
}
