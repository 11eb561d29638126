//! The connections seen, one row each (--summary): who talked to whom, over what, which way
//! their packets went, and how many went each way. What the seed's author needed before
//! knowing which container to follow.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    explain::{Explanation, Fact, NatKind, Outcome, Role},
    hop::{Direction, PacketPath},
};
use crate::model::endpoint;

/// One connection's row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Row {
    pub connection: u64,
    /// "billing (10.213.5.20:57830)", or the bare address of a client outside Docker.
    pub client: String,
    /// The server as the request finally reached it (after DNAT).
    pub server: String,
    /// "udp 5353", "tcp 8080", "arp", "icmp".
    pub service: String,
    /// "bridged only", "routed with DNAT", "masqueraded out", "delivered to the host", "sent by
    /// the host", "dropped: <reason> (<rule>)"; empty until its explanation is known.
    pub path: String,
    pub requests: u64,
    pub replies: u64,
    /// The exchange through dockerd's userland proxy this connection is a leg of: its front
    /// leg's connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u64>,
}

/// The table, filled as packets are shown and connections explained.
#[derive(Default)]
pub struct Summary {
    rows: BTreeMap<u64, Row>,
}

impl Summary {
    /// Counts a shown packet; a request (or a connection's first packet) names its ends.
    pub fn packet(&mut self, path: &PacketPath) {
        let Some(connection) = path.connection else {
            return;
        };
        let row = self.rows.entry(connection).or_insert_with(|| Row {
            connection,
            ..Row::default()
        });
        if let Some(leg) = &path.proxy {
            row.group = leg.group;
        }
        let request = path.direction != Some(Direction::Reply);
        if request {
            row.requests += 1;
        } else {
            row.replies += 1;
        }
        if row.client.is_empty() || (request && row.requests == 1) {
            // The reply's ends are the request's turned around.
            let last = path
                .hops
                .last()
                .and_then(|h| h.event.packet.as_ref())
                .unwrap_or(&path.packet);
            let (client, server, name_c, name_s) = if request {
                (&path.packet, last, &path.ends.src, &path.ends.dst)
            } else {
                (last, &path.packet, &path.ends.dst, &path.ends.src)
            };
            let (client_port, server_port) = if request {
                (client.sport, last.dport)
            } else {
                (client.dport, server.sport)
            };
            let (client_addr, server_addr) = if request {
                (client.src, server.dst)
            } else {
                (client.dst, server.src)
            };
            row.client = named(name_c, endpoint(client_addr, client_port));
            row.server = named(name_s, endpoint(server_addr, server_port));
            row.service = match (path.packet.arp.is_some(), server_port) {
                (true, _) => "arp".into(),
                (false, Some(port)) => format!("{} {port}", path.packet.protocol_name()),
                (false, None) => path.packet.protocol_name(),
            };
        }
    }

    /// Takes the path kind from a connection's explanation.
    pub fn explanation(&mut self, explanation: &Explanation) {
        let facts: Vec<&Fact> = explanation.steps.iter().map(|s| &s.fact).collect();
        if let Some(row) = self.rows.get_mut(&explanation.connection) {
            row.path = path_kind(&facts);
        }
    }

    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.values()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn named(name: &Option<String>, at: String) -> String {
    match name {
        Some(name) => format!("{name} ({at})"),
        None => at,
    }
}

/// The request's way, in the table's words.
fn path_kind(facts: &[&Fact]) -> String {
    let nat = |kind: NatKind| {
        facts
            .iter()
            .any(|f| matches!(f, Fact::Nat { nat, .. } if *nat == kind))
    };
    for fact in facts {
        if let Fact::Dropped {
            role: Role::Request,
            reason,
            rule,
            ..
        } = fact
        {
            let docker = facts.iter().find_map(|f| match f {
                Fact::DockerRule { why, .. } => Some(why.words()),
                _ => None,
            });
            return match (rule, docker) {
                (Some(rule), Some(docker)) => {
                    format!(
                        "dropped: {docker} ({} {} {})",
                        rule.family, rule.table, rule.chain
                    )
                }
                (Some(rule), None) => format!(
                    "dropped: {reason} ({} {} {}: {})",
                    rule.family,
                    rule.table,
                    rule.chain,
                    rule.rule.as_deref().unwrap_or("policy")
                ),
                (None, _) => format!("dropped: {reason}"),
            };
        }
    }
    let outcome = facts.iter().find_map(|f| match f {
        Fact::Outcome {
            role: Role::Request,
            outcome,
            ..
        } => Some(*outcome),
        _ => None,
    });
    for fact in facts {
        match fact {
            Fact::ProxyAccepts { proxy, .. } => {
                return format!("to docker-proxy (pid {}), relayed", proxy.pid);
            }
            Fact::ProxyOpens { proxy, .. } => {
                return match proxy.group {
                    Some(front) => format!("docker-proxy (pid {}) relaying {front}", proxy.pid),
                    None => format!("docker-proxy (pid {}) relaying", proxy.pid),
                };
            }
            _ => {}
        }
    }
    if facts.iter().any(|f| matches!(f, Fact::ArpAnnounced { .. })) {
        return "bridged only (arp announcement)".into();
    }
    if facts.iter().any(|f| matches!(f, Fact::ArpAsked { .. })) {
        return "bridged only (arp)".into();
    }
    match outcome {
        Some(Outcome::BridgedOnly) if nat(NatKind::Dnat) => "bridged with DNAT (hairpin)".into(),
        Some(Outcome::BridgedOnly) => "bridged only".into(),
        Some(Outcome::ToOtherNode) => "to another node (VXLAN)".into(),
        Some(Outcome::BalancedToTask) => "routing mesh to a task".into(),
        Some(Outcome::BalancedToOtherNode) => "routing mesh to another node".into(),
        Some(Outcome::Routed) if nat(NatKind::Snat) => "masqueraded out".into(),
        Some(Outcome::Routed) if nat(NatKind::Dnat) => "routed with DNAT".into(),
        Some(Outcome::Routed) => "routed".into(),
        Some(Outcome::DeliveredLocally) => "delivered to the host".into(),
        Some(Outcome::SentByHost) if nat(NatKind::Dnat) => "sent by the host, DNAT".into(),
        Some(Outcome::SentByHost) => "sent by the host".into(),
        None => String::new(),
    }
}
