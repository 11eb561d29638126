//! --per-connection N (default 64): the first N packets of each connection are emitted in
//! full; after that one packet a second (a sample) and every TCP SYN, FIN or RST, and the rest
//! are held back and only counted, so a busy connection costs the ring buffer and userspace
//! almost nothing once it has been shown. A connection is its conntrack entry; a packet is an
//! IPv4 id (or skb head) new to that entry.
//!
//! Two ways in, so that every probe of one packet takes the same decision:
//! - below the limit, the device hops (which see the conntrack entry on the host's side) count
//!   the connection's packets by entry (`count_by_entry`); the packet that passes the limit
//!   stores the connection's four tuple forms in HIDDEN_TUPLES;
//! - from then on every probe (netfilter, tc, device hops, before conntrack or after NAT) finds
//!   the connection from the packet's headers alone (`decide_by_tuple`: two lookups, no kernel
//!   reads, cheap enough for the netfilter programs' verifier). The first probe to see a new
//!   packet decides for it; later probes of the same packet find the decision stored with it.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use dockflow_common::{
    ConnectionPackets, CtTuple, HIDDEN_EVENTS, HIDDEN_PACKETS, MAX_COUNTED_CONNECTIONS,
    MAX_REPLY_TUPLES, PACKET_HELD, PACKET_SAMPLED, PACKET_SHOWN, PacketHeaders, SAMPLE_INTERVAL_NS,
    TUPLE_FLAG_HIDDEN,
};

use crate::{
    conntrack::tuple_of,
    globals::{SETTINGS, tuple_flag_on, tuple_flag_set},
    kmem::{self, offset},
};

#[map(name = "CONN_PACKETS")]
static CONN_PACKETS: LruHashMap<u64, ConnectionPackets> =
    LruHashMap::with_max_entries(MAX_COUNTED_CONNECTIONS, 0);

/// Tuple form -> the connection's conntrack entry (its key in CONN_PACKETS).
#[map(name = "HIDDEN_TUPLES")]
static HIDDEN_TUPLES: LruHashMap<CtTuple, u64> = LruHashMap::with_max_entries(MAX_REPLY_TUPLES, 0);

#[map(name = "HIDDEN")]
static HIDDEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// What happens to one event of a wanted packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Show,
    /// Shown as its connection's sample past the limit.
    Sample,
    Hold,
}

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;

/// The decision for this event of a wanted packet. `ct` is the conntrack entry (0 before
/// conntrack); `head` the skb's head (0 where unknown, as in tc). `counts`: this probe may
/// count packets by their conntrack entry (the device hops; see the module comment).
#[inline(always)]
pub fn decide(headers: Option<&PacketHeaders>, ct: u64, head: u64, counts: bool) -> Decision {
    let Some(settings) = SETTINGS.get(0) else {
        return Decision::Show;
    };
    // SAFETY: `settings` is a valid reference to the map value; volatile so each run reads what
    // userspace last wrote.
    let limit = unsafe { core::ptr::read_volatile(&settings.per_connection) };
    if limit == 0 {
        return Decision::Show;
    }
    let Some(headers) = headers else {
        return Decision::Show;
    };
    // A connection's opening and closing are always shown.
    if headers.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        return Decision::Show;
    }
    let packet = packet_id(headers, head);
    match decide_by_tuple(headers, packet, limit) {
        Some(decision) => decision,
        None if counts && ct != 0 => count_by_entry(ct, packet, limit, headers),
        None => Decision::Show,
    }
}

/// Counts one event held back.
#[inline(always)]
pub fn count_held_event() {
    count(HIDDEN_EVENTS);
}

/// The IPv4 id names a packet along its whole way (NAT keeps it); the skb head may change (a
/// copy, a reallocation), so it stands in only where there is no id. 0: unknown.
#[inline(always)]
fn packet_id(headers: &PacketHeaders, head: u64) -> u64 {
    if headers.ip_id != 0 {
        u64::from(headers.ip_id) | 1 << 63
    } else {
        head
    }
}

/// For a connection past its limit (its tuples stored): the decision for this packet.
#[inline(always)]
fn decide_by_tuple(headers: &PacketHeaders, packet: u64, limit: u32) -> Option<Decision> {
    if !tuple_flag_on(TUPLE_FLAG_HIDDEN) {
        return None;
    }
    // SAFETY: the value is read at once and never held; a concurrent update or delete gives the old
    // value or none, both handled.
    let ct = unsafe { HIDDEN_TUPLES.get(&tuple_of(headers)) }.copied()?;
    // SAFETY: the pointer is to this map's value, valid while the program runs; per-packet counts
    // tolerate a racing update from another CPU (a count off by one).
    let entry = unsafe { &mut *CONN_PACKETS.get_ptr_mut(&ct)? };
    Some(next_packet(entry, packet, limit))
}

/// Counts `packet` if it is new to the connection and decides for it; an unknown packet (0)
/// or one seen before takes the last decision.
#[inline(always)]
fn next_packet(entry: &mut ConnectionPackets, packet: u64, limit: u32) -> Decision {
    if packet != 0 && entry.last_packet != packet {
        entry.last_packet = packet;
        entry.packets = entry.packets.saturating_add(1);
        entry.last_decision = if entry.packets <= limit {
            PACKET_SHOWN
        } else {
            // SAFETY: a BPF helper with no arguments and no preconditions.
            let now = unsafe { bpf_ktime_get_ns() };
            if now.wrapping_sub(entry.sampled_at_ns) >= SAMPLE_INTERVAL_NS {
                entry.sampled_at_ns = now;
                PACKET_SAMPLED
            } else {
                count(HIDDEN_PACKETS);
                PACKET_HELD
            }
        };
    }
    match entry.last_decision {
        PACKET_SHOWN => Decision::Show,
        PACKET_SAMPLED => Decision::Sample,
        _ => Decision::Hold,
    }
}

/// Below the limit: counts the packet by the connection's conntrack entry; the packet that
/// passes the limit stores the connection's tuples, so from then on [`decide_by_tuple`] finds
/// it (the first sample comes a whole interval later).
#[inline(always)]
fn count_by_entry(ct: u64, packet: u64, limit: u32, headers: &PacketHeaders) -> Decision {
    // Who the entry belongs to, in two small reads (the stack is small on older kernels).
    let original = ct + offset!(ct_tuple_original) as u64;
    let source: u64 = kmem::read(original, offset!(tuple_src_addr)).unwrap_or(0);
    let ports = u32::from(kmem::read::<u16>(original, offset!(tuple_src_port)).unwrap_or(0))
        | u32::from(kmem::read::<u16>(original, offset!(tuple_dst_port)).unwrap_or(0)) << 16;
    // SAFETY: the value is read at once and never held; a concurrent update or delete gives the old
    // value or none, both handled.
    let fresh = match unsafe { CONN_PACKETS.get(&ct) } {
        Some(known) => known.original_source != source || known.original_ports != ports,
        None => true,
    };
    if fresh {
        let start = ConnectionPackets {
            original_source: source,
            original_ports: ports,
            ..ConnectionPackets::default()
        };
        let _ = CONN_PACKETS.insert(&ct, &start, 0);
    }
    let Some(entry) = CONN_PACKETS.get_ptr_mut(&ct) else {
        return Decision::Show;
    };
    // SAFETY: `entry` points to this map's value, valid while the program runs; per-packet counts
    // tolerate a racing update from another CPU.
    let entry = unsafe { &mut *entry };
    if packet == 0 || entry.last_packet == packet || entry.packets < limit {
        return next_packet(entry, packet, limit);
    }
    // The first packet past the limit: held back from here (its hops before this one were
    // emitted; userspace folds them), and so are the connection's hops without an entry.
    entry.last_packet = packet;
    entry.packets = entry.packets.saturating_add(1);
    entry.last_decision = PACKET_HELD;
    // SAFETY: a BPF helper with no arguments and no preconditions.
    entry.sampled_at_ns = unsafe { bpf_ktime_get_ns() };
    count(HIDDEN_PACKETS);
    hide_tuples(ct, headers.family);
    Decision::Hold
}

/// Stores both tuples of `ct`'s connection and their reverses, each naming `ct`. One tuple
/// buffer, turned around in place.
#[inline(always)]
fn hide_tuples(ct: u64, family: u8) {
    let mut stored = false;
    let mut tuple = CtTuple::default();
    for at in [offset!(ct_tuple_original), offset!(ct_tuple_reply)] {
        kmem::read_tuple(ct + at as u64, &mut tuple);
        tuple.family = family;
        stored |= HIDDEN_TUPLES.insert(&tuple, &ct, 0).is_ok();
        tuple.invert();
        stored |= HIDDEN_TUPLES.insert(&tuple, &ct, 0).is_ok();
    }
    if stored {
        tuple_flag_set(TUPLE_FLAG_HIDDEN);
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = HIDDEN.get_ptr_mut(index) {
        // SAFETY: `counter` points to this CPU's slot of a per-CPU array, which nothing else writes
        // while this program runs.
        unsafe { *counter += 1 };
    }
}
