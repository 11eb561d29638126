//! Exchanges through dockerd's userland proxy (docker-proxy): with the proxy on (Docker's
//! default), a connection the host's NAT rules do not take to a container (from the host to
//! 127.0.0.1:PORT, or a container to its own network's published port on the host) ends in
//! the host, at a docker-proxy process, and the proxy opens a second connection of its own,
//! from the bridge's address to the container. Two connections to conntrack and to the
//! probes; one exchange to the user. This module tells the two legs apart and links them.
//!
//! The front leg is a connection delivered to the host at a port a proxy listens on. The
//! back leg is a connection a host process opens to the address and port a proxy relays to;
//! it belongs to the oldest front leg of that proxy not yet linked (the proxy opens its leg
//! right after it accepts a connection or receives a datagram from a new client).

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use super::hop::{Direction, Hop, HopKind, Layer, LegRole, PacketPath, ProxyLeg};
use crate::model::{
    Hook,
    topology::{Topology, UserlandProxy},
};

impl ProxyLeg {
    fn new(proxy: &UserlandProxy, leg: LegRole, group: Option<u64>, topology: &Topology) -> Self {
        Self {
            leg,
            pid: proxy.pid,
            listen: proxy.listen_words(),
            relays_to: crate::model::endpoint(proxy.container_ip, Some(proxy.container_port)),
            container: topology
                .container_at(&proxy.container_ip)
                .map(str::to_string),
            group,
        }
    }
}

/// Links the legs of proxied exchanges, connection by connection, in the order their first
/// packets finish.
#[derive(Default)]
pub struct ProxyLinker {
    legs: HashMap<u64, ProxyLeg>,
    /// Connections in `legs`, oldest first, to forget them in order.
    order: VecDeque<u64>,
    /// Front legs whose back leg is not seen yet: (proxy pid, connection), oldest first.
    waiting: VecDeque<(u32, u64)>,
    limit: usize,
}

impl ProxyLinker {
    /// Remembers at most `limit` connections' legs (like the other per-connection tables).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            ..Self::default()
        }
    }

    /// Sets `path.proxy` when its connection is a leg of a proxied exchange.
    pub fn annotate(&mut self, path: &mut PacketPath, topology: &Topology) {
        let Some(connection) = path.connection else {
            return;
        };
        if let Some(leg) = self.legs.get(&connection) {
            path.proxy = Some(leg.clone());
            return;
        }
        if path.direction != Some(Direction::Request) || topology.proxies.is_empty() {
            return;
        }
        let leg = if let Some(proxy) = front_leg_of(path, topology) {
            self.waiting.push_back((proxy.pid, connection));
            ProxyLeg::new(proxy, LegRole::Front, Some(connection), topology)
        } else if let Some(proxy) = back_leg_of(path, topology, &self.waiting) {
            let front = self.waiting.iter().position(|(pid, _)| *pid == proxy.pid);
            let group = front.and_then(|i| self.waiting.remove(i)).map(|(_, c)| c);
            ProxyLeg::new(proxy, LegRole::Back, group, topology)
        } else {
            return;
        };
        self.remember(connection, leg.clone());
        path.proxy = Some(leg);
    }

    fn remember(&mut self, connection: u64, leg: ProxyLeg) {
        if self.order.len() >= self.limit
            && let Some(old) = self.order.pop_front()
        {
            self.legs.remove(&old);
            self.waiting.retain(|(_, c)| *c != old);
        }
        self.order.push_back(connection);
        self.legs.insert(connection, leg);
    }
}

/// The proxy a request is delivered to: it reaches IP input (a local socket) at a port a
/// proxy listens on, unrewritten (a DNATed packet goes to the container instead).
fn front_leg_of<'t>(path: &PacketPath, topology: &'t Topology) -> Option<&'t UserlandProxy> {
    if !path.hops.iter().any(|h| at_hook(h, Hook::Input)) {
        return None;
    }
    let (dst, dport) = final_destination(path);
    topology.proxy_listening(path.packet.protocol, dst, dport)
}

/// The proxy that opened a request: a host process sends it (it starts at IP output) to the
/// address and port a proxy relays to. Of several that relay there (one per address family
/// the port is published on), the one with a front leg waiting.
fn back_leg_of<'t>(
    path: &PacketPath,
    topology: &'t Topology,
    waiting: &VecDeque<(u32, u64)>,
) -> Option<&'t UserlandProxy> {
    let first_l3 = path
        .hops
        .iter()
        .find(|h| h.layer == Layer::L3 && matches!(h.kind, HopKind::Hook { .. }))?;
    if !at_hook(first_l3, Hook::Output) {
        return None;
    }
    let (dst, dport) = final_destination(path);
    let mut relaying = topology.proxies_relaying_to(path.packet.protocol, dst, dport);
    let first = relaying.next()?;
    let waited_for = |p: &&UserlandProxy| waiting.iter().any(|(pid, _)| *pid == p.pid);
    Some(
        std::iter::once(first)
            .chain(relaying)
            .find(waited_for)
            .unwrap_or(first),
    )
}

fn at_hook(hop: &Hop, hook: Hook) -> bool {
    hop.layer == Layer::L3 && matches!(hop.kind, HopKind::Hook { hook: h, .. } if h == hook)
}

/// Where the packet was last headed (after any NAT on its way).
fn final_destination(path: &PacketPath) -> (IpAddr, Option<u16>) {
    let last = path
        .hops
        .iter()
        .rev()
        .find_map(|h| h.event.packet.as_ref())
        .unwrap_or(&path.packet);
    (last.dst, last.dport)
}
