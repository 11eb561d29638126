//! Builds the kernel programs (dockflow-ebpf) for bpfel-unknown-none with the pinned nightly
//! toolchain and the bpf-linker that `cargo xtask setup` built against that toolchain's LLVM.
use std::{env, path::PathBuf};

use anyhow::{Context as _, bail};

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("..");
    let toolchain_file = root.join("ebpf-toolchain");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let toolchain = std::fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {}", toolchain_file.display()))?;
    let toolchain = toolchain.trim();

    // `cargo xtask setup` installs bpf-linker here; prefer it over whatever PATH has.
    let home = env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or(home.join(".cache"));
    let linker_dir = cache.join("dockflow/tools").join(toolchain).join("bin");
    if !linker_dir.join("bpf-linker").exists() {
        bail!(
            "bpf-linker for {toolchain} not found in {}; run `cargo xtask setup` first",
            linker_dir.display()
        );
    }
    println!(
        "cargo:rerun-if-changed={}",
        linker_dir.join("bpf-linker").display()
    );
    let path = env::var_os("PATH").unwrap_or_default();
    let path = env::join_paths(std::iter::once(linker_dir).chain(env::split_paths(&path)))?;
    // SAFETY: build scripts are single-threaded at this point.
    unsafe { env::set_var("PATH", path) };

    let ebpf_dir = root.join("dockflow-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dockflow-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(toolchain),
    )
}
