//! `cargo xtask test`: the README's test command. Unit tests and the end-to-end tests against
//! the real kernel, Docker engine and nftables, in one `cargo test` run; then `vmtest`, the
//! stock-kernel probes under qemu.

use std::process::Command;

use anyhow::{Result, bail};

use crate::{build, setup};

pub fn run(extra: &[String]) -> Result<()> {
    if !setup::is_root() {
        bail!("the end-to-end tests load eBPF programs and build the lab: run as root");
    }
    let dockflow = build::dockflow()?;
    let responder = build::lab_responder()?;
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(build::workspace_root())
        .env("DOCKFLOW_BIN", &dockflow)
        .env("DOCKFLOW_LAB_BIN", &responder)
        .args(["test", "--release"])
        .args(extra)
        .status()?;
    if !status.success() {
        bail!("tests failed");
    }
    // Only a whole run: a filtered `cargo xtask test NAME` is about the named tests.
    if extra.is_empty() {
        crate::vmtest::run()?;
    }
    Ok(())
}
