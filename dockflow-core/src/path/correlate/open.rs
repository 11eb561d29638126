//! The packets being followed: events grouped by header fields NAT does not touch, indexed by
//! key (to find the packet an event continues) and by idle deadline (to finish the idle ones
//! first, at O(N log M) for N of M open).

use std::collections::{BTreeSet, VecDeque};

use rustc_hash::FxHashMap as HashMap;

use super::SAME_PACKET_WINDOW_NS;
use crate::model::{ArpOp, Event, Packet, RuleTrace};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct PacketKey {
    protocol: u8,
    arp: Option<ArpOp>,
    ip_id: u16,
    len: u16,
    /// IPv6 has no id: the ports, unordered, stand in (NAT66 is rare).
    ports: (u16, u16),
}

impl PacketKey {
    pub(super) fn of(p: &Packet) -> Self {
        let ports = if p.src.is_ipv6() {
            let (a, b) = (p.sport.unwrap_or(0), p.dport.unwrap_or(0));
            (a.min(b), a.max(b))
        } else {
            (0, 0)
        };
        Self {
            protocol: p.protocol.0,
            arp: p.arp,
            ip_id: p.ip_id,
            len: p.len,
            ports,
        }
    }
}

/// A packet being followed: its events and rule evaluations so far.
pub(super) struct OpenPacket {
    key: PacketKey,
    /// Further keys it is indexed under: an IPv6 packet whose ports NAT rewrote, one per
    /// further port pair it showed (empty, so no allocation, for nearly every packet).
    more_keys: Vec<PacketKey>,
    skb_ids: Vec<u64>,
    last_ts: u64,
    pub(super) events: Vec<Event>,
    pub(super) rules: Vec<RuleTrace>,
}

/// The open packets and their indexes.
#[derive(Default)]
pub(super) struct OpenPackets {
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
    /// Open packets [`OpenPackets::take_idle`] has looked at, in all (for the cost test).
    pub(super) flush_work: u64,
}

impl OpenPackets {
    pub(super) fn len(&self) -> usize {
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

    /// `held` holds only rules that overtook the ring buffer under `key`. When the event
    /// continues a packet across a NAT rewrite (an IPv6 packet whose port DNAT changed, its
    /// rules for the hooks after the rewrite read before its events), those rules are that
    /// packet's: they move there, and the event goes with them.
    fn rules_overtook(
        &mut self,
        held: u64,
        key: &PacketKey,
        event: &Event,
        packet: &Packet,
    ) -> u64 {
        match self.continued_across_nat(key, event, packet) {
            Some(id) if id != held => {
                let rules = self.close(held).rules;
                let open = self.open.get_mut(&id).expect("open packet");
                open.rules.extend(rules);
                open.rules.sort_by_key(|r| r.ts_ns);
                id
            }
            _ => held,
        }
    }

    /// Opens a packet for `key`, first making room under `limit` (the oldest is finished
    /// early); returns its id and how many were evicted.
    fn open_packet(&mut self, key: PacketKey, ts: u64, limit: usize) -> (u64, u64) {
        let mut evicted = 0;
        while self.open.len() >= limit.max(1) {
            let Some((_, oldest)) = self.by_idle.first().copied() else {
                break;
            };
            let packet = self.close(oldest);
            self.evicted.push(packet);
            evicted += 1;
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
        (id, evicted)
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

    /// Adds an event with headers to the packet it continues, or to a new one; returns how
    /// many packets were evicted to make room.
    pub(super) fn push(&mut self, event: Event, limit: usize) -> u64 {
        let Some(packet) = &event.packet else {
            return 0;
        };
        let key = PacketKey::of(packet);
        let ts = event.ts_ns;
        let found = match self.continued(&key, &event, packet) {
            Some(id) if self.open[&id].events.is_empty() => {
                Some(self.rules_overtook(id, &key, &event, packet))
            }
            Some(id) => Some(id),
            None => self.continued_across_nat(&key, &event, packet),
        };
        let (id, evicted) = match found {
            Some(id) => (id, 0),
            None => self.open_packet(key, ts, limit),
        };
        self.touch(id, ts);
        let open = self.open.get_mut(&id).expect("open packet");
        if let Some(skb) = event.skb_id.filter(|skb| !open.skb_ids.contains(skb)) {
            open.skb_ids.push(skb);
        }
        open.events.push(event);
        evicted
    }

    /// Adds an nftables rule evaluation to the packet it was about (same header key); returns
    /// how many packets were evicted to make room.
    pub(super) fn push_trace(&mut self, trace: RuleTrace, limit: usize) -> u64 {
        let Some(packet) = &trace.packet else {
            return 0;
        };
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
        let (id, evicted) = match recent {
            Some(id) => (id, 0),
            None => self.open_packet(key, ts, limit),
        };
        self.open
            .get_mut(&id)
            .expect("open packet")
            .rules
            .push(trace);
        evicted
    }

    /// Takes the packets that saw no event for `idle_ns` before `now_ns` (kernel monotonic
    /// time), and those evicted since the last call. Looks only at the packets it takes.
    pub(super) fn take_idle(&mut self, now_ns: u64, idle_ns: u64) -> Vec<OpenPacket> {
        let mut done = std::mem::take(&mut self.evicted);
        while let Some(&(last_ts, id)) = self.by_idle.first() {
            self.flush_work += 1;
            if last_ts.saturating_add(idle_ns) > now_ns {
                break;
            }
            done.push(self.close(id));
        }
        done
    }

    /// Takes every packet still open (at exit).
    pub(super) fn take_all(&mut self) -> Vec<OpenPacket> {
        let mut open = std::mem::take(&mut self.evicted);
        open.extend(std::mem::take(&mut self.open).into_values());
        self.by_key.clear();
        self.by_idle.clear();
        open
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
