//! The nftables rules that judged a packet: which hop each evaluation belongs to (the hop at the
//! same family and hook: IP families map onto netfilter hops, bridge-family chains onto the
//! bridge's own hops), and a rule as an explanation cites it.

use serde::Serialize;

use super::hop::{Hop, HopKind, Layer, PacketPath};
use crate::model::{Family, Hook, NftFamily, Packet, RuleTrace, Verdict};

/// Whether `rule` was evaluated at the place `hop` stands for.
pub fn ran_at(rule: &RuleTrace, hop: &HopKind, packet: &Packet) -> bool {
    let Some(rule_hook) = rule.hook else {
        return false;
    };
    let family = rule.netfilter_family(packet);
    let bridge_hooks: &[Hook] = match hop {
        HopKind::Hook {
            family: hop_family,
            hook,
            ..
        } => return *hop_family == family && *hook == rule_hook,
        HopKind::FromPort { .. } | HopKind::FromTunnel { .. } => &[Hook::Prerouting],
        HopKind::PassedUp { .. } => &[Hook::Input],
        HopKind::IntoBridge { .. } => &[Hook::Output],
        HopKind::HandedBack { .. } => &[Hook::Forward],
        HopKind::ToPort { .. } | HopKind::BridgeForward { .. } | HopKind::ToTunnel { .. } => {
            &[Hook::Forward, Hook::Postrouting]
        }
        _ => &[],
    };
    family == Family::Bridge && bridge_hooks.contains(&rule_hook)
}

/// For each rule, the index of the first hop it ran at (None: no such hop was seen). The
/// trace is the host's ruleset's: hooks in other namespaces (a container's, a load
/// balancer's) are never where its rules ran.
pub fn placed(rules: &[RuleTrace], hops: &[Hop], packet: &Packet) -> Vec<Option<usize>> {
    rules
        .iter()
        .map(|rule| {
            hops.iter()
                .position(|hop| hop.layer != Layer::Device && ran_at(rule, &hop.kind, packet))
        })
        .collect()
}

/// Places `path`'s rules anew, after its rules or hops were changed (tests build such paths).
pub fn place(path: &mut PacketPath) {
    path.rule_at = placed(&path.rules, &path.hops, &path.packet);
}

/// An nftables rule that judged the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// nft table family (ip, ip6, inet, bridge).
    pub family: NftFamily,
    pub table: String,
    pub chain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<Hook>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub verdict: Verdict,
}

impl RuleRef {
    pub fn of(r: &RuleTrace) -> Self {
        Self {
            family: r.family,
            table: r.table.clone(),
            chain: r.chain.clone(),
            hook: r.hook,
            rule: r.rule.clone(),
            verdict: r.verdict.clone(),
        }
    }
}
