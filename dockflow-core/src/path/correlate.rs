//! Grouping events into packets (one packet, every probe it crossed, in time order) and packets
//! into connections (conntrack: a request and its reply belong together).
//!
//! A packet is recognised across probes by header fields NAT does not touch (protocol, IPv4
//! id, length). skb identity (skb->head) alone is not enough: tc sees no skb pointer, the
//! kernel may reallocate the head on the way, and a freed head is soon reused, often for the
//! very reply the packet provoked. It only breaks ties where the IPv4 id says nothing (0).

use std::{
    collections::{BTreeSet, VecDeque},
    net::IpAddr,
};

use rustc_hash::FxHashMap as HashMap;

use super::{
    classify::{classify, refine},
    hop::{Direction, Ends, Hop, PacketPath, Rewrite, RewriteField},
    rules,
};
use crate::model::{ArpOp, CtDirection, Event, Packet, RuleTrace, endpoint, topology::Topology};

/// Events further apart than this are never the same packet.
const SAME_PACKET_WINDOW_NS: u64 = 200_000_000;
/// How long a gap in the events is remembered.
const GAP_MEMORY_NS: u64 = 10_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PacketKey {
    protocol: u8,
    arp: Option<ArpOp>,
    ip_id: u16,
    len: u16,
    /// IPv6 has no id: the ports, unordered, stand in (NAT66 is rare).
    ports: (u16, u16),
}

impl PacketKey {
    fn of(p: &Packet) -> Self {
        let ports = if p.src.is_ipv6() {
            let (a, b) = (p.sport.unwrap_or(0), p.dport.unwrap_or(0));
            (a.min(b), a.max(b))
        } else {
            (0, 0)
        };
        Self {
            protocol: p.protocol,
            arp: p.arp,
            ip_id: p.ip_id,
            len: p.len,
            ports,
        }
    }
}

struct OpenPacket {
    key: PacketKey,
    /// Further keys it is indexed under: an IPv6 packet whose ports NAT rewrote, one per
    /// further port pair it showed (empty, so no allocation, for nearly every packet).
    more_keys: Vec<PacketKey>,
    skb_ids: Vec<u64>,
    last_ts: u64,
    events: Vec<Event>,
    rules: Vec<RuleTrace>,
}

/// A connection's identity: its conntrack original tuple.
type ConnectionKey = (IpAddr, u16, IpAddr, u16, u8);

/// How much the correlator keeps at most, so a flood cannot exhaust memory.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Packets still being followed; past this the oldest is finished early.
    pub open_packets: usize,
    /// Connections remembered (to pair requests with replies); past this the oldest is
    /// forgotten, and a later packet of it starts a new one.
    pub connections: usize,
    /// Packets shown per connection (--per-connection; the kernel holds the rest back, this
    /// folds the few hops it emitted before it could tell).
    pub per_connection: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            open_packets: 16_384,
            connections: 65_536,
            per_connection: None,
        }
    }
}

/// What the limits cost: shown in the summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evictions {
    /// Packets finished before they were idle, to stay under `open_packets`.
    pub packets: u64,
    /// Connections forgotten to stay under `connections`.
    pub connections: u64,
}

/// Turns a stream of events into finished packet paths.
pub struct Correlator {
    topology: Topology,
    limits: Limits,
    /// Open packets by their own id.
    open: HashMap<u64, OpenPacket>,
    /// Open packet ids by header key, oldest first: a busy trace has thousands open.
    by_key: HashMap<PacketKey, VecDeque<u64>>,
    /// (last event time, id) of every open packet, so the idle ones are found first and
    /// finishing N packets costs O(N log M), not a walk over all M open.
    by_idle: BTreeSet<(u64, u64)>,
    /// Packets evicted by the limit, finished at the next flush.
    evicted: Vec<OpenPacket>,
    next_open: u64,
    next_packet: u64,
    /// Connection ids by original tuple, and by reply tuple (to recognise packets seen without
    /// conntrack, by tc, in the reply direction).
    by_original: HashMap<ConnectionKey, u64>,
    by_reply: HashMap<ConnectionKey, u64>,
    /// The connections' tuples, oldest first, for forgetting them in order.
    connection_order: VecDeque<(u64, ConnectionKey, ConnectionKey)>,
    next_connection: u64,
    pub evictions: Evictions,
    /// Open packets flush_idle has looked at, in all (for the cost test).
    pub flush_work: u64,
    /// Time spans (kernel clock) in which events were lost, recent ones only.
    gaps: VecDeque<(u64, u64)>,
    /// Packets finished with [`PacketPath::incomplete`] set.
    pub incomplete: u64,
    /// Packets shown per connection, while --per-connection is in force.
    shown: HashMap<u64, u32>,
    /// Fragments of packets past --per-connection that were not shown.
    pub folded: u64,
}

impl Correlator {
    pub fn new(topology: Topology) -> Self {
        Self::with_limits(topology, Limits::default())
    }

    pub fn with_limits(topology: Topology, limits: Limits) -> Self {
        Self {
            topology,
            limits,
            open: HashMap::default(),
            by_key: HashMap::default(),
            by_idle: BTreeSet::new(),
            evicted: Vec::new(),
            next_open: 0,
            next_packet: 1,
            by_original: HashMap::default(),
            by_reply: HashMap::default(),
            connection_order: VecDeque::new(),
            next_connection: 1,
            evictions: Evictions::default(),
            flush_work: 0,
            gaps: VecDeque::new(),
            incomplete: 0,
            shown: HashMap::default(),
            folded: 0,
        }
    }

    /// Events from `from_ns` to `to_ns` were lost: packets on their way then are incomplete.
    pub fn mark_gap(&mut self, from_ns: u64, to_ns: u64) {
        self.gaps
            .push_back((from_ns.min(to_ns), from_ns.max(to_ns)));
        // Packets live for well under a second; older gaps can no longer matter.
        let horizon = to_ns.saturating_sub(GAP_MEMORY_NS);
        while self.gaps.front().is_some_and(|(_, to)| *to < horizon) {
            self.gaps.pop_front();
        }
    }

    /// Whether a packet seen from `first` to `last` may have lost events: a gap lies within
    /// the time its hops could have been in (idle window on either side).
    fn touches_gap(&self, first: u64, last: u64) -> bool {
        let (from, to) = (
            first.saturating_sub(SAME_PACKET_WINDOW_NS),
            last.saturating_add(SAME_PACKET_WINDOW_NS),
        );
        self.gaps.iter().any(|(a, b)| *a <= to && *b >= from)
    }

    pub fn set_topology(&mut self, topology: Topology) {
        self.topology = topology;
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Packets still open.
    pub fn open_packets(&self) -> usize {
        self.open.len()
    }

    /// The open packet `event` continues, if any.
    fn continued(&self, key: &PacketKey, event: &Event, packet: &Packet) -> Option<u64> {
        let ids = self.by_key.get(key)?;
        ids.iter().rev().copied().find(|id| {
            let o = &self.open[id];
            event.ts_ns.abs_diff(o.last_ts) < SAME_PACKET_WINDOW_NS
                && skb_compatible(o, key, event.skb_id)
                && !cannot_continue(o, event, packet)
        })
    }

    /// An IPv6 packet's key holds its ports (it has no IP id), so a NAT rewrite of a port
    /// changes it: the event's conntrack tuples say which port pairs the packet may have shown
    /// before, and a packet found under one of them is indexed under this key too.
    fn continued_across_nat(
        &mut self,
        key: &PacketKey,
        event: &Event,
        packet: &Packet,
    ) -> Option<u64> {
        let ct = event.conntrack.as_ref().filter(|_| packet.src.is_ipv6())?;
        let (o, r) = (&ct.original, &ct.reply);
        let id = [
            (o.sport, o.dport),
            (r.sport, r.dport),
            (o.sport, r.sport),
            (r.dport, o.dport),
        ]
        .into_iter()
        .map(|(a, b)| PacketKey {
            ports: (a.min(b), a.max(b)),
            ..key.clone()
        })
        .filter(|alt| alt != key)
        .find_map(|alt| self.continued(&alt, event, packet))?;
        self.by_key.entry(key.clone()).or_default().push_back(id);
        self.open
            .get_mut(&id)
            .expect("open packet")
            .more_keys
            .push(key.clone());
        Some(id)
    }

    /// Opens a packet for `key`, first making room under the limit.
    fn open_packet(&mut self, key: PacketKey, ts: u64) -> u64 {
        while self.open.len() >= self.limits.open_packets.max(1) {
            let Some((_, oldest)) = self.by_idle.first().copied() else {
                break;
            };
            let packet = self.close(oldest);
            self.evicted.push(packet);
            self.evictions.packets += 1;
        }
        let id = self.next_open;
        self.next_open += 1;
        self.by_key.entry(key.clone()).or_default().push_back(id);
        self.by_idle.insert((ts, id));
        self.open.insert(
            id,
            OpenPacket {
                key,
                more_keys: Vec::new(),
                skb_ids: Vec::new(),
                last_ts: ts,
                events: Vec::new(),
                rules: Vec::new(),
            },
        );
        id
    }

    /// Takes an open packet out of every index.
    fn close(&mut self, id: u64) -> OpenPacket {
        let packet = self.open.remove(&id).expect("open packet");
        self.by_idle.remove(&(packet.last_ts, id));
        for key in std::iter::once(&packet.key).chain(&packet.more_keys) {
            if let Some(ids) = self.by_key.get_mut(key) {
                // Packets finish roughly in the order they opened: the id is at the front.
                if let Some(at) = ids.iter().position(|i| *i == id) {
                    ids.remove(at);
                }
                if ids.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        packet
    }

    /// Moves a packet's idle deadline to `ts` if that is later.
    fn touch(&mut self, id: u64, ts: u64) {
        let packet = self.open.get_mut(&id).expect("open packet");
        if ts > packet.last_ts {
            self.by_idle.remove(&(packet.last_ts, id));
            packet.last_ts = ts;
            self.by_idle.insert((ts, id));
        }
    }

    /// Adds an event; events without headers are not part of any path.
    pub fn push(&mut self, event: Event) {
        let Some(packet) = &event.packet else { return };
        let key = PacketKey::of(packet);
        let ts = event.ts_ns;
        let found = self
            .continued(&key, &event, packet)
            .or_else(|| self.continued_across_nat(&key, &event, packet));
        let id = match found {
            Some(id) => id,
            None => self.open_packet(key, ts),
        };
        self.touch(id, ts);
        let open = self.open.get_mut(&id).expect("open packet");
        if let Some(skb) = event.skb_id.filter(|skb| !open.skb_ids.contains(skb)) {
            open.skb_ids.push(skb);
        }
        open.events.push(event);
    }

    /// Adds an nftables rule evaluation to the packet it was about (same header key).
    pub fn push_trace(&mut self, trace: RuleTrace) {
        let Some(packet) = &trace.packet else { return };
        let key = PacketKey::of(packet);
        let ts = trace.ts_ns;
        // Of the recent packets with its key, the one that showed exactly these headers (a
        // reply whose NAT was undone can share an IPv6 request's key), else the latest.
        let recent = self.by_key.get(&key).and_then(|ids| {
            let mut recent = ids
                .iter()
                .rev()
                .copied()
                .filter(|id| ts.abs_diff(self.open[id].last_ts) < SAME_PACKET_WINDOW_NS);
            let latest = recent.next()?;
            let showed = |id: &u64| {
                self.open[id]
                    .events
                    .iter()
                    .any(|e| e.packet.as_ref().is_some_and(|p| same_headers(p, packet)))
            };
            Some(
                std::iter::once(latest)
                    .chain(recent)
                    .find(showed)
                    .unwrap_or(latest),
            )
        });
        // Trace messages can overtake the ring buffer: hold the rule until the events come.
        let id = recent.unwrap_or_else(|| self.open_packet(key, ts));
        self.open
            .get_mut(&id)
            .expect("open packet")
            .rules
            .push(trace);
    }

    /// Finishes packets that saw no event for `idle_ns` before `now_ns` (kernel monotonic
    /// time), and those evicted since the last call. Looks only at the packets it finishes.
    pub fn flush_idle(&mut self, now_ns: u64, idle_ns: u64) -> Vec<PacketPath> {
        let mut done = std::mem::take(&mut self.evicted);
        while let Some(&(last_ts, id)) = self.by_idle.first() {
            self.flush_work += 1;
            if last_ts.saturating_add(idle_ns) > now_ns {
                break;
            }
            done.push(self.close(id));
        }
        self.finish_all(done)
    }

    /// Finishes every packet still open (at exit).
    pub fn finish(&mut self) -> Vec<PacketPath> {
        let mut open = std::mem::take(&mut self.evicted);
        open.extend(std::mem::take(&mut self.open).into_values());
        self.by_key.clear();
        self.by_idle.clear();
        self.finish_all(open)
    }

    fn finish_all(&mut self, mut packets: Vec<OpenPacket>) -> Vec<PacketPath> {
        packets.sort_by_key(|o| {
            o.events
                .iter()
                .map(|e| e.ts_ns)
                .chain(o.rules.iter().map(|r| r.ts_ns))
                .min()
                .unwrap_or(0)
        });
        let paths: Vec<PacketPath> = packets
            .into_iter()
            .map(|o| self.finish_one(o.events, o.rules))
            .collect();
        let Some(limit) = self.limits.per_connection else {
            return paths;
        };
        paths
            .into_iter()
            .filter(|p| {
                // Known from the nftables trace alone: the kernel held its events back (nftables
                // samples a flow once a second too, not in step with the kernel's sample).
                if p.hops.is_empty() {
                    self.folded += 1;
                    return false;
                }
                let Some(connection) = p.connection else {
                    return true;
                };
                let count = self.shown.entry(connection).or_default();
                *count += 1;
                // The kernel's samples past the limit are shown; so are fragments before it.
                let keep = *count <= limit || p.sample;
                self.folded += u64::from(!keep);
                keep
            })
            .collect()
    }

    fn finish_one(&mut self, mut events: Vec<Event>, rules: Vec<RuleTrace>) -> PacketPath {
        events.sort_by_key(|e| e.ts_ns);
        // A packet known only from nftables' trace (--probes nftables) has rules and no hops.
        let packet = events
            .first()
            .and_then(|e| e.packet.clone())
            .or_else(|| rules.first().and_then(|r| r.packet.clone()))
            .expect("only packets with headers are correlated");
        let (connection, direction) = self.connection_of(&events, &packet);
        // Events move into their hops; only the (small) headers are kept to compare the next.
        let mut previous: Option<Packet> = None;
        let mut hops: Vec<Hop> = events
            .into_iter()
            .map(|event| {
                let (layer, kind) = classify(&event, &self.topology);
                let rewrites = match (&previous, &event.packet) {
                    (Some(before), Some(after)) => rewrites(before, after),
                    _ => Vec::new(),
                };
                previous = event.packet.clone();
                Hop {
                    layer,
                    kind,
                    rewrites,
                    event,
                }
            })
            .collect();
        refine(&mut hops);
        let id = self.next_packet;
        self.next_packet += 1;
        let span = (
            hops.first().map_or(0, |h| h.event.ts_ns),
            hops.last().map_or(0, |h| h.event.ts_ns),
        );
        let incomplete = !self.gaps.is_empty() && self.touches_gap(span.0, span.1);
        let sample = hops.iter().any(|h| h.event.sample);
        self.incomplete += u64::from(incomplete);
        let ends = self.ends_of(&packet, &hops);
        let rule_at = rules::placed(&rules, &hops, &packet);
        PacketPath {
            id,
            connection,
            direction,
            packet,
            ends,
            hops,
            rules,
            rule_at,
            incomplete,
            proxy: None,
            rules_as: None,
            sample,
        }
    }

    /// The containers behind the packet's source and destination, as first seen or, after NAT,
    /// as last seen (a request DNATed to a container, a reply masqueraded from one).
    fn ends_of(&self, packet: &Packet, hops: &[Hop]) -> Ends {
        let last = hops
            .last()
            .and_then(|h| h.event.packet.as_ref())
            .unwrap_or(packet);
        let owner = |a: &IpAddr, b: &IpAddr| {
            self.topology
                .container_at(a)
                .or_else(|| self.topology.container_at(b))
                .map(str::to_string)
        };
        Ends {
            src: owner(&packet.src, &last.src),
            dst: owner(&packet.dst, &last.dst),
        }
    }

    /// The connection a packet belongs to: from conntrack where any probe saw it, else by
    /// matching its headers against connections already known.
    fn connection_of(
        &mut self,
        events: &[Event],
        packet: &Packet,
    ) -> (Option<u64>, Option<Direction>) {
        // The host's conntrack entry, not the one a container keeps in its own namespace for
        // the same packet (that one has the container's view of the addresses).
        let host = self.topology.names.host_netns;
        let host_ct = events
            .iter()
            .filter(|e| e.netfilter.is_some() || e.netns.is_none_or(|ns| ns == host))
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
        while self.connection_order.len() >= self.limits.connections.max(1) {
            let Some((old, o, r)) = self.connection_order.pop_front() else {
                break;
            };
            // A tuple reused by a newer connection keeps pointing at that one.
            if self.by_original.get(&o) == Some(&old) {
                self.by_original.remove(&o);
            }
            if self.by_reply.get(&r) == Some(&old) {
                self.by_reply.remove(&r);
            }
            self.shown.remove(&old);
            self.evictions.connections += 1;
        }
        let id = self.next_connection;
        self.next_connection += 1;
        self.by_original.insert(original, id);
        self.by_reply.insert(reply, id);
        self.connection_order.push_back((id, original, reply));
        id
    }
}

/// Whether `packet` cannot continue the open packet: it is the exact reverse of the open
/// packet's latest headers (an answer to it: no NAT swaps both ends; without this, an IPv6 echo,
/// no IP id, whose reply reuses the request's freed buffer would be taken for one packet), it
/// goes the other conntrack direction, or it is another ARP frame.
fn cannot_continue(open: &OpenPacket, event: &Event, packet: &Packet) -> bool {
    // conntrack knows: a packet keeps its direction, and NAT may have changed the addresses
    // the comparison below looks at (an IPv6 reply, without an IP id to tell it apart).
    let direction = |e: &Event| e.conntrack.as_ref().map(|c| c.direction);
    if let (Some(now), Some(before)) = (
        direction(event),
        open.events.iter().rev().find_map(direction),
    ) && now != before
    {
        return true;
    }
    let Some(last) = open.events.last().and_then(|e| e.packet.as_ref()) else {
        return false;
    };
    // Nothing rewrites an ARP frame: another sender or target is another frame (a host's
    // question soon after a container's announcement has the same key).
    if packet.arp.is_some() && !same_headers(last, packet) {
        return true;
    }
    // A packet to its own address and port is its own reverse; one from ::1:59424 to
    // ::1:15353 is not, and its answer is the reverse.
    (last.src, last.sport) != (last.dst, last.dport)
        && (packet.src, packet.sport, packet.dst, packet.dport)
            == (last.dst, last.dport, last.src, last.sport)
}

/// The same addresses and ports, the same way.
fn same_headers(a: &Packet, b: &Packet) -> bool {
    (a.src, a.sport, a.dst, a.dport) == (b.src, b.sport, b.dst, b.dport)
}

fn skb_compatible(open: &OpenPacket, key: &PacketKey, skb_id: Option<u64>) -> bool {
    key.ip_id != 0 || open.skb_ids.is_empty() || skb_id.is_none_or(|id| open.skb_ids.contains(&id))
}

/// A packet's own headers as a connection key.
fn header_key(p: &Packet) -> ConnectionKey {
    (
        p.src,
        p.sport.unwrap_or(0),
        p.dst,
        p.dport.unwrap_or(0),
        p.protocol,
    )
}

fn tuple_key(t: &crate::model::Tuple) -> ConnectionKey {
    (t.src, t.sport, t.dst, t.dport, t.protocol)
}

/// Address/port changes between two sightings of the same packet.
fn rewrites(before: &Packet, after: &Packet) -> Vec<Rewrite> {
    let mut out = Vec::new();
    if (before.src, before.sport) != (after.src, after.sport) {
        out.push(Rewrite {
            field: RewriteField::Source,
            before: endpoint(before.src, before.sport),
            after: endpoint(after.src, after.sport),
        });
    }
    if (before.dst, before.dport) != (after.dst, after.dport) {
        out.push(Rewrite {
            field: RewriteField::Destination,
            before: endpoint(before.dst, before.dport),
            after: endpoint(after.dst, after.dport),
        });
    }
    out
}
