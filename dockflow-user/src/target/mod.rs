//! Who and where to watch: a Docker container (or a bare interface) resolved to the host-side
//! interfaces whose traffic is the target's.

pub mod docker;
pub mod links;
pub mod names;
pub mod netns;

use std::{net::IpAddr, path::PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};

use self::links::{Link, list_links};

/// The role an interface plays in the target's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceRole {
    /// Host side of the container's veth: a port of the bridge.
    BridgePort,
    /// The bridge device itself: its ingress is what the bridge passes up to the IP stack.
    Bridge,
    /// An interface named with --iface.
    Named,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub role: InterfaceRole,
}

/// Everything the probes need to know about what to watch.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Human name for the status lines ("container radius", "interface eth0").
    pub label: String,
    pub interfaces: Vec<Interface>,
    pub addresses: Vec<IpAddr>,
    pub published: Vec<docker::PublishedPort>,
    /// The container's network namespace, labelled with its name, for interface names.
    pub netns: Option<(String, PathBuf)>,
}

impl Target {
    /// Whether the kernel should drop events that are not the target's (containers: yes;
    /// bare interfaces with no addresses: everything on them is wanted).
    pub fn filtered(&self) -> bool {
        !self.addresses.is_empty() || !self.published.is_empty()
    }

}

/// Resolves a running container to its host-side veth ports and their bridges.
pub fn resolve_container(name: &str) -> Result<Target> {
    let docker = docker::Docker::from_env()?;
    let container = docker.container(name)?;
    let ns_path = PathBuf::from(format!("/proc/{}/ns/net", container.pid));
    let inside = netns::in_netns(&ns_path, list_links)
        .with_context(|| format!("listing the interfaces of container {name}"))?;
    let host = list_links().context("listing the host's interfaces")?;

    let mut target = Target { label: format!("container {}", container.name), ..Target::default() };
    for endpoint in &container.endpoints {
        let bridge_name = docker.bridge_device(&endpoint.network_id)?;
        let bridge = find_by_name(&host, &bridge_name)?;
        let port = host_side_port(&inside, &host, bridge.index).ok_or_else(|| {
            anyhow!("no port of bridge {bridge_name} leads into container {name}")
        })?;
        target.interfaces.push(Interface { index: port.index, name: port.name.clone(), role: InterfaceRole::BridgePort });
        target.interfaces.push(Interface { index: bridge.index, name: bridge.name.clone(), role: InterfaceRole::Bridge });
        target.addresses.extend(endpoint.address);
    }
    if target.interfaces.is_empty() {
        bail!("container {name} is on no bridge network (host or none networking is not supported)");
    }
    target.published = container.published;
    target.netns = Some((container.name.clone(), ns_path));
    Ok(target)
}

/// Targets host interfaces by name, for traffic outside Docker.
pub fn resolve_interfaces(names: &[String]) -> Result<Target> {
    let host = list_links().context("listing the host's interfaces")?;
    let interfaces = names
        .iter()
        .map(|n| find_by_name(&host, n).map(|l| Interface { index: l.index, name: l.name.clone(), role: InterfaceRole::Named }))
        .collect::<Result<_>>()?;
    Ok(Target { label: format!("interface {}", names.join(", ")), interfaces, ..Target::default() })
}

fn find_by_name<'a>(links: &'a [Link], name: &str) -> Result<&'a Link> {
    links.iter().find(|l| l.name == name).ok_or_else(|| anyhow!("no interface named {name} on this host"))
}

/// The host-side veth on `bridge` whose peer is one of the container's interfaces.
///
/// A host veth's IFLA_LINK is its peer's ifindex inside the container; ifindexes are only unique
/// per namespace, so the candidate must also be a port of the container's bridge.
fn host_side_port<'a>(inside: &[Link], host: &'a [Link], bridge: u32) -> Option<&'a Link> {
    host.iter().find(|h| {
        h.master == Some(bridge)
            && h.peer_index.is_some_and(|peer| inside.iter().any(|c| c.index == peer && c.peer_index == Some(h.index)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, peer: Option<u32>, master: Option<u32>) -> Link {
        Link { index, name: name.into(), peer_index: peer, master, kind: None }
    }

    #[test]
    fn picks_the_port_whose_peer_is_inside_the_container() {
        let inside = [link(1, "lo", None, None), link(9, "eth0", Some(12), None)];
        let host = [
            link(3, "docker1", None, None),
            link(10, "vethaaaa", Some(9), Some(4)), // same peer index, other bridge
            link(11, "vethbbbb", Some(7), Some(3)), // another container on our bridge
            link(12, "vethcccc", Some(9), Some(3)),
        ];
        assert_eq!(host_side_port(&inside, &host, 3).unwrap().name, "vethcccc");
    }
}
