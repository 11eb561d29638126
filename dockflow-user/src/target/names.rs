//! Interface names across network namespaces: an ifindex means nothing without its namespace,
//! and tracepoints see packets inside containers and named namespaces too.

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{links::list_links, netns};

/// (netns inode, ifindex) -> "name" for the host, "ns:name" elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceNames {
    pub host_netns: u32,
    /// Keyed "netns/ifindex" in recordings, so that it stays a JSON object there; by the pair
    /// in memory, so that a lookup (one per hop shown) builds no string.
    #[serde(with = "string_keys")]
    names: HashMap<(u32, u32), String>,
}

fn key(netns: u32, ifindex: u32) -> (u32, u32) {
    (netns, ifindex)
}

mod string_keys {
    use std::collections::HashMap;

    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(
        names: &HashMap<(u32, u32), String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(names.iter().map(|((ns, i), n)| (format!("{ns}/{i}"), n)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<HashMap<(u32, u32), String>, D::Error> {
        HashMap::<String, String>::deserialize(deserializer)?
            .into_iter()
            .map(|(key, name)| {
                let (ns, i) = key
                    .split_once('/')
                    .and_then(|(ns, i)| Some((ns.parse().ok()?, i.parse().ok()?)))
                    .ok_or_else(|| D::Error::custom(format!("bad interface key {key:?}")))?;
                Ok(((ns, i), name))
            })
            .collect()
    }
}

impl InterfaceNames {
    /// The host's interfaces, every namespace under /run/netns, and `extra` (label, netns path).
    pub fn collect(extra: &[(String, std::path::PathBuf)]) -> Result<Self> {
        let host_netns = netns::own_netns_inode()? as u32;
        let mut out = Self {
            host_netns,
            names: HashMap::new(),
        };
        for link in list_links()? {
            out.names.insert(key(host_netns, link.index), link.name);
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
            let Ok(links) = netns::in_netns(&path, list_links) else {
                continue;
            };
            for link in links {
                out.names
                    .entry(key(inode as u32, link.index))
                    .or_insert(format!("{label}:{}", link.name));
            }
        }
        Ok(out)
    }

    pub fn from_entries(
        host_netns: u32,
        entries: impl IntoIterator<Item = ((u32, u32), String)>,
    ) -> Self {
        Self {
            host_netns,
            names: entries
                .into_iter()
                .map(|((ns, i), n)| (key(ns, i), n))
                .collect(),
        }
    }

    /// Name of `ifindex` in `netns` (None: the host's, as tc events carry no namespace).
    pub fn name(&self, netns: Option<u32>, ifindex: u32) -> String {
        let ns = netns.unwrap_or(self.host_netns);
        match self.names.get(&key(ns, ifindex)) {
            Some(name) => name.clone(),
            None if ns == self.host_netns => format!("if{ifindex}"),
            None => format!("if{ifindex}@netns:{ns}"),
        }
    }
}
