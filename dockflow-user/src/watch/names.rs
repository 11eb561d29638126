//! Interface names across network namespaces: an ifindex means nothing without its namespace,
//! and tracepoints see packets inside containers and named namespaces too.

use anyhow::Result;

use super::{links::list_links, netns};
use crate::model::topology::InterfaceNames;

/// The host's interfaces, every namespace under /run/netns, and `extra` (label, netns path).
pub fn collect(extra: &[(String, std::path::PathBuf)]) -> Result<InterfaceNames> {
    let host_netns = netns::own_netns_inode()? as u32;
    let mut out = InterfaceNames::new(host_netns);
    for link in list_links()? {
        out.add(host_netns, link.index, link.name);
    }
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()));
    for (label, path) in named.chain(extra.iter().cloned()) {
        // A namespace we cannot enter only loses its names, not the trace.
        let Ok(inode) = netns::netns_inode(&path) else {
            continue;
        };
        out.label_namespace(inode as u32, label.clone());
        let Ok(links) = netns::in_netns(&path, list_links) else {
            continue;
        };
        for link in links {
            out.add(inode as u32, link.index, format!("{label}:{}", link.name));
        }
    }
    Ok(out)
}
