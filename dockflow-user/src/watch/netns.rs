//! Running a piece of work inside another network namespace.

use std::{fs::File, os::fd::AsRawFd as _, os::unix::fs::MetadataExt as _, path::Path};

use anyhow::{Context as _, Result, bail};

/// Inode number of a network namespace file (what `ip netns identify` and `/proc/PID/ns/net`
/// links show); the kernel's `net->ns.inum`.
pub fn netns_inode(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .ino())
}

/// Inode of the namespace dockflow runs in: "the host" for naming and filtering.
pub fn own_netns_inode() -> Result<u64> {
    netns_inode(Path::new("/proc/self/ns/net"))
}

/// Runs `work` on a fresh thread that has joined the network namespace at `path`, so the
/// caller's own namespace never changes.
pub fn in_netns<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = File::open(path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    std::thread::spawn(move || {
        // SAFETY: the fd is an open namespace file, and setns changes only this fresh thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "entering network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        work()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("network namespace worker panicked"))?
}
