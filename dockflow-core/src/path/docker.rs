//! What Docker's own drop rules are for. Engines name them differently (20.10's
//! DOCKER-ISOLATION-STAGE-2, 28's raw-table PREROUTING rules, 29's nftables chains with rule
//! comments such as "DROP DIRECT ACCESS"), so a rule is recognised by where it sits and what it
//! matches, as the trace names it, never by one engine's spelling alone.

use serde::Serialize;

use super::{hop::PacketPath, rules::RuleRef};

/// Why a Docker rule dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DockerDrop {
    /// Between two Docker networks: containers on different networks may not talk.
    NetworkIsolation,
    /// To a container's own address from outside its bridge (Docker 28 and later): only
    /// published ports are reachable from other hosts, and only through the host's addresses.
    DirectAccess,
    /// Into a network from outside it, to a port that is not published.
    UnpublishedPort,
    /// Into or out of an `--internal` network: it has no way out and none in.
    InternalNetwork,
}

impl DockerDrop {
    /// The Docker rule `rule` is, when it dropped `path`.
    pub fn of(rule: &RuleRef, path: &PacketPath) -> Option<Self> {
        if rule.verdict != crate::model::Verdict::Drop {
            return None;
        }
        let text = rule.rule.as_deref().unwrap_or("");
        let in_raw_prerouting =
            (rule.table == "raw" && rule.chain == "PREROUTING") || rule.chain == "raw-PREROUTING";
        let to_container = path.ends.dst.is_some();
        let from_container = path.ends.src.is_some();
        if rule.chain.starts_with("DOCKER-ISOLATION") {
            // An internal network's rules name its own subnet: anything not from it (or not
            // to it) is dropped at its bridge.
            let internal = text.contains("saddr != ") || text.contains("daddr != ");
            return Some(if internal {
                Self::InternalNetwork
            } else {
                Self::NetworkIsolation
            });
        }
        if text.contains("DROP DIRECT ACCESS") || (in_raw_prerouting && to_container) {
            // From a container on another Docker network: that is isolation, done here.
            return Some(if from_container {
                Self::NetworkIsolation
            } else {
                Self::DirectAccess
            });
        }
        let docker_filter = (rule.table == "filter" && rule.chain == "DOCKER")
            || rule.chain.starts_with("filter-forward-in__");
        if text.contains("UNPUBLISHED PORT DROP") || (docker_filter && to_container) {
            return Some(if from_container {
                Self::NetworkIsolation
            } else {
                Self::UnpublishedPort
            });
        }
        None
    }

    /// A few words for the --summary table.
    pub fn words(self) -> &'static str {
        match self {
            DockerDrop::NetworkIsolation => "Docker's network isolation",
            DockerDrop::DirectAccess => "Docker's direct-access protection",
            DockerDrop::UnpublishedPort => "Docker's unpublished-port filter",
            DockerDrop::InternalNetwork => "Docker's internal network",
        }
    }

    /// One sentence: what the rule protects, and how a user lets such packets through.
    pub fn sentence(self, container: Option<&str>) -> String {
        let target = container.map_or("the container".to_string(), |c| format!("container {c}"));
        match self {
            DockerDrop::NetworkIsolation => "This is Docker's network isolation: containers on different Docker networks may not reach each other (Docker 28 and later drop such packets in the raw table's PREROUTING, before conntrack; earlier engines in the DOCKER-ISOLATION chains). To let them talk, connect one of them to the other's network too (`docker network connect`), or publish the port on the host and use the host's address.".to_string(),
            DockerDrop::DirectAccess => format!(
                "This is Docker's protection of container addresses (Docker 28 and later): a packet addressed straight to {target}'s address is dropped unless it comes in through the container's own bridge, so that nothing from other hosts reaches a container except through a published port on the host's addresses. To allow it: publish the port (`-p`) and use the host's address; or give the network gateway mode `nat-unprotected` or `routed` (`-o com.docker.network.bridge.gateway_mode_ipv4=routed`); or name the host interface as trusted (`-o com.docker.network.bridge.trusted_host_interfaces=IF`); or set `\"allow-direct-routing\": true` in daemon.json."
            ),
            DockerDrop::InternalNetwork => "This is an internal Docker network (`docker network create --internal`): Docker drops every packet that would leave it or enter it from elsewhere; only its own containers talk to each other. To reach the outside, connect the container to a second, non-internal network.".to_string(),
            DockerDrop::UnpublishedPort => format!(
                "This is Docker's filter for {target}'s network: from outside the network, only its published ports are let in (`-p` when the container is created), or every port with gateway mode `nat-unprotected`."
            ),
        }
    }
}
