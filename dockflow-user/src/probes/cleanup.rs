//! Host state we created outside of fd-owned BPF links, undone at exit.
//!
//! tcx and netfilter links die with their file descriptors, so they need nothing here; a clsact
//! qdisc added on a pre-tcx kernel outlives us unless removed.

use std::sync::Mutex;

static CREATED_CLSACT: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(super) fn remember_clsact(iface: &str) {
    CREATED_CLSACT.lock().unwrap().push(iface.to_string());
}

/// Removes every clsact qdisc we added (and with it any filter still on it).
pub(super) fn remove_created_qdiscs() {
    for iface in CREATED_CLSACT.lock().unwrap().drain(..) {
        let _ = std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", &iface, "clsact"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
