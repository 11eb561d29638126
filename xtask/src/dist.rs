//! `cargo xtask dist`: a release tarball for hosts without a Rust toolchain: one statically
//! linked `dockflow` (the kernel programs embedded), its man page and shell completions, the
//! README; and the same files as a Debian package. The binary is the one the vmtest runs inside
//! its Debian 6.1 guest.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::build::{self, workspace_root};

pub fn run() -> Result<()> {
    let binary = build()?;
    println!("dist: {}", binary.display());
    Ok(())
}

/// Builds and packs the tarball; returns its unpacked binary (the tests run it).
pub fn build() -> Result<PathBuf> {
    let dockflow = build::dockflow_static()?;
    let version = env!("CARGO_PKG_VERSION");
    let name = format!("dockflow-{version}-x86_64-linux");
    let dist = workspace_root().join("target/dist");
    let root = dist.join(&name);
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("emptying {}", root.display()))?;
    }
    fs::create_dir_all(root.join("completions"))?;
    fs::copy(&dockflow, root.join("dockflow")).context("copying the static dockflow")?;
    fs::copy(workspace_root().join("README.md"), root.join("README.md"))?;
    for (what, file) in [
        ("man", "dockflow.1"),
        ("bash", "completions/dockflow.bash"),
        ("zsh", "completions/_dockflow"),
        ("fish", "completions/dockflow.fish"),
    ] {
        let text = generated(&dockflow, what)?;
        fs::write(root.join(file), text).with_context(|| format!("writing {file}"))?;
    }
    let tarball = dist.join(format!("{name}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&dist)
        .arg(&name)
        .status()
        .context("running tar")?;
    if !status.success() {
        bail!("tar failed ({status})");
    }
    check(&root)?;
    println!("dist: {}", tarball.display());
    let deb = debian_package(&root, &dist)?;
    println!("dist: {}", deb.display());
    Ok(root.join("dockflow"))
}

/// The Debian package `cargo xtask dist` writes beside the tarball.
pub fn deb_path() -> PathBuf {
    workspace_root().join(format!(
        "target/dist/dockflow_{}_amd64.deb",
        env!("CARGO_PKG_VERSION")
    ))
}

/// A Debian package of the tarball's files, by `dpkg-deb`: the binary in /usr/bin, the man
/// page (gzipped) and the completions where Debian's shells look for them.
fn debian_package(root: &Path, dist: &Path) -> Result<PathBuf> {
    let staging = dist.join("deb");
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    let files = [
        ("dockflow", "usr/bin/dockflow"),
        ("dockflow.1", "usr/share/man/man1/dockflow.1"),
        (
            "completions/dockflow.bash",
            "usr/share/bash-completion/completions/dockflow",
        ),
        (
            "completions/_dockflow",
            "usr/share/zsh/vendor-completions/_dockflow",
        ),
        (
            "completions/dockflow.fish",
            "usr/share/fish/vendor_completions.d/dockflow.fish",
        ),
        ("README.md", "usr/share/doc/dockflow/README.md"),
    ];
    for (from, to) in files {
        let to = staging.join(to);
        fs::create_dir_all(to.parent().expect("a folder"))?;
        fs::copy(root.join(from), &to).with_context(|| format!("staging {from}"))?;
    }
    let gzip = Command::new("gzip")
        .args(["-9n"])
        .arg(staging.join("usr/share/man/man1/dockflow.1"))
        .status()
        .context("running gzip")?;
    if !gzip.success() {
        bail!("gzip failed");
    }
    fs::write(
        staging.join("usr/share/doc/dockflow/copyright"),
        "dockflow\nLicense: MIT OR Apache-2.0\n",
    )?;
    fs::create_dir_all(staging.join("DEBIAN"))?;
    fs::write(
        staging.join("DEBIAN/control"),
        format!(
            "Package: dockflow\n\
             Version: {}\n\
             Architecture: amd64\n\
             Maintainer: dockflow developers <dockflow@localhost>\n\
             Section: net\n\
             Priority: optional\n\
             Recommends: nftables, iproute2\n\
             Description: eBPF packet-path observer for Docker networking\n \
             Shows where a Docker container's packets go, hop by hop, live: bridge (L2) and IP\n \
             (L3) hops, NAT rewrites, conntrack state, nftables verdicts and drops.\n",
            env!("CARGO_PKG_VERSION")
        ),
    )?;
    let deb = deb_path();
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&staging)
        .arg(&deb)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb failed ({status})");
    }
    fs::remove_dir_all(&staging)?;
    Ok(deb)
}

/// `dockflow --generate WHAT`'s output.
fn generated(dockflow: &Path, what: &str) -> Result<Vec<u8>> {
    let out = Command::new(dockflow)
        .args(["--generate", what])
        .output()
        .with_context(|| format!("running {} --generate {what}", dockflow.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "dockflow --generate {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// The packed binary runs, and is static (it needs no libc of the host's).
fn check(root: &Path) -> Result<()> {
    let binary = root.join("dockflow");
    let version = Command::new(&binary).arg("--version").output()?;
    if !version.status.success() {
        bail!("the packed dockflow does not run");
    }
    let file = Command::new("file").arg(&binary).output();
    if let Ok(file) = file {
        let description = String::from_utf8_lossy(&file.stdout);
        if description.contains("dynamically linked") {
            bail!("the packed dockflow is dynamically linked: {description}");
        }
    }
    println!(
        "dist: {} (static), man page, bash/zsh/fish completions",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    Ok(())
}
