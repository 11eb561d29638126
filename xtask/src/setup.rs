//! `cargo xtask setup`: everything a fresh Debian machine needs to build and test dockflow.
//! Each step checks before it acts, so a second run takes seconds.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::engine;

/// Debian packages the build, the lab and the tests use.
const PACKAGES: &[&str] = &[
    "docker.io",
    "nftables",
    "iptables",
    "iproute2",
    "kmod",
    "bpftool",
    "tar",
    "procps",
    // The tests end a connection early with `conntrack -D`.
    "conntrack",
    // The tests read --pcapng files back with Wireshark's dissectors (wireshark-common's
    // setuid question takes its default, no, without a prompt).
    "tshark",
    // The tests render the --svg and --html pictures headless, as a browser shows them.
    "chromium",
];

pub fn run() -> Result<()> {
    /// One named, idempotent setup step.
    type Step = fn() -> Result<()>;
    // Several commands call this (demo: lab up, then build); once per process is enough.
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    let steps: [(&str, Step); 6] = [
        ("debian packages", packages),
        ("nightly toolchain", nightly_toolchain),
        ("bpf-linker", bpf_linker),
        ("kernel filesystems", kernel_filesystems),
        ("current docker engine", engine::install_current),
        ("dockerd", dockerd),
    ];
    for (name, step) in steps {
        let started = Instant::now();
        step().with_context(|| format!("setup step `{name}` failed"))?;
        eprintln!(
            "setup: {name:<20} ok ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The pinned nightly that builds the eBPF crate (one source of truth, shared with build.rs).
pub fn ebpf_toolchain() -> &'static str {
    include_str!("../../ebpf-toolchain").trim()
}

/// dockflow's cache: tools built for it, downloaded kernels.
pub fn cache_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("dockflow")
}

/// Where bpf-linker for the pinned toolchain lives (build.rs looks in the same place).
pub fn tools_dir() -> PathBuf {
    cache_dir().join("tools").join(ebpf_toolchain())
}

fn packages() -> Result<()> {
    ensure_packages(PACKAGES)
}

/// Installs whichever of `packages` are missing (one apt run).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "packages {} are missing and installing them needs root",
            missing.join(" ")
        );
    }
    eprintln!("setup: installing {}", missing.join(" "));
    quiet(Command::new("apt-get").args(["update", "-qq"]))?;
    quiet(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn nightly_toolchain() -> Result<()> {
    let toolchain = ebpf_toolchain();
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .any(|l| l.starts_with("rust-src"))
        });
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing {toolchain} with rust-src");
    quiet(Command::new("rustup").args([
        "toolchain",
        "install",
        toolchain,
        "--profile",
        "minimal",
        "-c",
        "rust-src",
    ]))
}

/// bpf-linker built against the pinned nightly's own libLLVM (Debian's LLVM is too old).
fn bpf_linker() -> Result<()> {
    let dir = tools_dir();
    let linker = dir.join("bin/bpf-linker");
    if Command::new(&linker)
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return Ok(());
    }
    let toolchain = ebpf_toolchain();
    let version = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .arg("-vV"),
    )?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV printed no LLVM version")?
        .to_string();
    let sysroot = PathBuf::from(
        output(
            Command::new("rustc")
                .arg(format!("+{toolchain}"))
                .args(["--print", "sysroot"]),
        )?
        .trim(),
    );
    let libllvm = fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libLLVM.so."))
        })
        .with_context(|| format!("{toolchain} ships no libLLVM.so.*"))?;

    // A prefix whose lib/ offers that library under both names the build and the binary ask for.
    let prefix = dir.join("llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib)?;
    for name in [
        Path::new("libLLVM.so"),
        Path::new(libllvm.file_name().unwrap()),
    ] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)?;
    }
    eprintln!(
        "setup: building bpf-linker against LLVM {llvm_major} of {toolchain} (about a minute)"
    );
    quiet(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker@0.13.0",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{llvm_major}"))
            .arg("--root")
            .arg(&dir)
            .current_dir(std::env::temp_dir()),
    )
}

fn kernel_filesystems() -> Result<()> {
    let mounts = fs::read_to_string("/proc/mounts")?;
    for (fstype, path) in [("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")] {
        if mounts
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(path))
        {
            continue;
        }
        if !is_root() {
            bail!("{path} is not mounted and mounting it needs root");
        }
        fs::create_dir_all(path).ok();
        quiet(Command::new("mount").args(["-t", fstype, fstype, path]))?;
    }
    Ok(())
}

pub fn docker_running() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts Debian's engine with the seed's settings when no daemon answers. It keeps running
/// after xtask exits; nothing here ever stops a daemon it did not start.
fn dockerd() -> Result<()> {
    engine::ensure_running(engine::Engine::Debian)
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command, showing nothing unless it fails.
pub fn quiet(cmd: &mut Command) -> Result<()> {
    output(cmd).map(drop)
}

pub use dockflow_lab::shell::output;
