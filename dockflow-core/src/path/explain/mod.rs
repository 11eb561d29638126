//! Plain words for a connection's request and reply, like the numbered walkthrough the seed's
//! author wrote for the request and could not write for the reply.
//!
//! Two stages: a path gives typed facts ([`Fact`]), in the order the packet met them; each fact
//! renders to one sentence. The closing facts (what became of the packet, how request and reply
//! crossed between the bridge and the IP stack) are derived from the hops, and a fact is only
//! stated when the path shows it: no routing for a packet that was only bridged, no drop for a
//! packet that reached its destination.

mod facts;
mod narrate;
mod sentences;

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::Serialize;

pub use self::facts::*;
use self::narrate::{crossing, is_announcement, narrate, proxy_fact, reply_sees_no_nat};
pub use self::sentences::vxlan_port_words;
use super::{
    correlate::Limits,
    hop::{Direction, PacketPath},
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub connection: u64,
    pub steps: Vec<Step>,
}

/// One fact and its sentence; JSON carries both (`kind` and the fields, and `text`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub fact: Fact,
    pub text: String,
}

impl Step {
    fn new(fact: Fact) -> Self {
        let text = fact.sentence();
        Self { fact, text }
    }
}

/// Collects the first request and reply of each connection; explains a connection once both
/// were seen (or, at exit, with what was seen).
pub struct Explainer {
    /// Connections waiting for their other half, oldest (lowest id) first.
    pending: BTreeMap<u64, (Option<PacketPath>, Option<PacketPath>)>,
    explained: HashSet<u64>,
    explained_order: VecDeque<u64>,
    /// How many connections each of the two may hold; past it the oldest pending one is
    /// explained with what was seen, the oldest explained one forgotten.
    limit: usize,
}

impl Default for Explainer {
    fn default() -> Self {
        Self::with_limit(Limits::default().connections)
    }
}

impl Explainer {
    pub fn with_limit(limit: usize) -> Self {
        Self {
            pending: BTreeMap::new(),
            explained: HashSet::new(),
            explained_order: VecDeque::new(),
            limit: limit.max(1),
        }
    }

    /// Feeds a finished packet; returns the explanations it completed: its connection's, and
    /// the oldest waiting one's when the limit is reached.
    pub fn observe(&mut self, path: &PacketPath) -> Vec<Explanation> {
        let (Some(connection), Some(direction)) = (path.connection, path.direction) else {
            return Vec::new();
        };
        if self.explained.contains(&connection) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !self.pending.contains_key(&connection) && self.pending.len() >= self.limit {
            out.extend(self.explain_oldest());
        }
        let entry = self.pending.entry(connection).or_default();
        let slot = if direction == Direction::Request {
            &mut entry.0
        } else {
            &mut entry.1
        };
        slot.get_or_insert_with(|| path.clone());
        if entry.0.is_some() && entry.1.is_some() {
            out.extend(self.explain_now(connection));
        }
        out
    }

    fn explain_oldest(&mut self) -> Option<Explanation> {
        let oldest = *self.pending.keys().next()?;
        self.explain_now(oldest)
    }

    fn explain_now(&mut self, connection: u64) -> Option<Explanation> {
        let (request, reply) = self.pending.remove(&connection)?;
        if self.explained_order.len() >= self.limit
            && let Some(old) = self.explained_order.pop_front()
        {
            self.explained.remove(&old);
        }
        self.explained.insert(connection);
        self.explained_order.push_back(connection);
        Some(explain(connection, request.as_ref(), reply.as_ref()))
    }

    /// Explanations for connections that never completed (a request with no reply, say).
    pub fn finish(&mut self) -> Vec<Explanation> {
        std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(connection, (request, reply))| {
                explain(connection, request.as_ref(), reply.as_ref())
            })
            .collect()
    }
}

/// One packet's own steps, as a role of its connection (a merged packet's leg on one node).
pub fn steps_of(path: &PacketPath, role: Role) -> Vec<Step> {
    narrate(path, role).into_iter().map(Step::new).collect()
}

/// One step from a fact made elsewhere (a merged packet's crossing between nodes).
pub fn step(fact: Fact) -> Step {
    Step::new(fact)
}

pub fn explain(
    connection: u64,
    request: Option<&PacketPath>,
    reply: Option<&PacketPath>,
) -> Explanation {
    let mut facts = Vec::new();
    if let Some(request) = request {
        facts.extend(narrate(request, Role::Request));
        facts.extend(proxy_fact(request));
    }
    let is_arp = request.or(reply).is_some_and(|p| p.packet.arp.is_some());
    match reply {
        Some(reply) if is_arp => facts.extend(narrate(reply, Role::Reply)),
        Some(reply) => {
            facts.extend(narrate(reply, Role::Reply));
            facts.extend(request.and_then(|request| crossing(request, reply)));
            facts.extend(request.and_then(|request| reply_sees_no_nat(request, reply)));
        }
        None if request.is_some_and(|r| r.dropped().is_none() && !is_announcement(r)) => {
            facts.push(Fact::NoReply)
        }
        None => {}
    }
    Explanation {
        connection,
        steps: facts.into_iter().map(Step::new).collect(),
    }
}
