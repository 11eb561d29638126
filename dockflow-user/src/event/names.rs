//! Names for the kernel's numbers (uapi values, stable across kernels).

use dockflow_common::{NFPROTO_IPV4, NFPROTO_IPV6, NfSlot};

pub fn hook_name(hook: u8) -> &'static str {
    match hook {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        _ => "unknown hook",
    }
}

pub fn family_name(pf: u8) -> &'static str {
    match pf {
        NFPROTO_IPV4 => "ipv4",
        NFPROTO_IPV6 => "ipv6",
        7 => "bridge",
        _ => "unknown family",
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

/// enum ip_conntrack_info: (state, direction).
pub fn ct_info(info: u8) -> (&'static str, &'static str) {
    match info {
        0 => ("established", "original"),
        1 => ("related", "original"),
        2 => ("new", "original"),
        3 => ("established", "reply"),
        4 => ("related", "reply"),
        7 => ("untracked", "original"),
        _ => ("unknown", "original"),
    }
}

/// enum ip_conntrack_status bits, lower-case without the IPS_ prefix.
const CT_STATUS_BITS: [&str; 16] = [
    "expected",
    "seen_reply",
    "assured",
    "confirmed",
    "src_nat",
    "dst_nat",
    "seq_adjust",
    "src_nat_done",
    "dst_nat_done",
    "dying",
    "fixed_timeout",
    "template",
    "nat_clash",
    "helper",
    "offload",
    "hw_offload",
];

pub fn ct_status(status: u64) -> Vec<&'static str> {
    CT_STATUS_BITS
        .iter()
        .enumerate()
        .filter(|(bit, _)| status & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect()
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
    fn names_conntrack_state_and_status() {
        assert_eq!(ct_info(2), ("new", "original"));
        assert_eq!(ct_info(3), ("established", "reply"));
        // seen_reply | confirmed | dst_nat | dst_nat_done
        assert_eq!(
            ct_status(0b1_0010_1010),
            vec!["seen_reply", "confirmed", "dst_nat", "dst_nat_done"]
        );
    }
}
