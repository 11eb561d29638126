//! --per-connection N: the first N packets of each connection are emitted in full; the rest
//! are held back and only counted, so a busy connection costs the ring buffer little once it
//! has been shown. A connection is its conntrack entry; a packet is an IPv4 id (or skb head)
//! new to that entry. The device hops decide (see skb::observe); tc and hops without an entry
//! go by the connection's stored tuples once it is past its limit.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use dockflow_common::{
    ConnectionPackets, CtTuple, HIDDEN_EVENTS, HIDDEN_PACKETS, MAX_COUNTED_CONNECTIONS,
    MAX_REPLY_TUPLES, PacketHeaders, TUPLE_FLAG_HIDDEN, TUPLE_INVERTED, TUPLE_ORIGINAL,
    TUPLE_REPLY,
};

use crate::{
    SETTINGS,
    kmem::{self, offset},
    reply_tuples::tuple_of,
    tuple_flag_on, tuple_flag_set,
};

#[map(name = "CONN_PACKETS")]
static CONN_PACKETS: LruHashMap<u64, ConnectionPackets> =
    LruHashMap::with_max_entries(MAX_COUNTED_CONNECTIONS, 0);

#[map(name = "HIDDEN_TUPLES")]
static HIDDEN_TUPLES: LruHashMap<CtTuple, u8> = LruHashMap::with_max_entries(MAX_REPLY_TUPLES, 0);

#[map(name = "HIDDEN")]
static HIDDEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

/// Whether this event of a wanted packet is held back: its connection (`ct`, 0 before
/// conntrack) is past the limit. `head` is the skb's head (0 where unknown, as in tc).
#[inline(always)]
pub fn holds_back(headers: Option<&PacketHeaders>, ct: u64, head: u64) -> bool {
    let Some(settings) = SETTINGS.get(0) else {
        return false;
    };
    let limit = unsafe { core::ptr::read_volatile(&settings.per_connection) };
    if limit == 0 {
        return false;
    }
    let hidden = if ct == 0 {
        tuple_flag_on(TUPLE_FLAG_HIDDEN)
            && headers.is_some_and(|h| unsafe { HIDDEN_TUPLES.get(&tuple_of(h)) }.is_some())
    } else {
        past_limit(ct, head, limit, headers)
    };
    if hidden {
        count(HIDDEN_EVENTS);
    }
    hidden
}

/// Counts the packet if it is new to `ct`; true when the connection is past `limit`.
#[inline(always)]
fn past_limit(ct: u64, head: u64, limit: u32, headers: Option<&PacketHeaders>) -> bool {
    // Who the entry belongs to, in two small reads (the stack is small on older kernels).
    let original = ct + offset!(ct_tuple_original) as u64;
    let source: u64 = kmem::read(original, offset!(tuple_src_addr)).unwrap_or(0);
    let ports = u32::from(kmem::read::<u16>(original, offset!(tuple_src_port)).unwrap_or(0))
        | u32::from(kmem::read::<u16>(original, offset!(tuple_dst_port)).unwrap_or(0)) << 16;
    let fresh = match unsafe { CONN_PACKETS.get(&ct) } {
        Some(known) => known.original_source != source || known.original_ports != ports,
        None => true,
    };
    if fresh {
        let start = ConnectionPackets {
            last_packet: 0,
            original_source: source,
            original_ports: ports,
            packets: 0,
        };
        let _ = CONN_PACKETS.insert(&ct, &start, 0);
    }
    let Some(entry) = CONN_PACKETS.get_ptr_mut(&ct) else {
        return false;
    };
    let entry = unsafe { &mut *entry };
    // The IPv4 id names a packet along its whole way (NAT keeps it); the skb head may change
    // (a copy, a reallocation), so it stands in only where there is no id.
    let packet = match headers {
        Some(h) if h.ip_id != 0 => u64::from(h.ip_id) | 1 << 63,
        Some(_) => head,
        // Without headers the packet cannot be told apart: decide by the count so far.
        None => entry.last_packet,
    };
    if entry.last_packet != packet {
        entry.last_packet = packet;
        entry.packets = entry.packets.saturating_add(1);
        if entry.packets > limit {
            count(HIDDEN_PACKETS);
        }
        // The first packet held back: from here on, hops without an entry are held back too.
        // (This packet's hops before conntrack were already emitted; userspace folds them.)
        if entry.packets == limit + 1 {
            hide_tuples(ct, headers);
        }
    }
    entry.packets > limit
}

/// Stores one tuple with its direction. The value goes through the stack: a constant's address
/// would point into a read-only data section the netfilter programs' loader does not relocate
/// the same way.
#[inline(always)]
fn store(tuple: &CtTuple, direction: u8) -> bool {
    let value = unsafe { core::ptr::read_volatile(&direction) };
    HIDDEN_TUPLES.insert(tuple, &value, 0).is_ok()
}

/// Stores both tuples of `ct`'s connection and their reverses, so that its hops without an
/// entry are held back too. One tuple buffer, turned around in place.
#[inline(always)]
fn hide_tuples(ct: u64, headers: Option<&PacketHeaders>) {
    let Some(family) = headers.map(|h| h.family) else {
        return;
    };
    let mut stored = false;
    let mut tuple = CtTuple::default();
    for (at, direction) in [
        (offset!(ct_tuple_original), TUPLE_ORIGINAL),
        (offset!(ct_tuple_reply), TUPLE_REPLY),
    ] {
        kmem::read_tuple(ct + at as u64, &mut tuple);
        tuple.family = family;
        stored |= store(&tuple, direction);
        tuple.invert();
        stored |= store(&tuple, direction | TUPLE_INVERTED);
    }
    if stored {
        tuple_flag_set(TUPLE_FLAG_HIDDEN);
    }
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = HIDDEN.get_ptr_mut(index) {
        unsafe { *counter += 1 };
    }
}
