//! From events to what is shown: correlate events into packets, link a proxied exchange's legs,
//! note whose rules a later packet shares, apply the filter expression, and explain each
//! connection. The packets that pass and the explanations go to the sinks.

use std::collections::HashMap;

use crate::{
    filter::{Filter, Form},
    model::{Event, RuleTrace, topology::Topology},
    path::{
        correlate::{Correlator, Evictions, Limits},
        explain::{Explainer, Explanation},
        hop::{Direction, PacketPath},
        proxy::ProxyLinker,
    },
};

/// What the pipeline hands a sink.
pub enum Item<'a> {
    Packet(&'a PacketPath),
    Explanation(&'a Explanation),
}

/// What the pipeline made, in order: it goes on to the sinks, and (owned) to the threads that
/// render it.
// Packets are nearly every item: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Produced {
    Packet(PacketPath),
    Explanation(Explanation),
}

impl Produced {
    pub fn item(&self) -> Item<'_> {
        match self {
            Produced::Packet(path) => Item::Packet(path),
            Produced::Explanation(explanation) => Item::Explanation(explanation),
        }
    }
}

/// A packet is finished once no probe has seen it for this long.
pub const PACKET_IDLE_NS: u64 = 100_000_000;

pub struct Pipeline {
    correlator: Correlator,
    explainer: Explainer,
    /// Links the two connections of an exchange through dockerd's userland proxy.
    proxies: ProxyLinker,
    /// With nftables tracing each flow's first packets only: the latest traced packet of each
    /// (connection, direction), for the later ones that share its rules.
    traced: Option<HashMap<(u64, Direction), u64>>,
    /// The filter expression: packets it does not match are left out.
    pub(super) filter: Option<Filter>,
    /// Connections remembered at most (--max-connections).
    max_connections: usize,
    /// Packets the filter left out.
    pub filtered_out: u64,
}

impl Pipeline {
    pub fn new(topology: Topology, limits: Limits) -> Self {
        Self {
            correlator: Correlator::with_limits(topology, limits),
            explainer: Explainer::with_limit(limits.connections),
            proxies: ProxyLinker::with_limit(limits.connections),
            traced: None,
            filter: None,
            max_connections: limits.connections,
            filtered_out: 0,
        }
    }

    /// nftables traced each flow's first packets only (--trace-rules first): a later packet
    /// says whose rules it shares.
    pub fn share_rules(&mut self, on: bool) {
        self.traced = on.then(HashMap::new);
    }

    pub fn topology(&self) -> &Topology {
        self.correlator.topology()
    }

    pub fn set_topology(&mut self, topology: Topology) {
        self.correlator.set_topology(topology);
    }

    pub fn shared_topology(&self) -> std::sync::Arc<Topology> {
        self.correlator.shared_topology()
    }

    pub fn push(&mut self, event: Event) {
        self.correlator.push(event);
    }

    pub fn push_trace(&mut self, trace: RuleTrace) {
        self.correlator.push_trace(trace);
    }

    /// Events from `from_ns` to `to_ns` were lost: packets on their way then are incomplete.
    pub fn mark_gap(&mut self, from_ns: u64, to_ns: u64) {
        self.correlator.mark_gap(from_ns, to_ns);
    }

    pub fn folded(&self) -> u64 {
        self.correlator.folded()
    }

    pub fn incomplete_packets(&self) -> u64 {
        self.correlator.incomplete
    }

    pub fn evictions(&self) -> Evictions {
        self.correlator.evictions
    }

    /// The packets finished by `now_ns` (kernel monotonic clock), and what they explain.
    pub fn tick(&mut self, now_ns: u64) -> Vec<Produced> {
        let done = self.correlator.flush_idle(now_ns, PACKET_IDLE_NS);
        self.run(done)
    }

    /// Everything still open, then the explanations of connections left incomplete.
    pub fn finish(&mut self) -> Vec<Produced> {
        let rest = self.correlator.finish();
        let mut produced = self.run(rest);
        produced.extend(
            self.explainer
                .finish()
                .into_iter()
                .map(Produced::Explanation),
        );
        produced
    }

    fn run(&mut self, paths: Vec<PacketPath>) -> Vec<Produced> {
        let mut produced = Vec::with_capacity(paths.len());
        for mut path in paths {
            // Before the filter: a proxied exchange's legs are linked whichever is shown.
            self.proxies.annotate(&mut path, self.correlator.topology());
            self.note_shared_rules(&mut path);
            if let Some(filter) = &self.filter
                && !filter.matches_events(path.hops.iter().map(|h| &h.event))
                && !filter.matches_any([Form::of_packet(&path.packet)])
            {
                self.filtered_out += 1;
                continue;
            }
            let explanations = self.explainer.observe(&path);
            produced.push(Produced::Packet(path));
            produced.extend(explanations.into_iter().map(Produced::Explanation));
        }
        produced
    }

    /// Notes the packet's rules, or the earlier packet whose rules it shares.
    pub(super) fn note_shared_rules(&mut self, path: &mut PacketPath) {
        let (Some(traced), Some(connection), Some(direction)) =
            (&mut self.traced, path.connection, path.direction)
        else {
            return;
        };
        if !path.rules.is_empty() {
            // Bounded like the other per-connection tables; a forgotten flow is traced anew.
            if traced.len() >= self.max_connections.max(1) * 2 {
                traced.clear();
            }
            traced.insert((connection, direction), path.id);
        } else if path.packet.arp.is_none() {
            path.rules_as = traced.get(&(connection, direction)).copied();
        }
    }
}
