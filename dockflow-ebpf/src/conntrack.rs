//! The packet's conntrack entry: skb->_nfct (the entry with ip_conntrack_info in its low bits),
//! the event's conntrack section, and the tuple a packet's headers spell as conntrack keys it.

use dockflow_common::{CtTuple, PacketEvent, PacketHeaders, SECTION_CONNTRACK};

use crate::{
    kmem::{offset, read, read_tuple},
    skb::SkbFields,
};

/// skb->_nfct holds the nf_conn pointer with ip_conntrack_info in its low 3 bits.
pub const NFCT_INFOMASK: u64 = 7;
/// enum ip_conntrack_info: an established connection's original direction; from
/// IP_CT_IS_REPLY on, reply-direction packets (IP_CT_ESTABLISHED_REPLY is the same value).
pub const IP_CT_ESTABLISHED: u64 = 0;
pub const IP_CT_IS_REPLY: u64 = 3;

/// skb->_nfct: the conntrack entry with ip_conntrack_info in its low bits (0: none, or a kernel
/// without conntrack).
#[inline(always)]
pub fn nfct<S: SkbFields>(skb: S) -> u64 {
    if offset!(has_conntrack) == 0 {
        return 0;
    }
    skb.field(offset!(skb_nfct)).unwrap_or(0)
}

/// Fills the conntrack section from skb->_nfct (0: no entry).
#[inline(always)]
pub fn fill(nfct: u64, event: &mut PacketEvent) {
    let ct = nfct & !NFCT_INFOMASK;
    if ct == 0 {
        return;
    }
    event.ct_info = (nfct & NFCT_INFOMASK) as u8;
    event.ct_status = read(ct, offset!(ct_status)).unwrap_or(0);
    read_tuple(
        ct + offset!(ct_tuple_original) as u64,
        &mut event.ct_original,
    );
    read_tuple(ct + offset!(ct_tuple_reply) as u64, &mut event.ct_reply);
    event.sections |= SECTION_CONNTRACK;
}

/// The tuple a packet's own headers spell, as conntrack would key it.
#[inline(always)]
pub fn tuple_of(h: &PacketHeaders) -> CtTuple {
    CtTuple {
        src: h.saddr,
        dst: h.daddr,
        sport: h.sport,
        dport: h.dport,
        l4_proto: h.l4_proto,
        family: h.family,
        _pad: [0; 2],
    }
}
