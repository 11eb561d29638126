//! The kernel's vocabulary as types: netfilter families and hooks, conntrack state, direction and
//! status, nftables verdicts. Path reasoning matches on these, never on text; each serialises
//! to the lower-case word the JSON output has always used.

use std::fmt;

use dockflow_common::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, NfSlot, ProbePoint,
};
use serde::{Deserialize, Serialize};

/// A netfilter protocol family as dockflow names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
    Bridge,
    Unknown,
}

impl Family {
    pub fn word(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Bridge => "bridge",
            Family::Unknown => "unknown family",
        }
    }

    /// The family an nftables table family evaluates for a packet of this IP version.
    pub fn of_nft_table(table_family: NftFamily, ipv4: bool) -> Self {
        match table_family {
            NftFamily::Ip => Family::Ipv4,
            NftFamily::Ip6 => Family::Ipv6,
            NftFamily::Inet if ipv4 => Family::Ipv4,
            NftFamily::Inet => Family::Ipv6,
            NftFamily::Bridge => Family::Bridge,
            _ => Family::Unknown,
        }
    }
}

/// An nftables table family, named as nft names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NftFamily {
    Ip,
    Ip6,
    Inet,
    Arp,
    Bridge,
    Netdev,
    Unknown,
}

impl NftFamily {
    /// From the number nf_tables messages carry (NFPROTO_*).
    pub fn from_number(family: u8) -> Self {
        match family {
            1 => NftFamily::Inet,
            2 => NftFamily::Ip,
            3 => NftFamily::Arp,
            5 => NftFamily::Netdev,
            7 => NftFamily::Bridge,
            10 => NftFamily::Ip6,
            _ => NftFamily::Unknown,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NftFamily::Ip => "ip",
            NftFamily::Ip6 => "ip6",
            NftFamily::Inet => "inet",
            NftFamily::Arp => "arp",
            NftFamily::Bridge => "bridge",
            NftFamily::Netdev => "netdev",
            NftFamily::Unknown => "unknown",
        }
    }
}

impl fmt::Display for NftFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A netfilter hook (enum nf_inet_hooks; the bridge family uses the same numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
    Unknown,
}

impl Hook {
    pub fn from_number(hook: u8) -> Self {
        match hook {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => Hook::Unknown,
        }
    }

    /// The hook a base chain is registered at, as nft lists it ("prerouting", ...).
    pub fn from_word(word: &str) -> Self {
        match word {
            "prerouting" => Hook::Prerouting,
            "input" => Hook::Input,
            "forward" => Hook::Forward,
            "output" => Hook::Output,
            "postrouting" => Hook::Postrouting,
            _ => Hook::Unknown,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
            Hook::Unknown => "unknown hook",
        }
    }
}

/// Display as the type's word.
macro_rules! display_word {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.word())
            }
        }
    )*};
}

display_word!(Family, Hook, CtState, CtDirection, TraceKind);

/// The conntrack state of a packet (the state half of enum ip_conntrack_info).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    New,
    Established,
    Related,
    Untracked,
    Unknown,
}

/// Which way along its connection a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CtDirection {
    Original,
    Reply,
}

impl CtState {
    pub fn word(self) -> &'static str {
        match self {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Untracked => "untracked",
            CtState::Unknown => "unknown",
        }
    }
}

impl CtDirection {
    pub fn word(self) -> &'static str {
        match self {
            CtDirection::Original => "original",
            CtDirection::Reply => "reply",
        }
    }
}

/// enum ip_conntrack_status bits (IPS_*); serialised as the list of the bits' names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtStatus(pub u64);

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

impl CtStatus {
    pub const SRC_NAT: u64 = 1 << 4;
    pub const DST_NAT: u64 = 1 << 5;

    pub fn src_nat(self) -> bool {
        self.0 & Self::SRC_NAT != 0
    }

    pub fn dst_nat(self) -> bool {
        self.0 & Self::DST_NAT != 0
    }

    /// Both NAT bindings (or null bindings) are made: the tuples are final.
    pub fn nat_done(self) -> bool {
        const NAT_DONE: u64 = 1 << 7 | 1 << 8;
        self.0 & NAT_DONE == NAT_DONE
    }

    pub fn names(self) -> Vec<&'static str> {
        CT_STATUS_BITS
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

impl Serialize for CtStatus {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

/// How an nftables trace message ended an evaluation step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceKind {
    /// A rule matched (or, with verdict continue, was evaluated).
    Rule,
    /// The end of a regular chain: back to the chain that jumped here.
    Return,
    /// The end of a base chain: its policy applies.
    Policy,
}

impl TraceKind {
    pub fn word(self) -> &'static str {
        match self {
            TraceKind::Rule => "rule",
            TraceKind::Return => "return",
            TraceKind::Policy => "policy",
        }
    }
}

/// An nftables verdict; serialised as nft words it ("accept", "jump DOCKER", ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Verdict {
    Accept,
    Drop,
    Continue,
    Return,
    Queue,
    Stolen,
    Jump(String),
    Goto(String),
    Other(String),
}

impl Verdict {
    pub fn is_final(&self) -> bool {
        matches!(self, Verdict::Accept | Verdict::Drop)
    }
}

impl From<String> for Verdict {
    fn from(words: String) -> Self {
        match words.as_str() {
            "accept" => Verdict::Accept,
            "drop" => Verdict::Drop,
            "continue" => Verdict::Continue,
            "return" => Verdict::Return,
            "queue" => Verdict::Queue,
            "stolen" => Verdict::Stolen,
            w => match w.split_once(' ') {
                Some(("jump", chain)) => Verdict::Jump(chain.to_string()),
                Some(("goto", chain)) => Verdict::Goto(chain.to_string()),
                _ => Verdict::Other(words),
            },
        }
    }
}

impl From<Verdict> for String {
    fn from(v: Verdict) -> Self {
        v.to_string()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accept => f.write_str("accept"),
            Verdict::Drop => f.write_str("drop"),
            Verdict::Continue => f.write_str("continue"),
            Verdict::Return => f.write_str("return"),
            Verdict::Queue => f.write_str("queue"),
            Verdict::Stolen => f.write_str("stolen"),
            Verdict::Jump(c) => write!(f, "jump {c}"),
            Verdict::Goto(c) => write!(f, "goto {c}"),
            Verdict::Other(w) => f.write_str(w),
        }
    }
}

/// An ARP frame's operation (ARP is L2 only: it never meets an IP hook).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArpOp {
    /// "who has <target>? tell <sender>", broadcast.
    Request,
    /// "<sender> is at <MAC>", unicast to who asked.
    Reply,
}

impl ArpOp {
    pub fn from_raw(op: u8) -> Option<Self> {
        match op {
            dockflow_common::ARP_REQUEST => Some(ArpOp::Request),
            dockflow_common::ARP_REPLY => Some(ArpOp::Reply),
            _ => None,
        }
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

/// An IP protocol number (IANA), named as Docker and nft name the common ones. Serialised as
/// the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IpProto(pub u8);

impl IpProto {
    pub const ICMP: IpProto = IpProto(IPPROTO_ICMP);
    pub const TCP: IpProto = IpProto(IPPROTO_TCP);
    pub const UDP: IpProto = IpProto(IPPROTO_UDP);
    pub const ICMPV6: IpProto = IpProto(IPPROTO_ICMPV6);
    pub const SCTP: IpProto = IpProto(IPPROTO_SCTP);

    /// From a name as Docker writes a published port's ("tcp", "udp", "sctp").
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "tcp" => Some(Self::TCP),
            "udp" => Some(Self::UDP),
            "sctp" => Some(Self::SCTP),
            _ => None,
        }
    }
}

impl fmt::Display for IpProto {
    /// "udp", "tcp", ..., or "proto N" for the others.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ICMP => f.write_str("icmp"),
            Self::TCP => f.write_str("tcp"),
            Self::UDP => f.write_str("udp"),
            Self::ICMPV6 => f.write_str("icmpv6"),
            Self::SCTP => f.write_str("sctp"),
            Self(p) => write!(f, "proto {p}"),
        }
    }
}

/// Why the kernel freed a packet (enum skb_drop_reason), named as the running kernel's BTF names
/// it, without the SKB_DROP_REASON_ prefix. The reasons path reasoning tells apart are variants;
/// every other keeps its kernel name. Serialised as that name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The kernel gave no reason (also every free on a kernel without reasons).
    NotSpecified,
    /// No socket wanted it (an ICMP echo reply nobody pings for, say).
    NoSocket,
    /// Addressed to another host's MAC: a flooded copy.
    OtherHost,
    /// A netfilter rule dropped it.
    NetfilterDrop,
    /// Any other reason, by its kernel name ("TCP_OLD_DATA").
    Named(String),
    /// A code this kernel's BTF does not name.
    Unnamed(u32),
}

impl DropReason {
    /// From the name BTF gives (prefix already stripped).
    pub fn from_name(name: &str) -> Self {
        match name {
            "NOT_SPECIFIED" => DropReason::NotSpecified,
            "NO_SOCKET" => DropReason::NoSocket,
            "OTHERHOST" => DropReason::OtherHost,
            "NETFILTER_DROP" => DropReason::NetfilterDrop,
            other => DropReason::Named(other.to_string()),
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::NotSpecified => f.write_str("NOT_SPECIFIED"),
            DropReason::NoSocket => f.write_str("NO_SOCKET"),
            DropReason::OtherHost => f.write_str("OTHERHOST"),
            DropReason::NetfilterDrop => f.write_str("NETFILTER_DROP"),
            DropReason::Named(name) => f.write_str(name),
            DropReason::Unnamed(code) => write!(f, "reason {code}"),
        }
    }
}

impl Serialize for DropReason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A netfilter program's place on its hook, in words ("before nat").
pub fn slot_word(slot: NfSlot) -> &'static str {
    match slot {
        NfSlot::First => "first",
        NfSlot::BeforeNat => "before nat",
        NfSlot::AfterNat => "after nat",
        NfSlot::Last => "last",
        NfSlot::Entry => "hook entry",
    }
}

/// [`slot_word`] for serde (the JSON has always carried the words).
pub(crate) fn serialize_slot<S: serde::Serializer>(
    slot: &NfSlot,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(slot_word(*slot))
}

/// A probe point in words: the display side of [`ProbePoint`], which the kernel programs share
/// as a bare number.
pub trait PointNames {
    /// The point as a hop line names it ("tc ingress", "bridge pass up", ...).
    fn name(self) -> &'static str;
    /// The attach point as dockflow's startup lines name it ("tracepoint net:netif_receive_skb").
    fn attach_point(self) -> &'static str;
}

impl PointNames for ProbePoint {
    fn name(self) -> &'static str {
        match self {
            ProbePoint::TcIngress => "tc ingress",
            ProbePoint::TcEgress => "tc egress",
            ProbePoint::Netfilter => "netfilter",
            ProbePoint::KfreeSkb => "drop",
            ProbePoint::NetifReceive => "receive",
            ProbePoint::NetDevQueue => "transmit",
            ProbePoint::BrHandleFrame => "bridge port in",
            ProbePoint::BrForward => "bridge forward",
            ProbePoint::BrPassFrameUp => "bridge pass up",
            ProbePoint::BrDevXmit => "bridge dev xmit",
            ProbePoint::NfHookSlow => "nf hook",
            ProbePoint::TunnelIngress => "vxlan in",
            ProbePoint::TunnelEgress => "vxlan out",
        }
    }

    fn attach_point(self) -> &'static str {
        match self {
            ProbePoint::TcIngress => "tc ingress",
            ProbePoint::TcEgress => "tc egress",
            ProbePoint::Netfilter => "netfilter hooks",
            ProbePoint::KfreeSkb => "tracepoint skb:kfree_skb",
            ProbePoint::NetifReceive => "tracepoint net:netif_receive_skb",
            ProbePoint::NetDevQueue => "tracepoint net:net_dev_queue",
            ProbePoint::BrHandleFrame => "kprobe br_handle_frame",
            ProbePoint::BrForward => "kprobe br_forward",
            ProbePoint::BrPassFrameUp => "kprobe br_pass_frame_up",
            ProbePoint::BrDevXmit => "kprobe br_dev_xmit",
            ProbePoint::NfHookSlow => "kprobe nf_hook_slow",
            ProbePoint::TunnelIngress => "tc ingress (VXLAN)",
            ProbePoint::TunnelEgress => "tc egress (VXLAN)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_round_trip_through_their_words() {
        for words in [
            "accept",
            "drop",
            "continue",
            "return",
            "jump DOCKER",
            "goto X",
        ] {
            assert_eq!(String::from(Verdict::from(words.to_string())), words);
        }
        assert_eq!(
            Verdict::from("jump DOCKER-USER".to_string()),
            Verdict::Jump("DOCKER-USER".into())
        );
    }

    #[test]
    fn status_bits_serialise_as_names() {
        // seen_reply | confirmed | dst_nat | dst_nat_done
        let status = CtStatus(0b1_0010_1010);
        assert_eq!(
            status.names(),
            vec!["seen_reply", "confirmed", "dst_nat", "dst_nat_done"]
        );
        assert!(status.dst_nat() && !status.src_nat());
    }

    #[test]
    fn drop_reasons_keep_their_kernel_names_in_text_and_json() {
        for name in [
            "NOT_SPECIFIED",
            "NO_SOCKET",
            "OTHERHOST",
            "NETFILTER_DROP",
            "TCP_OLD_DATA",
        ] {
            let reason = DropReason::from_name(name);
            assert_eq!(reason.to_string(), name);
            assert_eq!(
                serde_json::to_string(&reason).unwrap(),
                format!("\"{name}\"")
            );
        }
        assert_eq!(DropReason::from_name("NO_SOCKET"), DropReason::NoSocket);
        assert_eq!(DropReason::Unnamed(999).to_string(), "reason 999");
    }

    #[test]
    fn nft_families_read_back_as_nft_names_them() {
        for (number, name) in [
            (1, "inet"),
            (2, "ip"),
            (3, "arp"),
            (5, "netdev"),
            (7, "bridge"),
            (10, "ip6"),
        ] {
            let family = NftFamily::from_number(number);
            assert_eq!(family.to_string(), name);
            let json = serde_json::to_string(&family).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<NftFamily>(&json).unwrap(), family);
        }
        assert_eq!(NftFamily::from_number(99), NftFamily::Unknown);
        assert_eq!(Family::of_nft_table(NftFamily::Inet, false), Family::Ipv6);
    }
}
