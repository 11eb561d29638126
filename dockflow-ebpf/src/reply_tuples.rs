//! Reply tuples of the target's NATed connections. A reply to a connection the target started
//! through masquerade arrives addressed to the host, from a peer that is not the target: until
//! conntrack has run, nothing in it names the target, so the filter would miss its arrival on
//! the host's link and the first prerouting slot. Once a target packet has passed postrouting
//! with source NAT done, its connection's reply tuple is final; it is remembered here, and the
//! filter lets packets with those headers through. Userspace removes a tuple when conntrack no
//! longer has its connection (the map is LRU, so a busy host cannot fill it either).

use aya_ebpf::{macros::map, maps::LruHashMap};
use dockflow_common::{
    CtTuple, MAX_REPLY_TUPLES, NF_INET_POST_ROUTING, PacketHeaders, TUPLE_FLAG_REPLY, TUPLE_LEARNED,
};

use crate::{
    conntrack::{IP_CT_IS_REPLY, NFCT_INFOMASK, tuple_of},
    globals::{tuple_flag_on, tuple_flag_set},
    kmem::{self, offset},
};

#[map(name = "REPLY_TUPLES")]
static REPLY_TUPLES: LruHashMap<CtTuple, u64> = LruHashMap::with_max_entries(MAX_REPLY_TUPLES, 0);

/// enum ip_conntrack_status: IPS_SRC_NAT_BIT 4.
const IPS_SRC_NAT: u64 = 1 << 4;

/// Remembers the reply tuple of `nfct`'s connection if this target packet, at the last slot of
/// `hook`, is an original-direction packet whose source was NATed. One lookup per such packet;
/// the tuple is written once per connection.
#[inline(always)]
pub fn learn(hook: u8, family: u8, nfct: u64) {
    let ct = nfct & !NFCT_INFOMASK;
    if hook != NF_INET_POST_ROUTING || ct == 0 || nfct & NFCT_INFOMASK >= IP_CT_IS_REPLY {
        return;
    }
    if kmem::read::<u64>(ct, offset!(ct_status)).unwrap_or(0) & IPS_SRC_NAT == 0 {
        return;
    }
    let mut key = CtTuple::default();
    kmem::read_tuple(ct + offset!(ct_tuple_reply) as u64, &mut key);
    key.family = family;
    // SAFETY: the value is read at once and never held; a concurrent update or delete gives the old
    // value or none, both handled.
    if unsafe { REPLY_TUPLES.get(&key) }.is_some() {
        return;
    }
    if REPLY_TUPLES.insert(&key, &TUPLE_LEARNED, 0).is_ok() {
        tuple_flag_set(TUPLE_FLAG_REPLY);
    }
}

/// Whether a packet with these headers is the reply of a connection [`learn`] remembered.
#[inline(always)]
pub fn is_learned_reply(h: &PacketHeaders) -> bool {
    if !tuple_flag_on(TUPLE_FLAG_REPLY) {
        return false;
    }
    // SAFETY: the value is read at once and never held; a concurrent update or delete gives the old
    // value or none, both handled.
    unsafe { REPLY_TUPLES.get(&tuple_of(h)) }.is_some()
}
