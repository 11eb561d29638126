//! What the host's interfaces are, as far as a packet's path is concerned: bridges, their
//! ports (and which container is behind a port), everything else. Collected once at start and
//! stored in recordings, so replay classifies hops exactly as the live run did.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::target::{links::Link, names::InterfaceNames};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Interface names across namespaces.
    pub names: InterfaceNames,
    /// Host ifindex of each bridge device.
    pub bridges: Vec<u32>,
    /// Host ifindex of each bridge port -> its bridge's ifindex.
    pub ports: HashMap<u32, u32>,
    /// Host ifindex of a bridge port -> the container behind it (when known).
    pub port_owner: HashMap<u32, String>,
}

/// Where an interface sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Bridge,
    BridgePort {
        bridge: u32,
    },
    /// Any other host interface (a physical NIC, the lab's external link, ...).
    Host,
    /// Inside another network namespace (a container's eth0, say).
    Elsewhere,
}

impl Topology {
    /// From the host's links; `owners` names the container behind known ports.
    pub fn from_links(
        names: InterfaceNames,
        host_links: &[Link],
        owners: HashMap<u32, String>,
    ) -> Self {
        let bridges: Vec<u32> = host_links
            .iter()
            .filter(|l| l.kind.as_deref() == Some("bridge"))
            .map(|l| l.index)
            .collect();
        let ports = host_links
            .iter()
            .filter_map(|l| {
                l.master
                    .filter(|m| bridges.contains(m))
                    .map(|m| (l.index, m))
            })
            .collect();
        Self {
            names,
            bridges,
            ports,
            port_owner: owners,
        }
    }

    pub fn place(&self, netns: Option<u32>, ifindex: u32) -> Place {
        if netns.is_some_and(|ns| ns != self.names.host_netns) {
            return Place::Elsewhere;
        }
        if self.bridges.contains(&ifindex) {
            return Place::Bridge;
        }
        match self.ports.get(&ifindex) {
            Some(bridge) => Place::BridgePort { bridge: *bridge },
            None => Place::Host,
        }
    }

    pub fn name(&self, netns: Option<u32>, ifindex: u32) -> String {
        self.names.name(netns, ifindex)
    }

    /// "vethcccc (radius)" for a port with a known container, else the name.
    pub fn port_label(&self, ifindex: u32) -> String {
        let name = self.names.name(None, ifindex);
        match self.port_owner.get(&ifindex) {
            Some(owner) => format!("{name} ({owner})"),
            None => name,
        }
    }
}
