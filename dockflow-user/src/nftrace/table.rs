//! The `dockflow_trace` tables that mark the target's packets for tracing.

use std::{
    io::Write as _,
    net::IpAddr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::target::Target;

pub const TABLE: &str = "dockflow_trace";
/// Families our table exists in: inet covers IPv4 and IPv6 hooks, bridge the bridge hooks.
const FAMILIES: [&str; 2] = ["inet", "bridge"];

/// Our tables, removed when dropped.
pub struct TraceTable {
    _private: (),
}

impl TraceTable {
    /// Removes tables a killed run left, then creates ours for `target`. Returns the table and
    /// whether leftovers were removed.
    pub fn create(target: &Target) -> Result<(Self, bool)> {
        let removed = remove_tables();
        let script = script(target);
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
            remove_tables();
            bail!(
                "creating the {TABLE} tables failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            );
        }
        Ok((Self { _private: () }, removed))
    }
}

impl Drop for TraceTable {
    fn drop(&mut self) {
        remove_tables();
    }
}

/// Deletes our tables; true if there were any.
fn remove_tables() -> bool {
    FAMILIES
        .iter()
        .map(|family| {
            Command::new("nft")
                .args(["delete", "table", family, TABLE])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .fold(false, |any, removed| any | removed)
}

/// The nft script: in each family, prerouting, forward and output chains at an early priority
/// whose rules mark packets from/to the target's addresses or to/from its published ports.
fn script(target: &Target) -> String {
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
    let rules: String = matches
        .iter()
        .map(|m| format!("    {m} meta nftrace set 1\n"))
        .collect();
    let mut script = String::new();
    for family in FAMILIES {
        script.push_str(&format!("table {family} {TABLE} {{\n"));
        // forward too: a packet that only becomes the target's by DNAT (a --netns target has no
        // published ports to match before it) is marked from there on.
        for (chain, hook) in [
            ("dfpre", "prerouting"),
            ("dffwd", "forward"),
            ("dfout", "output"),
        ] {
            script.push_str(&format!("  chain {chain} {{\n    type filter hook {hook} priority -350; policy accept;\n{rules}  }}\n"));
        }
        script.push_str("}\n");
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::docker::PublishedPort;

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
        let s = script(&target);
        assert!(
            s.contains("table inet dockflow_trace {")
                && s.contains("table bridge dockflow_trace {"),
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
        assert_eq!(
            s.matches("type filter hook forward priority -350").count(),
            2
        );
    }
}
