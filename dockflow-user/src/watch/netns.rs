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

/// Runs `work` on this very thread inside the network namespace at `path`, then returns the
/// thread to the namespace it was in. For work that borrows and so cannot move to another
/// thread: attaching a program to a device by name there, say (a tcx link stays on its
/// device whatever namespace the thread is in afterwards).
pub fn within<T>(path: &Path, work: impl FnOnce() -> T) -> Result<T> {
    let home = File::open("/proc/thread-self/ns/net").context("opening this thread's netns")?;
    let there = File::open(path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    // SAFETY: the fd is an open namespace file; setns changes only the calling thread.
    if unsafe { libc::setns(there.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "entering network namespace {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    let out = work();
    // SAFETY: as above, with the namespace this thread was in.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        // Everything after would run in the wrong namespace: nothing sensible is left to do.
        panic!(
            "could not return to dockflow's own network namespace: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(out)
}
