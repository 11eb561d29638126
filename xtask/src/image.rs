//! `cargo xtask image`: a container image of the release binary, built offline with `docker
//! import` (no registry, no base image): the static `dockflow`, and the two host tools it runs
//! (`nft` for the rule trace's table and the ruleset, `tc` for clean-up on pre-tcx kernels)
//! with the shared libraries `ldd` names for them and the xtables extensions nft loads, and
//! /etc/protocols and /etc/services (nft's names for protocols and ports).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use dockflow_lab::lab;

use crate::dist;

/// What `docker run` needs to give the image: the host's process and network namespaces
/// (containers' /proc/PID/ns/net, the host's interfaces and netfilter), CAP_SYS_ADMIN (BPF
/// programs and maps, perf events, entering namespaces; newer engines also know CAP_BPF and
/// CAP_PERFMON, which the kernel accepts for the first two), CAP_NET_ADMIN (tc, netfilter
/// links, nftables), CAP_SYS_PTRACE (other processes' namespaces), CAP_SYSLOG (kernel
/// addresses in /proc/kallsyms, to name the hooks br_netfilter runs), no seccomp or AppArmor
/// filter on bpf(2), and Docker's socket. `--privileged` gives all of it too.
pub const RUN_OPTIONS: [&str; 14] = [
    "--cap-add=SYS_ADMIN",
    "--cap-add=NET_ADMIN",
    "--cap-add=SYS_PTRACE",
    "--cap-add=SYSLOG",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "apparmor=unconfined",
    "--pid=host",
    "--network=host",
    "-v",
    "/var/run/docker.sock:/var/run/docker.sock",
    "-v",
    "/sys/fs/bpf:/sys/fs/bpf",
];

/// Where Debian keeps the xtables extensions.
const XTABLES: &str = "/usr/lib/x86_64-linux-gnu/xtables";

pub const IMAGE: &str = concat!("dockflow:", env!("CARGO_PKG_VERSION"));

pub fn run() -> Result<()> {
    build(&dist::build()?)?;
    println!("image: {IMAGE} (also dockflow:latest)");
    println!(
        "image: docker run --rm {} {IMAGE} --container NAME",
        RUN_OPTIONS.join(" ")
    );
    Ok(())
}

/// Builds the image from the tarball's binary `dockflow`; returns the image's name.
pub fn build(dockflow: &Path) -> Result<&'static str> {
    let staging = std::env::temp_dir().join(format!("dockflow-image-{}", std::process::id()));
    let result = (|| {
        place(dockflow, &staging.join("dockflow"))?;
        for tool in ["/usr/sbin/nft", "/usr/sbin/tc"] {
            place(Path::new(tool), &staging.join(&tool[1..]))?;
            for library in libraries(tool)? {
                place(&library, &staging.join(library.strip_prefix("/")?))?;
            }
        }
        for file in ["/etc/protocols", "/etc/services"] {
            place(Path::new(file), &staging.join(&file[1..]))?;
        }
        // nft dlopens these to print the rules iptables-nft wrote with xtables matches and
        // targets (Docker's DNAT among them); ldd cannot name them.
        let xtables = Path::new(XTABLES);
        if xtables.is_dir() {
            for entry in fs::read_dir(xtables)? {
                let path = entry?.path();
                place(&path, &staging.join(path.strip_prefix("/")?))?;
            }
        }
        import(&staging)
    })();
    let _ = fs::remove_dir_all(&staging);
    result.map(|()| IMAGE)
}

/// Copies `from` to `to` (its content, where `from` is a link), creating the folders.
fn place(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

/// The shared libraries (and the loader) `ldd` resolves for `binary`.
fn libraries(binary: &str) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("running ldd {binary}"))?;
    if !out.status.success() {
        bail!("ldd {binary} failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// `docker import` of the staged root, with dockflow as its entry point, tagged `latest` too.
fn import(staging: &Path) -> Result<()> {
    lab::import_image(
        staging,
        &[
            "ENTRYPOINT [\"/dockflow\"]",
            "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        ],
        IMAGE,
    )?;
    let tagged = Command::new("docker")
        .args(["tag", IMAGE, "dockflow:latest"])
        .status()
        .context("running docker tag")?;
    if !tagged.success() {
        bail!("docker tag failed");
    }
    Ok(())
}
