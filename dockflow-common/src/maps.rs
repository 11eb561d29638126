//! What userspace hands the programs besides events: map names (the programs declare maps
//! under these names, userspace opens them by them), read-only globals set before load, and
//! the small structs those hold: runtime settings, per-connection counts, kernel offsets.

// The other modules' items, for the documentation's links.
#[cfg(doc)]
#[allow(unused_imports)]
use crate::*;

/// Name of the ring buffer map every program writes into.
pub const EVENTS_MAP: &str = "EVENTS";
/// Per-CPU counters of failed ring-buffer reservations, indexed by [`ProbePoint`].
pub const LOST_MAP: &str = "LOST";
/// The target's addresses and published ports ([`TargetSet`], one entry).
pub const TARGETS_MAP: &str = "TARGETS";
/// Switches userspace flips after attaching ([`Settings`], one entry).
pub const SETTINGS_MAP: &str = "SETTINGS";
/// Reply tuples of the target's NATed connections ([`CtTuple`] -> [`TUPLE_LEARNED`]), learned
/// by the kernel.
pub const REPLY_TUPLES_MAP: &str = "REPLY_TUPLES";
/// How many connections [`REPLY_TUPLES_MAP`] remembers at most (least recently used go first).
pub const MAX_REPLY_TUPLES: u32 = 4096;

/// Decisions that depend on what attached, so they cannot be load-time constants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// 1 when BPF netfilter links cover the IPv4/IPv6 hooks: nf_hook_slow then only reports the
    /// bridge family, instead of repeating every IP hook.
    pub nf_hook_slow_bridge_only: u32,
    /// Packets of each connection shown in full (--per-connection); 0: all.
    pub per_connection: u32,
    /// Drop reasons (enum skb_drop_reason) that are no packet's own drop: the kernel's unnamed
    /// frees (clones among them) and flooded copies for another host. A free with another
    /// reason is shown even for a packet past --per-connection. Unused slots hold `u32::MAX`.
    pub plain_frees: [u32; PLAIN_FREES],
}

/// Slots in [`Settings::plain_frees`].
pub const PLAIN_FREES: usize = 3;

/// One switch per tuple map ([`TUPLE_FLAG_REPLY`], [`TUPLE_FLAG_HIDDEN`]): 1 while the map
/// may hold entries. The kernel sets it when it stores a tuple, userspace clears it when the
/// last connection ended; programs look tuples up only while it is set. Kept apart from
/// [`Settings`] so that neither side overwrites a switch the other just set.
pub const TUPLE_FLAGS_MAP: &str = "TUPLE_FLAGS";
pub const TUPLE_FLAG_REPLY: u32 = 0;
pub const TUPLE_FLAG_HIDDEN: u32 = 1;
/// The value of a [`REPLY_TUPLES_MAP`] entry (both tuple maps hold u64 values, so that
/// userspace handles them alike).
pub const TUPLE_LEARNED: u64 = 1;

/// Per conntrack entry (its address), how many of its packets the kernel has seen
/// ([`ConnectionPackets`]), for --per-connection.
pub const CONNECTION_PACKETS_MAP: &str = "CONN_PACKETS";
/// The tuples of connections past their --per-connection limit, both directions and their
/// reverses ([`CtTuple`] with `family` set -> the connection's key in
/// [`CONNECTION_PACKETS_MAP`]), so that every hop, whatever NAT made of the headers and whether
/// conntrack has run yet, finds the connection's count from the headers alone.
pub const HIDDEN_TUPLES_MAP: &str = "HIDDEN_TUPLES";
/// The filter expression's verdicts on connections, by every form their packets take
/// ([`CtTuple`] with `family` set -> [`VERDICT_MATCHES`] or [`VERDICT_LEFT_OUT`]). Userspace
/// decides and writes; programs drop events of packets whose headers spell a left-out form.
pub const EXPRESSION_VERDICTS_MAP: &str = "EXPRESSION_VERDICTS";
pub const MAX_EXPRESSION_VERDICTS: u32 = 16384;
pub const VERDICT_MATCHES: u8 = 1;
pub const VERDICT_LEFT_OUT: u8 = 2;
/// Per-CPU count of the events those verdicts dropped in the kernel.
pub const EXPRESSION_LEFT_OUT_MAP: &str = "EXPRESSION_LEFT_OUT";
/// Name of the read-only global that turns the verdict lookups on (1) or off (0).
pub const EXPRESSION_GLOBAL: &str = "EXPRESSION_ON";
/// Name of the read-only global of the IP protocols the expression may match: bit `p % 64` of
/// word `p / 64` for IPv4, of word `4 + p / 64` for IPv6 (`[u64; 8]`).
pub const EXPRESSION_PROTOCOLS_GLOBAL: &str = "EXPRESSION_PROTOCOLS";
/// Per-CPU counts of what --per-connection held back: [`HIDDEN_EVENTS`] and [`HIDDEN_PACKETS`].
pub const HIDDEN_MAP: &str = "HIDDEN";
pub const HIDDEN_EVENTS: u32 = 0;
pub const HIDDEN_PACKETS: u32 = 1;
/// Connections --per-connection keeps count of at most (least recently seen go first).
pub const MAX_COUNTED_CONNECTIONS: u32 = 65_536;

/// One connection's packet count (the value of [`CONNECTION_PACKETS_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionPackets {
    /// The packet last counted (its IPv4 id, or its skb->head where there is no id): another
    /// one is another packet.
    pub last_packet: u64,
    /// The first 8 bytes of the connection's original source address and its two ports: a
    /// freed entry's address is soon reused by another connection, whose count starts afresh.
    pub original_source: u64,
    pub original_ports: u32,
    pub packets: u32,
    /// When the last sample past the limit was shown (or the limit was passed).
    pub sampled_at_ns: u64,
    /// What was decided for `last_packet`: [`PACKET_SHOWN`], [`PACKET_SAMPLED`] or
    /// [`PACKET_HELD`], so every later hop of the same packet takes the same decision.
    pub last_decision: u32,
    pub _pad: u32,
}

/// A packet within its connection's first --per-connection packets: shown.
pub const PACKET_SHOWN: u32 = 0;
/// A packet past the limit shown as its connection's sample (its events carry
/// [`SECTION_SAMPLE`]).
pub const PACKET_SAMPLED: u32 = 1;
/// A packet past the limit, only counted.
pub const PACKET_HELD: u32 = 2;
/// Past its --per-connection limit, a connection still shows one packet this often.
pub const SAMPLE_INTERVAL_NS: u64 = 1_000_000_000;
/// Name of the read-only global holding [`KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the read-only global that turns the in-kernel filter on (1) or off (0).
pub const FILTER_GLOBAL: &str = "FILTER";
/// Name of the read-only global that makes every program return at once (1; the benchmark's
/// floor) or work (0).
pub const EMPTY_GLOBAL: &str = "EMPTY";
/// Every program of ours starts with this, so leftovers can be found by name.
pub const NAME_PREFIX: &str = "df_";

/// Name of the read-only global holding how many bytes of each packet to capture (--snaplen).
pub const SNAPLEN_GLOBAL: &str = "SNAPLEN";

/// Name of the read-only global holding the UDP port VXLAN packets between nodes go to (a
/// swarm's data path port).
pub const VXLAN_PORT_GLOBAL: &str = "VXLAN_PORT";
/// The port VXLAN uses unless told otherwise (IANA; Docker's default data path port).
pub const VXLAN_PORT: u16 = 4789;

/// Kernel struct offsets the programs need, resolved from BTF in userspace at start and handed
/// over as a read-only global (Rust eBPF has no CO-RE).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_dev: u32,
    pub skb_nfct: u32,
    pub dev_ifindex: u32,
    pub dev_nd_net: u32,
    pub net_ns_inum: u32,
    pub state_hook: u32,
    pub state_pf: u32,
    pub state_in: u32,
    pub state_out: u32,
    pub state_okfn: u32,
    /// 1 when the nf_conn offsets below are known (conntrack present with BTF).
    pub has_conntrack: u32,
    pub ct_status: u32,
    /// Offset of `tuplehash[0].tuple` in struct nf_conn.
    pub ct_tuple_original: u32,
    /// Offset of `tuplehash[1].tuple` in struct nf_conn.
    pub ct_tuple_reply: u32,
    pub tuple_src_addr: u32,
    pub tuple_src_port: u32,
    pub tuple_dst_addr: u32,
    pub tuple_dst_port: u32,
    pub tuple_dst_protonum: u32,
    /// 1 when skb:kfree_skb passes a drop reason (its third argument, kernel >= 5.17).
    pub kfree_skb_has_reason: u32,
    /// sk_buff: data (pointer), len, mac_header: where the packet's bytes start, for capture.
    pub skb_data: u32,
    pub skb_len: u32,
    pub skb_mac_header: u32,
}
