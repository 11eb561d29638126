//! Kernel function addresses to names, parsed from /proc/kallsyms' text (which
//! `dockflow::kernel::load_symbols` reads; root sees real addresses).

use std::{collections::BTreeMap, sync::Arc};

/// Only the functions dockflow names in its output: netfilter hook continuations.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct KernelSymbols {
    /// Shared, not copied, into every event that names one.
    by_address: BTreeMap<u64, Arc<str>>,
}

impl KernelSymbols {
    /// The text symbols of `text` (kallsyms' format) whose names satisfy `keep`.
    pub fn parse(text: &str, keep: impl Fn(&str) -> bool) -> Self {
        let by_address = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let address = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                (address != 0 && matches!(kind, "t" | "T") && keep(name))
                    .then(|| (address, Arc::from(name)))
            })
            .collect();
        Self { by_address }
    }

    /// The exact symbol at `address`.
    pub fn name(&self, address: u64) -> Option<&Arc<str>> {
        self.by_address.get(&address)
    }

    pub fn from_entries(entries: impl IntoIterator<Item = (u64, String)>) -> Self {
        Self {
            by_address: entries
                .into_iter()
                .map(|(address, name)| (address, Arc::from(name)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_wanted_text_symbols() {
        let text = "ffffffff81a00000 T br_nf_pre_routing_finish\nffffffff81a00100 t ip_rcv_finish\nffffffff82000000 D some_data\n0000000000000000 T hidden\n";
        let s = KernelSymbols::parse(text, |n| {
            n.contains("finish") || n == "hidden" || n == "some_data"
        });
        assert_eq!(
            s.name(0xffffffff81a00000).map(|n| &**n),
            Some("br_nf_pre_routing_finish")
        );
        assert_eq!(
            s.name(0xffffffff81a00100).map(|n| &**n),
            Some("ip_rcv_finish")
        );
        assert_eq!(s.name(0xffffffff82000000), None);
        assert_eq!(s.name(0), None, "a hidden address names nothing");
    }
}
