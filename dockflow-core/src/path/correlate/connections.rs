//! Packets into connections: by conntrack where a probe saw the host's entry, else by their
//! headers against the connections known (ARP, untracked IPv6), with the oldest forgotten
//! past the limit.

use std::{collections::VecDeque, net::IpAddr};

use rustc_hash::FxHashMap as HashMap;

use super::super::hop::Direction;
use crate::model::{ArpOp, CtDirection, Event, Packet};

/// A connection's identity: its conntrack original tuple.
type ConnectionKey = (IpAddr, u16, IpAddr, u16, u8);

/// The connections known, by either tuple.
#[derive(Default)]
pub(super) struct Connections {
    /// Connection ids by original tuple, and by reply tuple (to recognise packets seen without
    /// conntrack, by tc, in the reply direction).
    by_original: HashMap<ConnectionKey, u64>,
    by_reply: HashMap<ConnectionKey, u64>,
    /// The connections' tuples, oldest first, for forgetting them in order.
    order: VecDeque<(u64, ConnectionKey, ConnectionKey)>,
    next: u64,
    /// At most this many are remembered.
    limit: usize,
    /// Connections forgotten to stay under the limit, since the caller last took them.
    forgotten: Vec<u64>,
}

impl Connections {
    pub(super) fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            // Connections are numbered from 1, as users read them.
            next: 1,
            ..Self::default()
        }
    }

    /// Takes the ids of the connections forgotten since the last call.
    pub(super) fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    /// The connection a packet belongs to: from conntrack where any probe saw it, else by
    /// matching its headers against connections already known.
    pub(super) fn of(
        &mut self,
        events: &[Event],
        packet: &Packet,
        host: u32,
    ) -> (Option<u64>, Option<Direction>) {
        // The host's conntrack entry, not the one a container (or a load balancer's
        // namespace) keeps in its own namespace for the same packet: that one has its view of
        // the addresses, and a reply meets it before the host's. A hook without a device
        // (the host's output) is the host's.
        let host_ct = events
            .iter()
            .filter(|e| e.netns.is_none_or(|ns| ns == host))
            .find_map(|e| e.conntrack.as_ref());
        if let Some(ct) = host_ct {
            let key = tuple_key(&ct.original);
            let id = match self.by_original.get(&key) {
                Some(id) => *id,
                None => self.new_connection(key, tuple_key(&ct.reply)),
            };
            let direction = if ct.direction == CtDirection::Reply {
                Direction::Reply
            } else {
                Direction::Request
            };
            return (Some(id), Some(direction));
        }
        let headers = header_key(packet);
        // A packet NAT already rewrote (a request after DNAT) is the reverse of its reply tuple.
        let (src, sport, dst, dport, protocol) = headers;
        let reverse = (dst, dport, src, sport, protocol);
        let known = |map: &HashMap<ConnectionKey, u64>, key| map.get(key).copied();
        let original = known(&self.by_original, &headers).or(known(&self.by_reply, &reverse));
        let reply = known(&self.by_reply, &headers).or(known(&self.by_original, &reverse));
        // An ARP answer is a reply, even where the same two addresses also asked each other.
        let original = match packet.arp {
            Some(ArpOp::Reply) if reply.is_some() => None,
            _ => original,
        };
        match (original.as_ref(), reply.as_ref()) {
            // An ARP question always opens a new exchange.
            (Some(id), _) if packet.arp != Some(ArpOp::Request) => {
                (Some(*id), Some(Direction::Request))
            }
            (None, Some(id)) if packet.arp != Some(ArpOp::Request) => {
                (Some(*id), Some(Direction::Reply))
            }
            // A packet conntrack does not track (ARP; IPv6 where no ip6tables rule needs
            // conntrack) opens a connection of its own, keyed by its headers; a packet with
            // the reverse headers is its reply.
            _ => {
                let id = self.new_connection(headers, reverse);
                (Some(id), Some(Direction::Request))
            }
        }
    }

    /// Registers a connection by its two tuples, forgetting the oldest past the limit.
    fn new_connection(&mut self, original: ConnectionKey, reply: ConnectionKey) -> u64 {
        while self.order.len() >= self.limit.max(1) {
            let Some((old, o, r)) = self.order.pop_front() else {
                break;
            };
            // A tuple reused by a newer connection keeps pointing at that one.
            if self.by_original.get(&o) == Some(&old) {
                self.by_original.remove(&o);
            }
            if self.by_reply.get(&r) == Some(&old) {
                self.by_reply.remove(&r);
            }
            self.forgotten.push(old);
        }
        let id = self.next;
        self.next += 1;
        self.by_original.insert(original, id);
        self.by_reply.insert(reply, id);
        self.order.push_back((id, original, reply));
        id
    }
}

/// A packet's own headers as a connection key.
fn header_key(p: &Packet) -> ConnectionKey {
    (
        p.src,
        p.sport.unwrap_or(0),
        p.dst,
        p.dport.unwrap_or(0),
        p.protocol.0,
    )
}

fn tuple_key(t: &crate::model::Tuple) -> ConnectionKey {
    (t.src, t.sport, t.dst, t.dport, t.protocol.0)
}
