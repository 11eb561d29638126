//! What dockflow knows about packets, as plain data: events at probe points, packets' headers,
//! netfilter hops, conntrack entries, nftables rule evaluations, and the host's topology. No
//! I/O: decoding, path reasoning, rendering and replay all build on this alone.

pub mod kinds;
pub mod topology;

use std::net::IpAddr;

pub use dockflow_common::{NfSlot, ProbePoint};
use serde::Serialize;

pub use self::kinds::{
    ArpOp, CtDirection, CtState, CtStatus, DropReason, Family, Hook, IpProto, NftFamily,
    PointNames, TraceKind, Verdict, priority_words, slot_word,
};

/// A decoded event: one packet at one probe point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub ts_ns: u64,
    /// Packet identity (skb->head); absent where the probe cannot see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skb_id: Option<u64>,
    pub probe: ProbePoint,
    pub ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<Packet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netfilter: Option<NetfilterHop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack: Option<Conntrack>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop: Option<Drop>,
    /// At a tunnel point: the VXLAN packet the frame travels in between nodes (boxed: nearly
    /// every event has none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outer: Option<Box<Outer>>,
    /// The packet's first bytes here (--snaplen); for capture files, not for the JSON stream.
    #[serde(skip)]
    pub capture: Option<Capture>,
    /// The kernel showed this packet as its connection's sample past --per-connection (or it
    /// is the drop of a packet held back until then).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sample: bool,
}

/// The first bytes of a packet as a probe saw them, Ethernet header first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    pub bytes: Vec<u8>,
    /// The packet's whole length from its first byte.
    pub wire_len: u32,
    /// The Ethernet header was written by dockflow (the skb had none at this point).
    pub synthetic_ethernet: bool,
}

/// L3/L4 headers as the probe saw them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: IpProto,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    pub ttl: u8,
    pub ip_id: u16,
    pub len: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<u8>,
    /// Set for an ARP frame: `src` and `dst` are its sender and target addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp: Option<ArpOp>,
}

impl Packet {
    pub fn protocol_name(&self) -> String {
        if self.arp.is_some() {
            return "arp".into();
        }
        self.protocol.to_string()
    }
}

/// One nftables rule evaluation, from the kernel's trace messages (what `nft monitor trace`
/// prints).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RuleTrace {
    /// When dockflow received it (CLOCK_MONOTONIC, like probe events).
    pub ts_ns: u64,
    pub trace_id: u32,
    /// The table's family: ip, ip6, inet, bridge, ...
    pub family: NftFamily,
    pub table: String,
    pub chain: String,
    /// The hook of the base chain this evaluation started from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<Hook>,
    pub kind: TraceKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    /// The rule's text as nft lists it, counters left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<Packet>,
}

impl RuleTrace {
    /// The netfilter family this evaluation ran in ("inet" tables run in both IP families).
    pub fn netfilter_family(&self, packet: &Packet) -> Family {
        Family::of_nft_table(self.family, packet.src.is_ipv4())
    }
}

/// "10.0.0.1:80", "[fd00::1]:80", or the bare address for port-less protocols.
pub fn endpoint(addr: IpAddr, port: Option<u16>) -> String {
    match (addr, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// Where on the netfilter hooks the packet was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NetfilterHop {
    pub family: Family,
    pub hook: Hook,
    pub hook_number: u8,
    /// Absent for nf_hook_slow events, which see the whole hook rather than one priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(serialize_with = "kinds::serialize_slot")]
    pub slot: NfSlot,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_ifindex: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_ifindex: Option<u32>,
    /// The hook's continuation (state->okfn), e.g. br_nf_pre_routing_finish or ip_rcv_finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub okfn: Option<std::sync::Arc<str>>,
    /// True when br_netfilter runs this IP hook for a frame the bridge is still handling.
    pub from_bridge: bool,
}

/// The packet's conntrack entry as seen at this point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conntrack {
    pub state: CtState,
    pub direction: CtDirection,
    pub status: CtStatus,
    pub original: Tuple,
    pub reply: Tuple,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub protocol: IpProto,
}

/// The VXLAN packet an overlay network's frame travels in between nodes, as a node's own
/// interface sent or received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Outer {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// The VXLAN network identifier: which overlay network (Docker's start at 4096).
    pub vni: u32,
}

/// "10.0.0.1:40012 -> 10.0.0.2:4789 VNI 4097".
impl std::fmt::Display for Outer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} VNI {}",
            endpoint(self.src, Some(self.sport)),
            endpoint(self.dst, Some(self.dport)),
            self.vni
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Drop {
    pub reason: DropReason,
    pub code: u32,
}

/// Which packets nftables traces (--trace-rules). Tracing costs the kernel a netlink message
/// per rule evaluated per packet marked, for every packet of a busy flow traced whole; its
/// first packets tell the rules that decide it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "snake_case")]
pub enum TraceRules {
    /// Every packet of the target: each packet's own rules, at the full cost.
    All,
    /// Per connection and direction, the first packet, each new TCP flag combination (SYN,
    /// FIN, RST), and one sample a second; packets of other protocols always. A later packet
    /// says whose rules it shares ("rules as packet N").
    #[default]
    First,
    /// None: no nftables table, no rule names.
    None,
}
