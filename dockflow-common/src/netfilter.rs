//! The netfilter hooks as the programs sit on them: hook and family numbers, NAT priorities,
//! and the slots (first, around NAT, last) each hook gets a program at.

// The other modules' items, for the documentation's links.
#[cfg(doc)]
#[allow(unused_imports)]
use crate::*;

/// Where on a netfilter hook a program sits. Each slot is its own program (the kernel does not
/// tell a netfilter program its priority), attached at [`nf_slot_priority`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NfSlot {
    /// First priority a BPF link may take (NF_IP_PRI_FIRST itself is refused by the kernel).
    First = 0,
    /// Just before the NAT priority of the hook (dstnat -100 or srcnat 100).
    BeforeNat = 1,
    /// Just after the NAT priority.
    AfterNat = 2,
    /// Last priority a BPF link may take.
    Last = 3,
    /// The hook as a whole, seen at nf_hook_slow (no single priority).
    Entry = 4,
}

impl NfSlot {
    pub const ALL: [NfSlot; 5] = [
        NfSlot::First,
        NfSlot::BeforeNat,
        NfSlot::AfterNat,
        NfSlot::Last,
        NfSlot::Entry,
    ];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u8 == raw)
    }
}

/// Netfilter hook numbers (enum nf_inet_hooks).
pub const NF_INET_PRE_ROUTING: u8 = 0;
pub const NF_INET_LOCAL_IN: u8 = 1;
pub const NF_INET_FORWARD: u8 = 2;
pub const NF_INET_LOCAL_OUT: u8 = 3;
pub const NF_INET_POST_ROUTING: u8 = 4;

/// Protocol families as netfilter numbers them (NFPROTO_*).
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_BRIDGE: u8 = 7;
pub const NFPROTO_IPV6: u8 = 10;

/// NAT priorities (NF_IP_PRI_NAT_DST / NF_IP_PRI_NAT_SRC).
pub const NF_PRI_NAT_DST: i32 = -100;
pub const NF_PRI_NAT_SRC: i32 = 100;

/// The NAT priority of a hook, if NAT runs there: dstnat on PREROUTING and OUTPUT, srcnat on
/// INPUT and POSTROUTING. FORWARD has none.
pub const fn nat_priority(hook: u8) -> Option<i32> {
    match hook {
        NF_INET_PRE_ROUTING | NF_INET_LOCAL_OUT => Some(NF_PRI_NAT_DST),
        NF_INET_LOCAL_IN | NF_INET_POST_ROUTING => Some(NF_PRI_NAT_SRC),
        _ => None,
    }
}

/// The priority a slot is attached at on `hook`; None where the slot does not exist there.
pub const fn nf_slot_priority(slot: NfSlot, hook: u8) -> Option<i32> {
    match (slot, nat_priority(hook)) {
        (NfSlot::First, _) => Some(i32::MIN + 1),
        (NfSlot::Last, _) => Some(i32::MAX - 1),
        (NfSlot::BeforeNat, Some(nat)) => Some(nat - 1),
        (NfSlot::AfterNat, Some(nat)) => Some(nat + 1),
        _ => None,
    }
}
