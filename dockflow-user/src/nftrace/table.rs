//! The `dockflow_trace_<pid>` tables that mark the target's packets for tracing. One pair per
//! running dockflow, so that runs side by side leave each other's tables alone; a start removes
//! the tables of runs that are gone (killed), found by the pid in their name.

use std::{
    io::Write as _,
    net::IpAddr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use super::TraceRules;
use crate::watch::Target;

/// Every table of ours starts with this (older versions used it alone).
pub const TABLE_PREFIX: &str = "dockflow_trace";
/// Families our table exists in: inet covers IPv4 and IPv6 hooks, bridge the bridge hooks.
const FAMILIES: [&str; 2] = ["inet", "bridge"];

/// Our tables, removed when dropped.
pub struct TraceTable {
    name: String,
    /// The IP protocols to mark (the filter expression's possible ones); None: all.
    protocols: Option<Vec<u8>>,
    /// Every packet, or each flow's first ones.
    mode: TraceRules,
}

impl TraceTable {
    /// Removes tables killed runs left, then creates ours for `target`. Returns the table and
    /// the names of the leftovers removed.
    pub fn create(
        target: &Target,
        protocols: Option<Vec<u8>>,
        mode: TraceRules,
    ) -> Result<(Self, Vec<String>)> {
        let removed = remove_leftovers();
        let table = Self {
            name: format!("{TABLE_PREFIX}_{}", std::process::id()),
            protocols,
            mode,
        };
        // Dropped (the tables removed) if the script fails half way.
        table.update(target)?;
        Ok((table, removed))
    }

    /// Creates the tables, or replaces their rules with `target`'s in one transaction.
    pub fn update(&self, target: &Target) -> Result<()> {
        let mut script = script(&self.name, target, self.protocols.as_deref(), self.mode);
        for family in FAMILIES {
            // Declaring a table that exists is no error; flushing it empties its chains first.
            script.insert_str(
                0,
                &format!(
                    "add table {family} {name}\nflush table {family} {name}\n",
                    name = self.name
                ),
            );
        }
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft (is nftables installed?)")?;
        child.stdin.take().unwrap().write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "writing the {} tables failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            );
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TraceTable {
    fn drop(&mut self) {
        for family in FAMILIES {
            delete_table(family, &self.name);
        }
    }
}

fn delete_table(family: &str, name: &str) -> bool {
    Command::new("nft")
        .args(["delete", "table", family, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes the tables of dockflow runs that no longer exist; returns their names.
fn remove_leftovers() -> Vec<String> {
    let Ok(out) = Command::new("nft")
        .args(["list", "tables"])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let mut removed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().skip(1);
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .filter(|(_, name)| is_leftover(name))
        .filter(|(family, name)| delete_table(family, name))
        .map(|(_, name)| name)
        .collect();
    removed.sort();
    removed.dedup();
    removed
}

/// A table of ours whose dockflow is gone: the pid in its name is not a running dockflow (or
/// the name has no pid: an older version's).
fn is_leftover(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TABLE_PREFIX) else {
        return false;
    };
    match rest.strip_prefix('_').map(str::parse::<u32>) {
        None if rest.is_empty() => true,
        Some(Ok(pid)) => !is_running_dockflow(pid),
        _ => false,
    }
}

fn is_running_dockflow(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "dockflow")
}

/// The nft script: in each family, [`chains`] at an early priority whose rules mark packets
/// from/to the target's addresses or to/from its published ports, of `protocols` only when
/// given (a filter expression can match no others, and tracing costs every packet marked).
/// With [`TraceRules::First`] a match goes through [`ONCE_CHAIN`] instead, which marks a flow's
/// packet only when its key is not in the table's sets yet.
fn script(table: &str, target: &Target, protocols: Option<&[u8]>, mode: TraceRules) -> String {
    let mut matches: Vec<String> = Vec::new();
    for address in &target.addresses {
        let ip = match address {
            IpAddr::V4(_) => "ip",
            IpAddr::V6(_) => "ip6",
        };
        matches.push(format!("{ip} saddr {address}"));
        matches.push(format!("{ip} daddr {address}"));
    }
    for port in &target.published {
        if port.protocol == "tcp" || port.protocol == "udp" {
            for p in [port.host_port, port.container_port] {
                matches.push(format!("meta l4proto {} th dport {p}", port.protocol));
                matches.push(format!("meta l4proto {} th sport {p}", port.protocol));
            }
        }
    }
    matches.sort();
    matches.dedup();
    // A target with nothing to match (bare interfaces) traces nothing rather than everything.
    let only = match protocols {
        Some(list) => {
            let list: Vec<String> = list.iter().map(u8::to_string).collect();
            format!("meta l4proto {{ {} }} ", list.join(", "))
        }
        None => String::new(),
    };
    let action = match mode {
        TraceRules::First => format!("jump {ONCE_CHAIN}"),
        TraceRules::All | TraceRules::None => "meta nftrace set 1".to_string(),
    };
    let rules: String = matches
        .iter()
        .map(|m| format!("    {only}{m} {action}\n"))
        .collect();
    let mut script = String::new();
    for family in FAMILIES {
        script.push_str(&format!("table {family} {table} {{\n"));
        if mode == TraceRules::First {
            script.push_str(&once_chain());
        }
        for (chain, hook) in chains(family) {
            script.push_str(&format!("  chain {chain} {{\n    type filter hook {hook} priority -350; policy accept;\n{rules}  }}\n"));
        }
        script.push_str("}\n");
    }
    script
}

/// The chain a match jumps to with [`TraceRules::First`].
const ONCE_CHAIN: &str = "dfonce";
/// How long a flow's key stays in a set: its next packet after that is traced again, a sample.
const SAMPLE_EVERY: &str = "1s";
/// Keys a set holds at most; a flow past that is traced whole (the mark comes before the add,
/// and an add to a full set ends the rule before its `return`).
const SET_SIZE: u32 = 65536;

/// Sets of the flows traced recently, by their headers as this hook sees them (NAT may have
/// rewritten them since an earlier hook: each hook's keys are its own), and the chain that
/// marks a packet whose key is new. TCP keys hold the SYN, FIN and RST flags, so that a
/// connection's opening, closing and reset are traced too. A packet of another protocol (ICMP,
/// an error about any flow) is always marked. Both families' tables hold their own sets,
/// each key added on the first packet either sees.
fn once_chain() -> String {
    let flags = "tcp flags & (fin | syn | rst)";
    let mut sets = String::new();
    let mut rules = String::new();
    for (ip, proto, extra) in [
        ("ip", "tcp", Some(flags)),
        ("ip6", "tcp", Some(flags)),
        ("ip", "udp", None),
        ("ip6", "udp", None),
    ] {
        let name = format!("{proto}{}", if ip == "ip" { 4 } else { 6 });
        let mut key = format!("{ip} saddr . {ip} daddr . th sport . th dport");
        let mut typeof_key = key.clone();
        if let Some(extra) = extra {
            key.push_str(&format!(" . {extra}"));
            typeof_key.push_str(" . tcp flags");
        }
        sets.push_str(&format!(
            "  set {name} {{ typeof {typeof_key}; flags dynamic,timeout; timeout {SAMPLE_EVERY}; size {SET_SIZE}; }}\n"
        ));
        rules.push_str(&format!(
            "    meta l4proto {proto} {key} != @{name} meta nftrace set 1 add @{name} {{ {key} }} return\n"
        ));
    }
    format!(
        "{sets}  chain {ONCE_CHAIN} {{\n{rules}    meta l4proto {{ tcp, udp }} return\n    meta nftrace set 1\n  }}\n"
    )
}

/// Where a packet of the target's is marked first; the mark stays with the packet. inet:
/// prerouting (arriving, or bridged frames that br_netfilter hands to the IP hooks), output
/// (sent by the host), and forward (a packet that only becomes the target's by DNAT, which a
/// --netns target has no published port to match before). bridge: prerouting only, so that
/// bridge-family rules see the frames that enter the bridge from a port marked; frames the
/// bridge forwards passed that chain, and those the host sends into it were marked already.
/// Every chain costs every packet of the host at that hook a few rule checks.
fn chains(family: &str) -> &'static [(&'static str, &'static str)] {
    match family {
        "bridge" => &[("dfpre", "prerouting")],
        _ => &[
            ("dfpre", "prerouting"),
            ("dffwd", "forward"),
            ("dfout", "output"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::docker::PublishedPort;

    #[test]
    fn marks_the_targets_addresses_and_ports_in_both_families() {
        let target = Target {
            addresses: vec!["172.20.0.2".parse().unwrap()],
            published: vec![PublishedPort {
                container_port: 1812,
                protocol: "udp".into(),
                host_port: 1812,
            }],
            ..Target::default()
        };
        let s = script("dockflow_trace_42", &target, None, TraceRules::All);
        assert!(
            s.contains("table inet dockflow_trace_42 {")
                && s.contains("table bridge dockflow_trace_42 {"),
            "{s}"
        );
        assert!(
            s.contains("    ip daddr 172.20.0.2 meta nftrace set 1\n"),
            "{s}"
        );
        assert!(
            s.contains("    meta l4proto udp th dport 1812 meta nftrace set 1\n"),
            "{s}"
        );
        assert_eq!(
            s.matches("type filter hook prerouting priority -350")
                .count(),
            2
        );
        // forward and output in inet only: in the bridge, prerouting has marked them already.
        assert_eq!(
            s.matches("type filter hook forward priority -350").count(),
            1
        );
        assert_eq!(
            s.matches("type filter hook output priority -350").count(),
            1
        );
    }

    #[test]
    fn by_default_marks_a_flows_first_packets_through_the_once_chain() {
        let target = Target {
            addresses: vec!["172.20.0.2".parse().unwrap()],
            ..Target::default()
        };
        let s = script("dockflow_trace_42", &target, None, TraceRules::First);
        assert!(s.contains("    ip daddr 172.20.0.2 jump dfonce\n"), "{s}");
        assert!(!s.contains("daddr 172.20.0.2 meta nftrace set 1"), "{s}");
        assert_eq!(
            s.matches("  chain dfonce {").count(),
            2,
            "in both families: {s}"
        );
        assert!(
            s.contains("    meta l4proto udp ip saddr . ip daddr . th sport . th dport != @udp4 meta nftrace set 1 add @udp4 { ip saddr . ip daddr . th sport . th dport } return\n"),
            "{s}"
        );
        assert!(s.contains("timeout 1s; size 65536;"), "{s}");
    }

    #[test]
    fn marks_only_the_protocols_a_filter_can_match() {
        let target = Target {
            addresses: vec!["172.20.0.2".parse().unwrap()],
            ..Target::default()
        };
        let s = script(
            "dockflow_trace_42",
            &target,
            Some(&[1, 17, 58]),
            TraceRules::All,
        );
        assert!(
            s.contains("    meta l4proto { 1, 17, 58 } ip saddr 172.20.0.2 meta nftrace set 1\n"),
            "{s}"
        );
    }
}
