//! Grouping events into packets (one packet, every probe it crossed, in time order) and packets
//! into connections (conntrack: a request and its reply belong together).
//!
//! A packet is recognised across probes by header fields NAT does not touch (protocol, IPv4
//! id, length). skb identity (skb->head) alone is not enough: tc sees no skb pointer, the
//! kernel may reallocate the head on the way, and a freed head is soon reused, often for the
//! very reply the packet provoked. It only breaks ties where the IPv4 id says nothing (0).
//!
//! Four jobs, one module each behind [`Correlator`]: [`open`] groups events into packets,
//! [`connections`] packets into connections, [`losses`] remembers when events were lost (the
//! packets on their way then are incomplete), [`folding`] folds what --per-connection holds
//! back.

mod connections;
mod folding;
mod losses;
mod open;

use std::{net::IpAddr, sync::Arc};

use self::{connections::Connections, folding::Folding, losses::LossWindows, open::OpenPackets};
use super::{
    classify::{classify, refine},
    hop::{Ends, Hop, PacketPath, Rewrite, RewriteField},
    rules,
};
use crate::model::{Event, Packet, ProbePoint, RuleTrace, endpoint, topology::Topology};

/// Events further apart than this are never the same packet.
const SAME_PACKET_WINDOW_NS: u64 = 200_000_000;

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
    topology: Arc<Topology>,
    limits: Limits,
    packets: OpenPackets,
    connections: Connections,
    losses: LossWindows,
    folding: Folding,
    next_packet: u64,
    pub evictions: Evictions,
    /// Packets finished with [`PacketPath::incomplete`] set.
    pub incomplete: u64,
    /// Every event in a namespace the topology does not know is left out, not only drops
    /// (see [`Correlator::one_node_of_several`]).
    only_known_namespaces: bool,
}

impl Correlator {
    pub fn new(topology: Topology) -> Self {
        Self::with_limits(topology, Limits::default())
    }

    pub fn with_limits(topology: Topology, limits: Limits) -> Self {
        Self {
            topology: Arc::new(topology),
            limits,
            packets: OpenPackets::default(),
            connections: Connections::with_limit(limits.connections),
            losses: LossWindows::default(),
            folding: Folding::new(limits.per_connection),
            // Packets are numbered from 1, as users read them.
            next_packet: 1,
            evictions: Evictions::default(),
            incomplete: 0,
            only_known_namespaces: false,
        }
    }

    /// For one node's recording among several merged: where nodes share one kernel (a
    /// simulated cluster), the device tracepoints and kprobes saw the other nodes' namespaces
    /// too, and those hops are theirs to tell. A single live run keeps them: a container that
    /// just restarted is in a namespace the topology learns a moment later.
    pub fn one_node_of_several(mut self) -> Self {
        self.only_known_namespaces = true;
        self
    }

    /// Events from `from_ns` to `to_ns` were lost: packets on their way then are incomplete.
    pub fn mark_gap(&mut self, from_ns: u64, to_ns: u64) {
        self.losses.mark(from_ns, to_ns);
    }

    pub fn set_topology(&mut self, topology: Topology) {
        self.topology = Arc::new(topology);
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The topology, to hand to other threads with what it names.
    pub fn shared_topology(&self) -> Arc<Topology> {
        self.topology.clone()
    }

    /// Packets still open.
    pub fn open_packets(&self) -> usize {
        self.packets.len()
    }

    /// Fragments of packets past --per-connection that were not shown.
    pub fn folded(&self) -> u64 {
        self.folding.folded
    }

    /// Open packets the idle flushes have looked at, in all (for the cost test).
    pub fn flush_work(&self) -> u64 {
        self.packets.flush_work
    }

    /// Adds an event; events without headers are not part of any path, nor are drops in
    /// namespaces that are none of this host's (see `InterfaceNames::may_be_ours`).
    pub fn push(&mut self, event: Event) {
        let judged = self.only_known_namespaces || event.probe == ProbePoint::KfreeSkb;
        if judged && !self.topology.names.may_be_ours(event.netns) {
            return;
        }
        self.evictions.packets += self.packets.push(event, self.limits.open_packets);
    }

    /// Adds an nftables rule evaluation to the packet it was about (same header key).
    pub fn push_trace(&mut self, trace: RuleTrace) {
        self.evictions.packets += self.packets.push_trace(trace, self.limits.open_packets);
    }

    /// Finishes packets that saw no event for `idle_ns` before `now_ns` (kernel monotonic
    /// time), and those evicted since the last call. Looks only at the packets it finishes.
    pub fn flush_idle(&mut self, now_ns: u64, idle_ns: u64) -> Vec<PacketPath> {
        let done = self.packets.take_idle(now_ns, idle_ns);
        self.finish_all(done)
    }

    /// Finishes every packet still open (at exit).
    pub fn finish(&mut self) -> Vec<PacketPath> {
        let open = self.packets.take_all();
        self.finish_all(open)
    }

    fn finish_all(&mut self, mut packets: Vec<open::OpenPacket>) -> Vec<PacketPath> {
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
        paths.into_iter().filter(|p| self.folding.keep(p)).collect()
    }

    fn finish_one(&mut self, mut events: Vec<Event>, rules: Vec<RuleTrace>) -> PacketPath {
        events.sort_by_key(|e| e.ts_ns);
        // A packet known only from nftables' trace (--probes nftables) has rules and no hops.
        let packet = events
            .first()
            .and_then(|e| e.packet.clone())
            .or_else(|| rules.first().and_then(|r| r.packet.clone()))
            .expect("only packets with headers are correlated");
        let (connection, direction) =
            self.connections
                .of(&events, &packet, self.topology.names.host_netns);
        for forgotten in self.connections.take_forgotten() {
            self.folding.forget(forgotten);
            self.evictions.connections += 1;
        }
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
        let incomplete = self.losses.touch(span.0, span.1);
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
