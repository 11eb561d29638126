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
use crate::{model::IpProto, watch::Target};

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

/// What marks a target's packet: one rule per address family and way, each a set lookup, so
/// that a host's every packet costs a handful of checks however many containers a network has
/// (a rule per address cost a busy flow a tenth of its throughput on a four-container network).
fn target_matches(target: &Target) -> Vec<String> {
    let listed = |mut items: Vec<String>| {
        items.sort();
        items.dedup();
        items.join(", ")
    };
    let mut matches = Vec::new();
    for (ip, v6) in [("ip", false), ("ip6", true)] {
        let addresses: Vec<String> = target
            .addresses
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(IpAddr::to_string)
            .collect();
        if !addresses.is_empty() {
            let set = listed(addresses);
            matches.push(format!("{ip} saddr {{ {set} }}"));
            matches.push(format!("{ip} daddr {{ {set} }}"));
        }
    }
    let ports: Vec<String> = target
        .published
        .iter()
        .filter(|port| port.protocol == IpProto::TCP || port.protocol == IpProto::UDP)
        .flat_map(|port| {
            [port.host_port, port.container_port].map(|p| format!("{} . {p}", port.protocol))
        })
        .collect();
    if !ports.is_empty() {
        let set = listed(ports);
        matches.push(format!("meta l4proto . th dport {{ {set} }}"));
        matches.push(format!("meta l4proto . th sport {{ {set} }}"));
    }
    matches
}

/// The nft script: in each family, [`chains`] at an early priority whose rules mark packets
/// from/to the target's addresses or to/from its published ports ([`target_matches`]), of `protocols` only when
/// given (a filter expression can match no others, and tracing costs every packet marked).
/// With [`TraceRules::First`] a match goes through [`ONCE_CHAIN`] instead, which marks a flow's
/// packet only when its key is not in the table's sets yet.
fn script(table: &str, target: &Target, protocols: Option<&[u8]>, mode: TraceRules) -> String {
    let matches = target_matches(target);
    // A target with nothing to match (bare interfaces) traces nothing rather than everything.
    let only = match protocols {
        Some(list) => {
            let list: Vec<String> = list.iter().map(u8::to_string).collect();
            format!("meta l4proto {{ {} }} ", list.join(", "))
        }
        None => String::new(),
    };
    // A flow traced within the last second leaves at once, by one set lookup (the
    // commonest case on a busy host: its later packets); the target's matches come after.
    // `goto`: the once chain's verdict ends this chain, so no second match evaluates again.
    let (known, action) = match mode {
        TraceRules::First => (flow_sets().known_rules(), format!("goto {ONCE_CHAIN}")),
        TraceRules::All | TraceRules::None => {
            (String::new(), "meta nftrace set 1 return".to_string())
        }
    };
    let rules: String = matches
        .iter()
        .map(|m| format!("    {only}{m} {action}\n"))
        .collect();
    let mut script = String::new();
    for family in FAMILIES {
        script.push_str(&format!("table {family} {table} {{\n"));
        if mode == TraceRules::First {
            script.push_str(&flow_sets().declarations_and_once_chain());
        }
        for (chain, hook) in chains(family) {
            script.push_str(&format!("  chain {chain} {{\n    type filter hook {hook} priority -350; policy accept;\n{known}{rules}  }}\n"));
        }
        script.push_str("}\n");
    }
    script
}

/// The chain a match goes to with [`TraceRules::First`].
const ONCE_CHAIN: &str = "dfonce";
/// How long a flow's key stays in a set: its next packet after that is traced again, a sample.
const SAMPLE_EVERY: &str = "1s";
/// Keys a set holds at most; a flow past that is traced whole (the mark comes before the add,
/// and an add to a full set ends the rule before its `return`).
const SET_SIZE: u32 = 65536;

/// Sets of the flows traced recently, by their headers as each hook sees them (NAT may have
/// rewritten them since an earlier hook: each hook's keys are its own). TCP keys hold the SYN,
/// FIN and RST flags, so that a connection's opening, closing and reset are traced too. A
/// packet of another protocol (ICMP, an error about any flow) is always marked. Both
/// families' tables hold their own sets, each key added on the first packet either sees.
struct FlowSets {
    /// (set name, protocol, key expression, typeof expression), commonest first.
    sets: Vec<(String, &'static str, String, String)>,
}

fn flow_sets() -> FlowSets {
    let flags = "tcp flags & (fin | syn | rst)";
    let sets = [
        ("ip", "tcp", Some(flags)),
        ("ip", "udp", None),
        ("ip6", "tcp", Some(flags)),
        ("ip6", "udp", None),
    ]
    .into_iter()
    .map(|(ip, proto, extra)| {
        let name = format!("{proto}{}", if ip == "ip" { 4 } else { 6 });
        let mut key = format!("{ip} saddr . {ip} daddr . th sport . th dport");
        let mut typeof_key = key.clone();
        if let Some(extra) = extra {
            key.push_str(&format!(" . {extra}"));
            typeof_key.push_str(" . tcp flags");
        }
        (name, proto, key, typeof_key)
    })
    .collect();
    FlowSets { sets }
}

impl FlowSets {
    /// The base chains' first rules: a flow traced within the last second leaves.
    fn known_rules(&self) -> String {
        self.sets
            .iter()
            .map(|(name, proto, key, _)| format!("    meta l4proto {proto} {key} @{name} return\n"))
            .collect()
    }

    /// The sets, and the chain that marks a packet whose key is new and adds it.
    fn declarations_and_once_chain(&self) -> String {
        let mut out = String::new();
        for (name, _, _, typeof_key) in &self.sets {
            out.push_str(&format!(
                "  set {name} {{ typeof {typeof_key}; flags dynamic,timeout; timeout {SAMPLE_EVERY}; size {SET_SIZE}; }}\n"
            ));
        }
        out.push_str(&format!("  chain {ONCE_CHAIN} {{\n"));
        for (name, proto, key, _) in &self.sets {
            out.push_str(&format!(
                "    meta l4proto {proto} {key} != @{name} meta nftrace set 1 add @{name} {{ {key} }} return\n"
            ));
        }
        out.push_str("    meta l4proto { tcp, udp } return\n    meta nftrace set 1\n  }\n");
        out
    }
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
                protocol: IpProto::UDP,
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
            s.contains("    ip daddr { 172.20.0.2 } meta nftrace set 1 return\n"),
            "{s}"
        );
        assert!(
            s.contains("    meta l4proto . th dport { udp . 1812 } meta nftrace set 1 return\n"),
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
        assert!(
            s.contains("    ip daddr { 172.20.0.2 } goto dfonce\n"),
            "{s}"
        );
        // A flow traced within the second leaves each base chain by its first rules.
        let prerouting = s.split("chain dfpre {").nth(1).unwrap();
        assert!(
            prerouting.starts_with("\n    type filter hook prerouting priority -350; policy accept;\n    meta l4proto tcp ip saddr . ip daddr . th sport . th dport . tcp flags & (fin | syn | rst) @tcp4 return\n    meta l4proto udp ip saddr . ip daddr . th sport . th dport @udp4 return\n"),
            "{s}"
        );
        assert!(
            !s.contains("daddr { 172.20.0.2 } meta nftrace set 1"),
            "{s}"
        );
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
    fn a_networks_addresses_and_ports_are_one_set_lookup_per_family_and_way() {
        let port = |protocol: &str, host_port, container_port| PublishedPort {
            container_port,
            protocol: IpProto::from_name(protocol).unwrap(),
            host_port,
        };
        let target = Target {
            addresses: ["10.7.0.3", "10.7.0.2", "fd07::2", "10.7.0.3"]
                .map(|a| a.parse().unwrap())
                .to_vec(),
            published: vec![
                port("tcp", 18080, 80),
                port("udp", 5353, 53),
                port("sctp", 9, 9),
            ],
            ..Target::default()
        };
        assert_eq!(
            target_matches(&target),
            [
                "ip saddr { 10.7.0.2, 10.7.0.3 }",
                "ip daddr { 10.7.0.2, 10.7.0.3 }",
                "ip6 saddr { fd07::2 }",
                "ip6 daddr { fd07::2 }",
                "meta l4proto . th dport { tcp . 18080, tcp . 80, udp . 53, udp . 5353 }",
                "meta l4proto . th sport { tcp . 18080, tcp . 80, udp . 53, udp . 5353 }",
            ]
        );
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
            s.contains(
                "    meta l4proto { 1, 17, 58 } ip saddr { 172.20.0.2 } meta nftrace set 1 return\n"
            ),
            "{s}"
        );
    }
}
