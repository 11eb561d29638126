//! Names for the kernel's numbers (uapi values, stable across kernels).

use dockflow_common::{NFPROTO_IPV4, NFPROTO_IPV6, NfSlot};

use super::kinds::{CtDirection, CtState, Family};

pub fn family(pf: u8) -> Family {
    match pf {
        NFPROTO_IPV4 => Family::Ipv4,
        NFPROTO_IPV6 => Family::Ipv6,
        7 => Family::Bridge,
        _ => Family::Unknown,
    }
}

pub fn slot_name(slot: NfSlot) -> &'static str {
    match slot {
        NfSlot::First => "first",
        NfSlot::BeforeNat => "before nat",
        NfSlot::AfterNat => "after nat",
        NfSlot::Last => "last",
        NfSlot::Entry => "hook entry",
    }
}

/// A netfilter priority as dockflow's slots show it: the first and last a BPF link may take
/// are "first" and "last".
pub fn priority_words(p: i32) -> String {
    match p {
        p if p == i32::MIN + 1 => "first".into(),
        p if p == i32::MAX - 1 => "last".into(),
        p => p.to_string(),
    }
}

/// enum ip_conntrack_info: (state, direction).
pub fn ct_info(info: u8) -> (CtState, CtDirection) {
    use CtDirection::*;
    match info {
        0 => (CtState::Established, Original),
        1 => (CtState::Related, Original),
        2 => (CtState::New, Original),
        3 => (CtState::Established, Reply),
        4 => (CtState::Related, Reply),
        7 => (CtState::Untracked, Original),
        _ => (CtState::Unknown, Original),
    }
}

pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        p => format!("proto {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_conntrack_state_and_direction() {
        assert_eq!(ct_info(2), (CtState::New, CtDirection::Original));
        assert_eq!(ct_info(3), (CtState::Established, CtDirection::Reply));
    }
}
