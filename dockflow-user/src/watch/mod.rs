//! Who and where to watch: a Docker container (or a bare interface) resolved to the host-side
//! interfaces whose traffic is the target's.

pub mod docker;
pub mod links;
pub mod names;
pub mod netns;
pub mod proxies;

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use dockflow_common::VXLAN_PORT;

use self::links::list_links;
use crate::model::topology::{Link, NamespaceBridge, Topology};

/// The role an interface plays in the target's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceRole {
    /// Host side of the container's veth: a port of the bridge.
    BridgePort,
    /// The bridge device itself: its ingress is what the bridge passes up to the IP stack.
    Bridge,
    /// An interface named with --iface.
    Named,
    /// The node's own interface with its swarm address: the VXLAN packets that carry an
    /// overlay network's frames to and from the other nodes, to this UDP port.
    Underlay { vxlan_port: u16 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    pub name: String,
    pub role: InterfaceRole,
    /// The namespace it is in when that is not dockflow's own (an overlay network's).
    pub namespace: Option<Namespace>,
}

impl Interface {
    /// Its name as hops show it: "vethab12" on the host, "overlay rookery:veth2" elsewhere.
    pub fn label(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}:{}", ns.label, self.name),
            None => self.name.clone(),
        }
    }
}

/// A network namespace, named by what it is ("overlay rookery", a container's name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub label: String,
    pub path: PathBuf,
}

/// Everything the probes need to know about what to watch.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Human name for the status lines ("container radius", "interface eth0").
    pub label: String,
    pub interfaces: Vec<Interface>,
    pub addresses: Vec<IpAddr>,
    pub published: Vec<docker::PublishedPort>,
    /// The containers' Docker networks.
    pub networks: Vec<String>,
    /// The targets' network namespaces, each labelled with its name (for interface names, and
    /// for the device hops inside them).
    pub namespaces: Vec<(String, PathBuf)>,
    /// What the user should know about the target before reading its paths (a routing mesh
    /// this kernel cannot run, say).
    pub notes: Vec<String>,
}

impl Target {
    /// Whether the kernel should drop events that are not the target's (containers: yes;
    /// bare interfaces with no addresses: everything on them is wanted).
    pub fn filtered(&self) -> bool {
        !self.addresses.is_empty() || !self.published.is_empty()
    }

    /// One target of several: everything either watches (a bridge two containers share once).
    fn merge(mut self, other: Target) -> Self {
        for interface in other.interfaces {
            if !self.interfaces.iter().any(|i| i.index == interface.index) {
                self.interfaces.push(interface);
            }
        }
        extend_unique(&mut self.addresses, other.addresses);
        extend_unique(&mut self.published, other.published);
        extend_unique(&mut self.networks, other.networks);
        extend_unique(&mut self.namespaces, other.namespaces);
        extend_unique(&mut self.notes, other.notes);
        self
    }
}

fn extend_unique<T: PartialEq>(into: &mut Vec<T>, from: Vec<T>) {
    for item in from {
        if !into.contains(&item) {
            into.push(item);
        }
    }
}

/// What the user asked to watch, resolved again whenever the host changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    /// --container, once or more.
    Containers(Vec<String>),
    /// --network: every container on it.
    Network(String),
    /// --service: every task of a swarm service on this node.
    Service(String),
    /// --netns.
    Netns(String),
    /// --iface.
    Interfaces(Vec<String>),
}

impl Watch {
    pub fn resolve(&self) -> Result<Target> {
        match self {
            Watch::Containers(names) => resolve_containers(names),
            Watch::Network(name) => resolve_network(name),
            Watch::Service(name) => resolve_service(name),
            Watch::Netns(netns) => resolve_netns(netns),
            Watch::Interfaces(names) => resolve_interfaces(names),
        }
    }

    /// Whether the target can move (containers restart, join and leave networks).
    pub fn follows_docker(&self) -> bool {
        matches!(
            self,
            Watch::Containers(_) | Watch::Network(_) | Watch::Service(_)
        )
    }
}

/// Several containers as one target.
pub fn resolve_containers(names: &[String]) -> Result<Target> {
    let mut targets = names.iter().map(|name| resolve_container(name));
    let first = targets.next().context("no container named")??;
    let merged = targets.try_fold(first, |all, next| Ok::<_, anyhow::Error>(all.merge(next?)))?;
    Ok(Target {
        label: if names.len() == 1 {
            merged.label.clone()
        } else {
            format!("containers {}", names.join(", "))
        },
        ..merged
    })
}

/// Every running container on Docker network `name`, as one target.
pub fn resolve_network(name: &str) -> Result<Target> {
    let docker = docker::Docker::from_env()?;
    let network = docker.network(name)?;
    if network.containers.is_empty() {
        bail!("Docker network {name} has no running containers");
    }
    let target = resolve_group(
        &format!("network {name}"),
        "containers",
        &network.containers,
    )?;
    Ok(Target {
        networks: vec![network.name],
        ..target
    })
}

/// Every task of swarm service `name` running on this node, as one target.
pub fn resolve_service(name: &str) -> Result<Target> {
    let docker = docker::Docker::from_env()?;
    let tasks = docker.service_tasks(name)?;
    if tasks.is_empty() {
        // A node without a task still takes the service's published ports in (the routing
        // mesh) and sends the requests on to a task on another node.
        return resolve_mesh_entry(&docker, name).with_context(|| {
            format!(
                "swarm service {name} has no running task on this node (see `docker service ps {name}`), and no routing mesh here to follow"
            )
        });
    }
    let mut target = resolve_group(&format!("service {name}"), "tasks", &tasks)?;
    // Only managers know a service's spec: on a worker its ports are not to be had.
    let ports = match docker.service_ports(name) {
        Ok(ports) => ports,
        Err(e) if e.to_string().contains("not a swarm manager") => {
            target.notes.push(format!(
                "this node is a swarm worker: service {name}'s published ports are known to managers only, so dockflow follows its tasks' addresses alone"
            ));
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    let mesh: Vec<&docker::ServicePort> = ports.iter().filter(|p| p.mesh).collect();
    if !mesh.is_empty() {
        // The mesh's way in: DNAT on the host to the ingress network's sandbox, IPVS there.
        if let Some(sandbox) = docker.container(&tasks[0])?.sandbox {
            let ingress = sandbox.with_file_name("ingress_sbox");
            if ingress.exists() {
                extend_unique(
                    &mut target.namespaces,
                    vec![("ingress_sbox".into(), ingress)],
                );
            }
        }
        if !ipvs_available() {
            let words: Vec<String> = mesh
                .iter()
                .map(|p| format!("{}/{}", p.port.host_port, p.port.protocol))
                .collect();
            target.notes.push(format!(
                "service {name} publishes {} through the routing mesh, which needs IPVS: this kernel has none (no ip_vs module), so Docker cannot set the mesh up and requests to {} go unanswered (publish with mode=host, or use a kernel with ip_vs)",
                words.join(", "),
                if words.len() == 1 { "that port" } else { "those ports" },
            ));
        }
    }
    extend_unique(
        &mut target.published,
        ports.into_iter().map(|p| p.port).collect(),
    );
    Ok(target)
}

/// A node's part of a service with no task on it: the routing mesh's way in (DNAT on the host,
/// `ingress_sbox` on docker_gwbridge, IPVS there) and out to the other nodes (the ingress
/// overlay's bridge and VXLAN device, the node's own interface).
fn resolve_mesh_entry(docker: &docker::Docker, name: &str) -> Result<Target> {
    let ports = docker.service_ports(name)?;
    let mesh: Vec<docker::PublishedPort> = ports
        .into_iter()
        .filter(|p| p.mesh)
        .map(|p| p.port)
        .collect();
    if mesh.is_empty() {
        bail!("it publishes no port through the routing mesh");
    }
    let sandbox = ingress_sandbox()?;
    let (mut interfaces, addresses, inside) = interfaces_into(&sandbox)?;
    let ingress = docker.network("ingress")?;
    let overlay = Namespace {
        label: "overlay ingress".into(),
        path: sandbox.with_file_name(format!("1-{}", ingress.id.get(..10).unwrap_or_default())),
    };
    let (legs, vxlan_port) = overlay_interfaces(&overlay, &inside)?;
    interfaces.extend(legs);
    let mut notes = vec![format!(
        "service {name} has no task on this node: dockflow follows its routing mesh here, into ingress_sbox and out to the tasks on other nodes"
    )];
    add_underlay(docker, vxlan_port, &mut interfaces, &mut notes);
    Ok(Target {
        label: format!("service {name} (its routing mesh on this node)"),
        interfaces,
        addresses,
        published: mesh,
        networks: vec!["ingress".into()],
        namespaces: vec![
            ("ingress_sbox".into(), sandbox),
            (overlay.label, overlay.path),
        ],
        notes,
    })
}

/// This engine's `ingress_sbox` namespace file: under its exec root, which the API does not
/// name. Several engines may share a host (one per network namespace, each with its own exec
/// root): the sandbox whose veth peer is in this namespace is this one's.
fn ingress_sandbox() -> Result<PathBuf> {
    let mut candidates = vec![PathBuf::from("/var/run/docker/netns/ingress_sbox")];
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    candidates.extend(
        mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|point| point.ends_with("/netns/ingress_sbox"))
            .map(PathBuf::from),
    );
    candidates
        .into_iter()
        .filter(|path| path.exists())
        .find(|path| interfaces_into(path).is_ok_and(|(found, ..)| !found.is_empty()))
        .ok_or_else(|| anyhow!("no ingress_sbox namespace of this engine"))
}

/// Whether this kernel can run IPVS, Swarm's load balancer: loaded, or there to load.
fn ipvs_available() -> bool {
    if Path::new("/proc/net/ip_vs").exists() || Path::new("/sys/module/ip_vs").exists() {
        return true;
    }
    let release = crate::kernel::kernel_release();
    std::fs::read_to_string(format!("/lib/modules/{release}/modules.dep"))
        .is_ok_and(|deps| deps.lines().any(|l| l.contains("/ip_vs.ko")))
}

/// Several containers as one target labelled "WHAT (N KIND: a, b)".
///
/// A container that stops or restarts between the listing and its resolution is left out
/// this time (the next re-resolve, a second later, finds it again); only when none is left
/// does the group fail to resolve.
fn resolve_group(what: &str, kind: &str, containers: &[String]) -> Result<Target> {
    let mut first_error = None;
    let mut resolved: Vec<(&String, Target)> = Vec::new();
    for container in containers {
        match resolve_container(container) {
            Ok(target) => resolved.push((container, target)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let names: Vec<&str> = resolved.iter().map(|(name, _)| name.as_str()).collect();
    let label = format!("{what} ({} {kind}: {})", names.len(), names.join(", "));
    let Some(merged) = resolved
        .into_iter()
        .map(|(_, target)| target)
        .reduce(Target::merge)
    else {
        return Err(first_error.expect("a container failed to resolve"));
    };
    Ok(Target { label, ..merged })
}

/// Resolves a running container to its host-side veth ports and their bridges, and, on an
/// overlay network, its veth's peer in the overlay's namespace, that namespace's bridge and
/// the bridge's VXLAN device.
pub fn resolve_container(name: &str) -> Result<Target> {
    let docker = docker::Docker::from_env()?;
    let container = docker.container(name)?;
    let ns_path = netns_of(&container);
    let (mut interfaces, found_inside, inside) = interfaces_into(&ns_path)
        .with_context(|| format!("finding the interfaces of container {name}"))?;
    // Docker's list names the networks a container joined, not every address it has: a swarm
    // task's address on docker_gwbridge (its way out, and a host-mode port's way in) is known
    // only from inside its namespace.
    let mut addresses = container.addresses.clone();
    for address in found_inside {
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    let mut namespaces = vec![(container.name.clone(), ns_path)];
    let mut vxlan_port = None;
    for overlay in overlays_of(&container) {
        // An overlay that went away meanwhile is found again at the next re-resolve.
        let Ok((legs, port)) = overlay_interfaces(&overlay, &inside) else {
            continue;
        };
        if !legs.is_empty() {
            interfaces.extend(legs);
            namespaces.push((overlay.label, overlay.path));
            vxlan_port = vxlan_port.or(port);
        }
    }
    let mut notes = Vec::new();
    add_underlay(&docker, vxlan_port, &mut interfaces, &mut notes);
    if interfaces.is_empty() {
        bail!(
            "container {name} has no veth into the host or an overlay network (host, none and other networks are not supported)"
        );
    }
    Ok(Target {
        label: format!("container {}", container.name),
        interfaces,
        addresses,
        networks: container.networks,
        published: container.published,
        namespaces,
        notes,
    })
}

/// Where overlays send VXLAN to `vxlan_port`, the node's own interface joins `interfaces`;
/// where it cannot be found, `notes` say so.
fn add_underlay(
    docker: &docker::Docker,
    vxlan_port: Option<u16>,
    interfaces: &mut Vec<Interface>,
    notes: &mut Vec<String>,
) {
    let Some(port) = vxlan_port else { return };
    match underlay(docker, port) {
        Ok(underlay) => interfaces.push(underlay),
        Err(why) => notes.push(format!(
            "the VXLAN packets between nodes are not shown: {why}"
        )),
    }
}

/// The node's own interface for the VXLAN packets between nodes: the one with its swarm
/// address, which the other nodes send to.
fn underlay(docker: &docker::Docker, vxlan_port: u16) -> Result<Interface> {
    let Some(address) = docker.node()?.1 else {
        bail!("the engine names no swarm address");
    };
    let index = links::list_addresses()?
        .into_iter()
        .find_map(|(index, a)| (a == address).then_some(index))
        .ok_or_else(|| anyhow!("no interface here has the swarm address {address}"))?;
    let name = list_links()?
        .into_iter()
        .find_map(|l| (l.index == index).then_some(l.name))
        .ok_or_else(|| anyhow!("interface {index}, with the swarm address, went away"))?;
    Ok(Interface {
        index,
        name,
        role: InterfaceRole::Underlay { vxlan_port },
        namespace: None,
    })
}

/// A container's network namespace: the file Docker keeps for it under its exec root (which a
/// dockflow in a container of its own sees when that directory is mounted, where the host's
/// pids are not), else its first process's.
fn netns_of(container: &docker::Container) -> PathBuf {
    container
        .sandbox
        .clone()
        .filter(|sandbox| sandbox.exists())
        .unwrap_or_else(|| PathBuf::from(format!("/proc/{}/ns/net", container.pid)))
}

/// The namespaces of the overlay networks `container` is on: Docker keeps each in its exec
/// root, beside the containers' own, as `1-` and the network id's first ten characters.
fn overlays_of(container: &docker::Container) -> Vec<Namespace> {
    let Some(netns_dir) = container.sandbox.as_deref().and_then(Path::parent) else {
        return Vec::new();
    };
    container
        .endpoints
        .iter()
        .filter_map(|(network, id)| {
            let path = netns_dir.join(format!("1-{}", id.get(..10)?));
            path.exists().then(|| Namespace {
                label: format!("overlay {network}"),
                path,
            })
        })
        .collect()
}

/// In an overlay's namespace: the peers of the container's veths (ports of the overlay's
/// bridge), the bridge, and the bridge's VXLAN ports (the way to the other nodes), with the
/// UDP port those send to.
fn overlay_interfaces(
    overlay: &Namespace,
    inside: &[Link],
) -> Result<(Vec<Interface>, Option<u16>)> {
    let links = netns::in_netns(&overlay.path, list_links)?;
    let there = |link: &Link, role| Interface {
        index: link.index,
        name: link.name.clone(),
        role,
        namespace: Some(overlay.clone()),
    };
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut vxlan_port = None;
    for peer in host_peers(inside, &links) {
        interfaces.push(there(peer, InterfaceRole::BridgePort));
        let Some(bridge) = links
            .iter()
            .find(|l| Some(l.index) == peer.master && l.kind.as_deref() == Some("bridge"))
        else {
            continue;
        };
        let tunnels = links
            .iter()
            .filter(|l| l.master == Some(bridge.index) && l.kind.as_deref() == Some("vxlan"));
        for (link, role) in std::iter::once((bridge, InterfaceRole::Bridge))
            .chain(tunnels.map(|t| (t, InterfaceRole::BridgePort)))
        {
            if link.kind.as_deref() == Some("vxlan") {
                // 0: the kernel's default, the IANA port.
                let port = vxlan_port_of(link);
                vxlan_port = vxlan_port.or(Some(port));
            }
            if !interfaces.iter().any(|i| i.index == link.index) {
                interfaces.push(there(link, role));
            }
        }
    }
    Ok((interfaces, vxlan_port))
}

/// Resolves a network namespace (a name under /run/netns, or a path such as
/// /proc/PID/ns/net) to the host-side interfaces leading into it and its addresses.
pub fn resolve_netns(name_or_path: &str) -> Result<Target> {
    let ns_path = if name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        PathBuf::from("/run/netns").join(name_or_path)
    };
    if !ns_path.exists() {
        bail!("no network namespace {name_or_path} (see `ip netns list`)");
    }
    let (interfaces, addresses, _) = interfaces_into(&ns_path)
        .with_context(|| format!("inspecting network namespace {name_or_path}"))?;
    if interfaces.is_empty() {
        bail!("network namespace {name_or_path} has no veth into the host");
    }
    let label = ns_path.file_name().map_or(name_or_path.to_string(), |n| {
        n.to_string_lossy().into_owned()
    });
    Ok(Target {
        label: format!("netns {name_or_path}"),
        interfaces,
        addresses,
        namespaces: vec![(label, ns_path)],
        ..Target::default()
    })
}

/// The host ends of the namespace's veths (a bridge port and its bridge, or the bare veth when
/// it is not bridged), the namespace's own non-loopback addresses, and its interfaces.
fn interfaces_into(ns_path: &Path) -> Result<(Vec<Interface>, Vec<IpAddr>, Vec<Link>)> {
    let (inside, addresses) =
        netns::in_netns(ns_path, || Ok((list_links()?, links::list_addresses()?)))?;
    let host = list_links().context("listing the host's interfaces")?;
    let mut interfaces = Vec::new();
    for peer in host_peers(&inside, &host) {
        let bridge = peer.master.and_then(|m| {
            host.iter()
                .find(|h| h.index == m && h.kind.as_deref() == Some("bridge"))
        });
        match bridge {
            Some(bridge) => {
                interfaces.push(Interface {
                    index: peer.index,
                    name: peer.name.clone(),
                    role: InterfaceRole::BridgePort,
                    namespace: None,
                });
                if !interfaces.iter().any(|i| i.index == bridge.index) {
                    interfaces.push(Interface {
                        index: bridge.index,
                        name: bridge.name.clone(),
                        role: InterfaceRole::Bridge,
                        namespace: None,
                    });
                }
            }
            None => interfaces.push(Interface {
                index: peer.index,
                name: peer.name.clone(),
                role: InterfaceRole::Named,
                namespace: None,
            }),
        }
    }
    let addresses = addresses
        .into_iter()
        .map(|(_, a)| a)
        .filter(|a| !a.is_loopback() && !is_link_local(a))
        .collect();
    Ok((interfaces, addresses, inside))
}

fn is_link_local(address: &IpAddr) -> bool {
    match address {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => (a.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// The host's interfaces as the path reasoning needs them: every bridge port named by the
/// container behind it (any running container, not only the target), interface names inside
/// every container's namespace. Without a reachable Docker daemon (a --netns or --iface trace)
/// only the target's own namespace is named.
pub fn topology_of(target: &Target) -> Result<Topology> {
    let containers = docker::Docker::from_env()
        .and_then(|d| d.running_containers())
        .unwrap_or_default();
    let host = list_links().context("listing the host's interfaces")?;
    let mut namespaces: Vec<(String, PathBuf)> = target.namespaces.clone();
    let mut owners: HashMap<u32, String> = HashMap::new();
    let mut addresses: HashMap<IpAddr, String> = HashMap::new();
    // One namespace (a --netns target): its bridge ports are its own.
    if let [(owner, _)] = target.namespaces.as_slice() {
        for i in target
            .interfaces
            .iter()
            .filter(|i| i.role == InterfaceRole::BridgePort)
        {
            owners.insert(i.index, owner.clone());
        }
    }
    // Each container's interfaces, as seen from inside: whose veth a port is.
    let mut insides: Vec<(String, Vec<Link>)> = Vec::new();
    for container in containers {
        for address in &container.addresses {
            addresses.insert(*address, container.name.clone());
        }
        let ns_path = netns_of(&container);
        // A container that went away meanwhile only loses its names.
        let Ok(inside) = netns::in_netns(&ns_path, list_links) else {
            continue;
        };
        for peer in host_peers(&inside, &host) {
            owners.entry(peer.index).or_insert(container.name.clone());
        }
        if !namespaces.iter().any(|(label, _)| *label == container.name) {
            namespaces.push((container.name.clone(), ns_path));
        }
        insides.push((container.name, inside));
    }
    let names = names::collect(&namespaces)?;
    Ok(Topology {
        address_owner: addresses,
        proxies: proxies::running(),
        namespace_bridges: namespace_bridges(&target.namespaces, &insides),
        ..Topology::from_links(names, &host, owners)
    })
}

/// The bridges inside the target's other namespaces (an overlay network's `br0`), each port
/// named by the container whose veth it is.
fn namespace_bridges(
    namespaces: &[(String, PathBuf)],
    insides: &[(String, Vec<Link>)],
) -> Vec<NamespaceBridge> {
    let mut bridges = Vec::new();
    for (label, path) in namespaces {
        // A namespace that went away meanwhile has no bridge to tell of.
        let (Ok(inode), Ok(links)) = (netns::netns_inode(path), netns::in_netns(path, list_links))
        else {
            continue;
        };
        let balancer = load_balancer_of(label, path);
        let owner = |port: &Link| {
            insides
                .iter()
                .chain(&balancer)
                .find(|(_, inside)| {
                    host_peers(inside, std::slice::from_ref(port))
                        .next()
                        .is_some()
                })
                .map(|(name, _)| name.clone())
        };
        for bridge in links.iter().filter(|l| l.kind.as_deref() == Some("bridge")) {
            let ports = || links.iter().filter(|l| l.master == Some(bridge.index));
            let tunnels: Vec<&Link> = ports().filter(|port| port.vni.is_some()).collect();
            bridges.push(NamespaceBridge {
                netns: inode as u32,
                ifindex: bridge.index,
                ports: ports().map(|port| (port.index, owner(port))).collect(),
                tunnels: tunnels
                    .iter()
                    .filter_map(|port| Some((port.index, port.vni?, port.arp_proxy)))
                    .collect(),
                vxlan_port: tunnels.first().map(|port| vxlan_port_of(port)),
            });
        }
    }
    bridges
}

/// An overlay network's load-balancer sandbox (Docker's `lb_` and the network id's first nine
/// characters, beside the overlay's `1-` namespace), named as the owner of its port on the
/// The UDP port a VXLAN device sends to (0 in IFLA_VXLAN_PORT: the default).
fn vxlan_port_of(link: &Link) -> u16 {
    link.vxlan_port.filter(|p| *p != 0).unwrap_or(VXLAN_PORT)
}

/// overlay's bridge, with its interfaces.
fn load_balancer_of(label: &str, overlay: &Path) -> Option<(String, Vec<Link>)> {
    let network = label.strip_prefix("overlay ")?;
    let id = overlay.file_name()?.to_str()?.strip_prefix("1-")?;
    let sandbox = overlay.with_file_name(format!("lb_{}", id.get(..9)?));
    let links = netns::in_netns(&sandbox, list_links).ok()?;
    Some((format!("load balancer of {network}"), links))
}

/// A fingerprint of what [`topology_of`] depends on (the running containers, the host's
/// interfaces, dockerd's userland proxies): when it changes, names and port owners may have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyFingerprint {
    containers: Vec<String>,
    links: Vec<u32>,
    proxies: Vec<u32>,
}

pub fn topology_fingerprint() -> TopologyFingerprint {
    TopologyFingerprint {
        containers: docker::Docker::from_env()
            .and_then(|d| d.running_ids())
            .unwrap_or_default(),
        links: list_links()
            .map(|links| links.iter().map(|l| l.index).collect())
            .unwrap_or_default(),
        proxies: proxies::running().iter().map(|p| p.pid).collect(),
    }
}

/// Targets host interfaces by name, for traffic outside Docker.
pub fn resolve_interfaces(names: &[String]) -> Result<Target> {
    let host = list_links().context("listing the host's interfaces")?;
    let interfaces = names
        .iter()
        .map(|n| {
            find_by_name(&host, n).map(|l| Interface {
                index: l.index,
                name: l.name.clone(),
                role: InterfaceRole::Named,
                namespace: None,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Target {
        label: format!("interface {}", names.join(", ")),
        interfaces,
        ..Target::default()
    })
}

fn find_by_name<'a>(links: &'a [Link], name: &str) -> Result<&'a Link> {
    links
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| anyhow!("no interface named {name} on this host"))
}

/// Host veths whose peer is one of the namespace's interfaces.
///
/// IFLA_LINK is the peer's ifindex in the other namespace; ifindexes are only unique per
/// namespace, so both ends must name each other.
fn host_peers<'a>(inside: &'a [Link], host: &'a [Link]) -> impl Iterator<Item = &'a Link> + 'a {
    host.iter().filter(|h| {
        h.peer_index.is_some_and(|peer| {
            inside
                .iter()
                .any(|c| c.index == peer && c.peer_index == Some(h.index))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, peer: Option<u32>, master: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            peer_index: peer,
            master,
            kind: None,
            vni: None,
            arp_proxy: false,
            vxlan_port: None,
        }
    }

    #[test]
    fn picks_the_veths_whose_peers_are_inside() {
        let inside = [link(1, "lo", None, None), link(9, "eth0", Some(12), None)];
        let host = [
            link(3, "docker1", None, None),
            link(10, "vethaaaa", Some(9), Some(3)), // same peer index, but its peer names another veth
            link(11, "vethbbbb", Some(7), Some(3)), // another container on our bridge
            link(12, "vethcccc", Some(9), Some(3)),
        ];
        let found: Vec<&str> = host_peers(&inside, &host)
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(found, vec!["vethcccc"]);
    }
}
