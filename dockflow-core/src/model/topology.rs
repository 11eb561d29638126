//! What the host's interfaces are, as far as a packet's path is concerned: bridges, their
//! ports (and which container is behind a port), everything else, and their names across
//! namespaces. Collected at start (and again when it changes) by the `dockflow` crate's `watch`
//! module, and stored in recordings, so replay names and classifies hops as the live run did at
//! that moment.

use std::{collections::HashMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use super::IpProto;

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
    /// A container's address -> its name (every running container's; absent in recordings of
    /// older versions).
    #[serde(default)]
    pub address_owner: HashMap<IpAddr, String>,
    /// dockerd's userland proxies (docker-proxy processes) running then (absent in recordings
    /// of older versions).
    #[serde(default)]
    pub proxies: Vec<UserlandProxy>,
    /// Bridges inside other network namespaces (an overlay network's `br0`), with their
    /// ports; not written when there is none, so other recordings stay as they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_bridges: Vec<NamespaceBridge>,
}

/// A bridge in a namespace of its own, e.g. the `br0` of an overlay network inside Docker's
/// `1-<network id>` namespace, which bridges the tasks' veths and the VXLAN device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceBridge {
    /// The namespace's inode.
    pub netns: u32,
    pub ifindex: u32,
    /// Its ports there: ifindex, and the container behind the port when there is one.
    pub ports: Vec<(u32, Option<String>)>,
    /// Those of its ports that are VXLAN devices (the way to the other nodes): ifindex, VNI,
    /// and whether the device answers ARP itself from its neighbour table (`proxy`, as
    /// Docker's overlays have it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnels: Vec<(u32, u32, bool)>,
    /// The UDP port those VXLAN ports send to (IFLA_VXLAN_PORT: 4789 unless the swarm was
    /// made with --data-path-port); none in recordings made before dockflow kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
}

/// One docker-proxy process: dockerd's userland proxy for a published port. It listens on
/// the host's `host_ip:host_port` and relays each connection it accepts over a connection of
/// its own to the container's `container_ip:container_port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserlandProxy {
    pub pid: u32,
    /// tcp, udp or sctp.
    pub protocol: IpProto,
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_ip: IpAddr,
    pub container_port: u16,
}

impl UserlandProxy {
    /// Whether it listens where a packet to `dst:dport` of `protocol` arrives.
    pub fn listens_at(&self, protocol: IpProto, dst: IpAddr, dport: Option<u16>) -> bool {
        protocol == self.protocol
            && dport == Some(self.host_port)
            && dst.is_ipv4() == self.host_ip.is_ipv4()
            && (self.host_ip.is_unspecified() || self.host_ip == dst)
    }

    /// Whether a packet to `dst:dport` of `protocol` goes where it relays to.
    pub fn relays_to(&self, protocol: IpProto, dst: IpAddr, dport: Option<u16>) -> bool {
        protocol == self.protocol && dst == self.container_ip && dport == Some(self.container_port)
    }

    /// "0.0.0.0:18080", "[::]:18080".
    pub fn listen_words(&self) -> String {
        super::endpoint(self.host_ip, Some(self.host_port))
    }
}

/// Where an interface sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Bridge,
    BridgePort {
        bridge: u32,
    },
    /// A VXLAN port of a bridge: frames through it go to or come from other nodes, wrapped in
    /// UDP (an overlay network's `vxlan0`).
    TunnelPort {
        bridge: u32,
        vni: u32,
        arp_proxy: bool,
        /// The UDP port the wrapped frames go to, where known.
        udp_port: Option<u16>,
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
            address_owner: HashMap::new(),
            proxies: Vec::new(),
            namespace_bridges: Vec::new(),
        }
    }

    /// The userland proxy that receives a packet delivered to the host at `dst:dport`.
    pub fn proxy_listening(
        &self,
        protocol: IpProto,
        dst: IpAddr,
        dport: Option<u16>,
    ) -> Option<&UserlandProxy> {
        self.proxies
            .iter()
            .find(|p| p.listens_at(protocol, dst, dport))
    }

    /// The userland proxies that relay to `dst:dport` (one per address family it listens on).
    pub fn proxies_relaying_to(
        &self,
        protocol: IpProto,
        dst: IpAddr,
        dport: Option<u16>,
    ) -> impl Iterator<Item = &UserlandProxy> {
        self.proxies
            .iter()
            .filter(move |p| p.relays_to(protocol, dst, dport))
    }

    /// The container `address` belongs to, if any.
    pub fn container_at(&self, address: &IpAddr) -> Option<&str> {
        self.address_owner.get(address).map(String::as_str)
    }

    pub fn place(&self, netns: Option<u32>, ifindex: u32) -> Place {
        if let Some(ns) = netns.filter(|ns| *ns != self.names.host_netns) {
            return self.place_in_namespace(ns, ifindex);
        }
        if self.bridges.contains(&ifindex) {
            return Place::Bridge;
        }
        match self.ports.get(&ifindex) {
            Some(bridge) => Place::BridgePort { bridge: *bridge },
            None => Place::Host,
        }
    }

    /// A bridge or bridge port inside another namespace, else just elsewhere.
    fn place_in_namespace(&self, netns: u32, ifindex: u32) -> Place {
        for bridge in self.namespace_bridges.iter().filter(|b| b.netns == netns) {
            if bridge.ifindex == ifindex {
                return Place::Bridge;
            }
            if let Some((_, vni, arp_proxy)) =
                bridge.tunnels.iter().find(|(port, ..)| *port == ifindex)
            {
                return Place::TunnelPort {
                    bridge: bridge.ifindex,
                    vni: *vni,
                    arp_proxy: *arp_proxy,
                    udp_port: bridge.vxlan_port,
                };
            }
            if bridge.ports.iter().any(|(port, _)| *port == ifindex) {
                return Place::BridgePort {
                    bridge: bridge.ifindex,
                };
            }
        }
        Place::Elsewhere
    }

    pub fn name(&self, netns: Option<u32>, ifindex: u32) -> String {
        self.names.name(netns, ifindex)
    }

    /// "vethcccc (radius)" for a port with a known container, else the name.
    pub fn port_label(&self, netns: Option<u32>, ifindex: u32) -> String {
        let name = self.names.name(netns, ifindex);
        let owner = match netns.filter(|ns| *ns != self.names.host_netns) {
            None => self.port_owner.get(&ifindex),
            Some(ns) => self
                .namespace_bridges
                .iter()
                .filter(|b| b.netns == ns)
                .flat_map(|b| &b.ports)
                .find(|(port, _)| *port == ifindex)
                .and_then(|(_, owner)| owner.as_ref()),
        };
        match owner {
            Some(owner) => format!("{name} ({owner})"),
            None => name,
        }
    }
}

/// One network interface as the kernel reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's netns).
    pub peer_index: Option<u32>,
    /// IFLA_MASTER: the bridge this interface is a port of.
    pub master: Option<u32>,
    /// IFLA_INFO_KIND: "veth", "bridge", ...
    pub kind: Option<String>,
    /// A VXLAN device's VNI (IFLA_VXLAN_ID).
    pub vni: Option<u32>,
    /// A VXLAN device answers ARP itself from its neighbour table (IFLA_VXLAN_PROXY).
    pub arp_proxy: bool,
    /// The UDP port a VXLAN device sends to (IFLA_VXLAN_PORT; 0 there means the kernel's
    /// default).
    pub vxlan_port: Option<u16>,
}

/// (netns inode, ifindex) -> "name" for the host, "ns:name" elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceNames {
    pub host_netns: u32,
    /// Keyed "netns/ifindex" in recordings, so that it stays a JSON object there; by the pair
    /// in memory, so that a lookup (one per hop shown) builds no string.
    #[serde(with = "string_keys")]
    names: HashMap<(u32, u32), String>,
    /// netns inode -> its label (a container's name, a namespace under /run/netns), for an
    /// interface whose name is not known (absent in recordings of older versions).
    #[serde(default)]
    namespaces: HashMap<u32, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_interface_is_said_plainly() {
        let mut names = InterfaceNames::from_entries(1, [((7, 2), "ledger:eth0".into())]);
        names.label_namespace(7, "ledger".into());
        assert_eq!(names.name(Some(7), 2), "ledger:eth0");
        assert_eq!(names.name(Some(7), 0), "no device");
        assert_eq!(
            names.name(Some(7), 9),
            "an interface in ledger's namespace (index 9)"
        );
        assert_eq!(
            names.name(Some(8), 9),
            "an interface in namespace 8 (index 9)"
        );
        assert_eq!(names.name(None, 9), "a host interface (index 9)");
    }
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
    pub fn new(host_netns: u32) -> Self {
        Self {
            host_netns,
            names: HashMap::new(),
            namespaces: HashMap::new(),
        }
    }

    /// Labels the namespace `netns` (the first label wins).
    pub fn label_namespace(&mut self, netns: u32, label: String) {
        self.namespaces.entry(netns).or_insert(label);
    }

    /// Names `ifindex` in `netns` unless it already has a name (the first source wins: the
    /// host's own list before the namespaces').
    pub fn add(&mut self, netns: u32, ifindex: u32, name: String) {
        self.names.entry(key(netns, ifindex)).or_insert(name);
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
            namespaces: HashMap::new(),
        }
    }

    /// Name of `ifindex` in `netns` (None: the host's, as tc events carry no namespace); an
    /// interface it does not know is said plainly, with its index and namespace.
    /// Whether an event in `netns` can be on this host's paths: the host's own namespace, or
    /// one it knows (a container's, a named one, an overlay's). The drop probe, the device
    /// tracepoints and the kprobes see every namespace, and where several nodes share one
    /// kernel (a simulated cluster) another node's namespaces are none of this one's business.
    /// Every namespace may be ours when none is known (a recording from before namespaces
    /// were labelled).
    pub fn may_be_ours(&self, netns: Option<u32>) -> bool {
        match netns {
            None => true,
            Some(ns) => {
                ns == self.host_netns
                    || self.namespaces.is_empty()
                    || self.namespaces.contains_key(&ns)
            }
        }
    }

    pub fn name(&self, netns: Option<u32>, ifindex: u32) -> String {
        let ns = netns.unwrap_or(self.host_netns);
        if let Some(name) = self.names.get(&key(ns, ifindex)) {
            return name.clone();
        }
        // A socket's packet (a TCP retransmit queue purged, say) no longer has a device.
        if ifindex == 0 {
            return "no device".into();
        }
        match self.namespaces.get(&ns) {
            _ if ns == self.host_netns => format!("a host interface (index {ifindex})"),
            Some(label) => format!("an interface in {label}'s namespace (index {ifindex})"),
            None => format!("an interface in namespace {ns} (index {ifindex})"),
        }
    }
}
