//! The capabilities dockflow needs, checked before anything is attached, so that a run with too
//! few rights ends with one line naming what is missing instead of a refused attach midway.

use anyhow::{Result, bail};

/// (bit, name, what for): without either, nothing dockflow does can work. CAP_BPF and
/// CAP_PERFMON would do for loading programs and perf events, but entering the containers'
/// network namespaces (setns) takes CAP_SYS_ADMIN anyway, which covers both.
const NEEDED: [(u32, &str, &str); 2] = [
    (
        21,
        "CAP_SYS_ADMIN",
        "BPF programs, perf events, entering containers' namespaces",
    ),
    (12, "CAP_NET_ADMIN", "tc, netfilter links, nftables"),
];

/// Fails with one line naming the needed capabilities this process does not have.
pub fn check() -> Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // Unreadable or unknown: let the kernel say no later rather than refuse a run that works.
    let Some(effective) = effective(&status) else {
        return Ok(());
    };
    let missing = missing(effective);
    if !missing.is_empty() {
        bail!(
            "dockflow runs without {}; it needs CAP_SYS_ADMIN and CAP_NET_ADMIN",
            missing.join(" and without ")
        );
    }
    Ok(())
}

/// The CapEff mask in a /proc/PID/status text.
fn effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// "CAP_NET_ADMIN (tc, netfilter links, nftables)" for each needed capability not in `mask`.
fn missing(mask: u64) -> Vec<String> {
    NEEDED
        .iter()
        .filter(|(bit, _, _)| mask & 1 << bit == 0)
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_a_capability_mask_lacks() {
        let status = "Name:\tdockflow\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffefff\n";
        let mask = effective(status).unwrap();
        assert_eq!(
            missing(mask),
            ["CAP_NET_ADMIN (tc, netfilter links, nftables)"]
        );
        assert!(missing(0x1ff_ffff_ffff).is_empty());
        assert_eq!(missing(0).len(), 2);
        assert_eq!(effective("Name:\tx\n"), None);
    }
}
