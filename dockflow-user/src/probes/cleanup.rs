//! Host state that outlives a process unless removed: clsact qdiscs and filters on kernels
//! before tcx (6.6). tcx and netfilter links are owned by file descriptors and die with them,
//! even on SIGKILL; legacy tc filters do not, so a start also removes ours from an earlier run.

use std::{
    process::{Command, Stdio},
    sync::Mutex,
};

use dockflow_common::NAME_PREFIX;

use crate::watch::Interface;

static CREATED_CLSACT: Mutex<Vec<Interface>> = Mutex::new(Vec::new());

pub(super) fn remember_clsact(iface: &Interface) {
    CREATED_CLSACT.lock().unwrap().push(iface.clone());
}

/// Removes every clsact qdisc we added (and with it any filter still on it).
pub(super) fn remove_created_qdiscs() {
    for iface in CREATED_CLSACT.lock().unwrap().drain(..) {
        tc(&iface, &["qdisc", "del", "dev", &iface.name, "clsact"]);
    }
}

/// `tc ARGS` in the interface's namespace (through nsenter for one not dockflow's own).
fn tc(iface: &Interface, args: &[&str]) -> Option<String> {
    let mut command = match &iface.namespace {
        Some(ns) => {
            let mut nsenter = Command::new("nsenter");
            nsenter
                .arg(format!("--net={}", ns.path.display()))
                .arg("tc");
            nsenter
        }
        None => Command::new("tc"),
    };
    let out = command
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes tc filters running our programs on `iface`, left by a run that was killed; returns
/// how many. When that leaves the clsact qdisc without filters, the qdisc was ours too.
pub(super) fn remove_stale_tc_filters(iface: &Interface) -> usize {
    let name = iface.name.as_str();
    let mut removed = 0;
    for direction in ["ingress", "egress"] {
        let Some(listing) = tc(iface, &["filter", "show", "dev", name, direction]) else {
            continue;
        };
        for pref in stale_filter_prefs(&listing) {
            if tc(
                iface,
                &["filter", "del", "dev", name, direction, "pref", &pref],
            )
            .is_some()
            {
                removed += 1;
            }
        }
    }
    let no_filters_left = ["ingress", "egress"].iter().all(|d| {
        tc(iface, &["filter", "show", "dev", name, d]).is_some_and(|l| l.trim().is_empty())
    });
    if removed > 0 && no_filters_left {
        tc(iface, &["qdisc", "del", "dev", name, "clsact"]);
    }
    removed
}

/// Priorities of filters whose BPF program carries our name prefix, from `tc filter show`:
/// `filter protocol all pref 49152 bpf chain 0 handle 0x1 df_tc_ingress direct-action ...`
fn stale_filter_prefs(listing: &str) -> Vec<String> {
    let mut prefs: Vec<String> = listing
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w.starts_with(NAME_PREFIX)))
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "pref")
                .nth(1)
                .map(str::to_string)
        })
        .collect();
    prefs.dedup();
    prefs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_our_filters() {
        let listing = "filter protocol all pref 49152 bpf chain 0 \nfilter protocol all pref 49152 bpf chain 0 handle 0x1 df_tc_ingress direct-action not_in_hw id 81 tag 0123 jited \nfilter protocol all pref 49153 bpf chain 0 handle 0x1 cilium_from direct-action not_in_hw id 90 tag 4567 jited \n";
        assert_eq!(stale_filter_prefs(listing), vec!["49152".to_string()]);
    }
}
