//! `cargo xtask test`: the README's test command. Unit tests and the end-to-end tests against
//! the real kernel, Docker engine and nftables, in one `cargo test` run on Debian's engine with
//! the seed's settings; then the end-to-end tests whose paths depend on the engine again on the
//! current engine with its defaults; then `vmtest`, the stock-kernel probes under qemu.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{
    build,
    engine::{self, Engine},
    setup,
};

/// The end-to-end tests whose paths and rules differ between engines: they run on each.
const PER_ENGINE: &[&str] = &[
    "--test",
    "catalogue",
    "--test",
    "engines",
    "--test",
    "paths",
    "--test",
    "swarm",
];

pub fn run(engine: Option<Engine>, extra: &[String]) -> Result<()> {
    if !setup::is_root() {
        bail!("the end-to-end tests load eBPF programs and build the lab: run as root");
    }
    let dockflow = build::dockflow()?;
    let responder = build::lab_responder()?;
    let released = crate::dist::build()?;
    let image = crate::image::build(&released)?;
    let cargo_test = |args: &[&str]| -> Result<bool> {
        eprintln!("test: on {}", engine_words());
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(build::workspace_root())
            .env("DOCKFLOW_BIN", &dockflow)
            .env("DOCKFLOW_LAB_BIN", &responder)
            .env("DOCKFLOW_DIST_BIN", &released)
            .env("DOCKFLOW_DEB", crate::dist::deb_path())
            .env("DOCKFLOW_IMAGE", image)
            .env("DOCKFLOW_IMAGE_RUN", crate::image::RUN_OPTIONS.join(" "))
            // Every host crate, the end-to-end tests (not a default member) included.
            .args([
                "test",
                "--release",
                "--workspace",
                "--exclude",
                "dockflow-ebpf",
            ])
            .args(args)
            .status()?;
        Ok(status.success())
    };
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    match engine {
        Some(engine) => engine::with(engine, || passed(cargo_test(&extra)?, engine)),
        // A filtered `cargo xtask test NAME` is about the named tests, on the engine running.
        None if !extra.is_empty() => passed(
            cargo_test(&extra)?,
            engine::running().unwrap_or(Engine::Debian),
        ),
        None => {
            // Each pass on its engine, whichever was running before.
            let debian = engine::with(Engine::Debian, || cargo_test(&[]))?;
            let current = engine::with(Engine::Current, || cargo_test(PER_ENGINE))?;
            let failed: Vec<&str> = [(debian, "debian"), (current, "current")]
                .into_iter()
                .filter(|(ok, _)| !ok)
                .map(|(_, name)| name)
                .collect();
            if !failed.is_empty() {
                bail!("tests failed on the {} engine", failed.join(" and the "));
            }
            crate::vmtest::run()
        }
    }
}

fn passed(ok: bool, engine: Engine) -> Result<()> {
    if !ok {
        bail!("tests failed on the {} engine", engine.name());
    }
    Ok(())
}

/// "Docker 28.5.2+dfsg4 (the current engine, its defaults)", from the daemon that answers.
fn engine_words() -> String {
    let version =
        setup::output(Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|_| "an unknown version".into());
    let which = match engine::running() {
        Some(Engine::Debian) => "Debian's engine, the seed's settings: userland proxy off",
        Some(Engine::Current) => "the current engine, its defaults: userland proxy on",
        None => "an engine dockflow's setup did not start",
    };
    format!("Docker {version} ({which})")
}
