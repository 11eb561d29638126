//! Building dockflow and the lab's static responder.

use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::setup;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

fn checked(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("running cargo for {what}"))?;
    if !status.success() {
        bail!("building {what} failed");
    }
    Ok(())
}

/// Builds the eBPF programs and the `dockflow` binary (release); returns the binary's path.
pub fn dockflow() -> Result<PathBuf> {
    setup::run()?;
    checked(
        cargo().args([
            "build",
            "--release",
            "--package",
            "dockflow-user",
            "--bin",
            "dockflow",
        ]),
        "dockflow",
    )?;
    Ok(workspace_root().join("target/release/dockflow"))
}

/// Builds `dockflow` statically (for the vmtest guest, which has no libc of ours).
pub fn dockflow_static() -> Result<PathBuf> {
    static_binary(
        "dockflow-user",
        "dockflow",
        "target/static",
        "static dockflow",
    )
}

/// Builds the lab's responder as a static binary (it is the only file in the lab image).
pub fn lab_responder() -> Result<PathBuf> {
    static_binary(
        "dockflow-lab",
        "dockflow-lab",
        "target/lab",
        "the lab responder",
    )
}

/// `bin` of `package`, linked statically, in a target dir of its own (RUSTFLAGS differ).
fn static_binary(package: &str, bin: &str, target_dir: &str, what: &str) -> Result<PathBuf> {
    let host = host_triple()?;
    let target_dir = workspace_root().join(target_dir);
    checked(
        cargo()
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--quiet",
                "--release",
                "--package",
                package,
                "--bin",
                bin,
                "--target",
                &host,
            ])
            .arg("--target-dir")
            .arg(&target_dir),
        what,
    )?;
    Ok(target_dir.join(host).join("release").join(bin))
}

fn host_triple() -> Result<String> {
    String::from_utf8(Command::new("rustc").arg("-vV").output()?.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV printed no host triple")
}

/// Replaces this process with `dockflow ARGS`, as root.
pub fn run_dockflow(args: &[String]) -> Result<()> {
    let binary = dockflow()?;
    let mut cmd = if setup::is_root() {
        Command::new(&binary)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    cmd.args(args);
    Err(cmd.exec()).context("starting dockflow")
}
