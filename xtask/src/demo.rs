//! `cargo xtask demo`: the main job on the built-in default, the seed's topology.

use std::{process::Stdio, time::Duration};

use anyhow::{Result, bail};
use dockflow_lab::lab;

use crate::{build, lab as xlab, tracer::Tracer};

/// Where `--svg` puts the demo's picture, for the README.
pub const PICTURE: &str = "docs/demo.svg";

/// The demo; with `svg`, dockflow also draws the exchange into [`PICTURE`].
pub fn run(svg: bool) -> Result<()> {
    xlab::with_lab(|| trace_one_exchange(svg))
}

fn trace_one_exchange(svg: bool) -> Result<()> {
    let dockflow = build::dockflow()?;
    let responder = build::lab_responder()?;
    let picture = build::workspace_root().join(PICTURE);
    let mut args = vec!["--container", "radius"];
    if svg {
        std::fs::create_dir_all(picture.parent().expect("a folder"))?;
        // The RADIUS exchange only: the ARP the host may send first would make two pictures.
        args.extend(["--svg", picture.to_str().expect("a UTF-8 path"), "udp"]);
    }
    let tracer = Tracer::start(&dockflow, &args, Stdio::inherit(), true)?;
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
    if svg {
        // Written by root; the picture belongs in the repository, readable by anyone.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&picture, std::fs::Permissions::from_mode(0o644))?;
        eprintln!("demo: the picture is in {PICTURE}");
    }
    Ok(())
}
