//! The ruleset as `nft -a list ruleset` prints it: rule text by handle, and the hook of each
//! base chain, so a trace's (table, chain, handle) reads as the rule a user wrote.

use std::collections::HashMap;

use anyhow::{Context as _, Result, bail};

/// (family, table, chain)
pub type ChainKey = (String, String, String);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Rule text (counters removed) by (family, table, chain) and handle.
    rules: HashMap<(ChainKey, u64), String>,
    /// Hook and priority of base chains.
    hooks: HashMap<ChainKey, (String, String)>,
}

impl Ruleset {
    /// The live ruleset, one table at a time: nft 1.0.6 leaves an ip6 table's NAT statements
    /// out of a whole-ruleset listing (`dnat to [addr]:port` vanishes), not out of its table's.
    pub fn load() -> Result<Self> {
        let tables = nft(&["list", "tables"])?;
        let mut text = String::new();
        for line in tables.lines() {
            if let ["table", family, name] = line.split_whitespace().collect::<Vec<_>>()[..] {
                // A table deleted since the list has nothing to name.
                text.push_str(&nft(&["-a", "list", "table", family, name]).unwrap_or_default());
            }
        }
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let (mut family, mut table, mut chain) = (String::new(), String::new(), String::new());
        for line in text.lines() {
            let line = line.trim();
            let (body, handle) = match line.rsplit_once(" # handle ") {
                Some((body, h)) => (body.trim(), h.trim().parse::<u64>().ok()),
                None => (line, None),
            };
            let words: Vec<&str> = body.split_whitespace().collect();
            match words.as_slice() {
                ["table", f, t, "{"] => (family, table) = (f.to_string(), t.to_string()),
                ["chain", c, "{"] => chain = c.to_string(),
                ["type", _, "hook", hook, "priority", prio, ..] => {
                    let prio = prio.trim_end_matches(';').to_string();
                    out.hooks.insert(
                        (family.clone(), table.clone(), chain.clone()),
                        (hook.to_string(), prio),
                    );
                }
                ["}"] | [] => {}
                _ => {
                    if let Some(handle) = handle {
                        out.rules.insert(
                            ((family.clone(), table.clone(), chain.clone()), handle),
                            without_counters(body),
                        );
                    }
                }
            }
        }
        out
    }

    pub fn rule(&self, chain: &ChainKey, handle: u64) -> Option<&str> {
        self.rules.get(&(chain.clone(), handle)).map(String::as_str)
    }

    /// (hook, priority) of a base chain.
    pub fn hook(&self, chain: &ChainKey) -> Option<&(String, String)> {
        self.hooks.get(chain)
    }
}

/// What `nft ARGS` prints.
fn nft(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("nft")
        .args(args)
        .output()
        .context("running nft (is nftables installed?)")?;
    if !out.status.success() {
        bail!(
            "nft {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// "counter packets 3 bytes 180 accept" -> "counter accept": counters change, rules do not.
fn without_counters(rule: &str) -> String {
    let words: Vec<&str> = rule.split_whitespace().collect();
    let mut out = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        if (words[i] == "packets" || words[i] == "bytes")
            && i + 1 < words.len()
            && words[i + 1].parse::<u64>().is_ok()
        {
            i += 2;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULESET: &str = r#"table ip nat { # handle 1
	chain DOCKER { # handle 1
		iifname "docker1" counter packets 0 bytes 0 return # handle 12
		iifname != "docker1" udp dport 1812 counter packets 3 bytes 180 dnat to 172.20.0.2:1812 # handle 14
	}

	chain PREROUTING { # handle 5
		type nat hook prerouting priority dstnat; policy accept;
		fib daddr type local counter packets 223 bytes 14663 jump DOCKER # handle 6
	}
}
table bridge dockflow_trace { # handle 9
	chain pre { # handle 1
		type filter hook prerouting priority -350; policy accept;
	}
}
"#;

    #[test]
    fn reads_rules_and_base_chain_hooks() {
        let r = Ruleset::parse(RULESET);
        let docker: ChainKey = ("ip".into(), "nat".into(), "DOCKER".into());
        assert_eq!(
            r.rule(&docker, 14),
            Some(r#"iifname != "docker1" udp dport 1812 counter dnat to 172.20.0.2:1812"#)
        );
        assert_eq!(r.hook(&docker), None);
        let pre: ChainKey = ("ip".into(), "nat".into(), "PREROUTING".into());
        assert_eq!(
            r.hook(&pre),
            Some(&("prerouting".to_string(), "dstnat".to_string()))
        );
        assert_eq!(
            r.rule(&pre, 6),
            Some("fib daddr type local counter jump DOCKER")
        );
        let bridge: ChainKey = ("bridge".into(), "dockflow_trace".into(), "pre".into());
        assert_eq!(
            r.hook(&bridge),
            Some(&("prerouting".to_string(), "-350".to_string()))
        );
    }
}
