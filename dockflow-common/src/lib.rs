//! Event layouts shared by the kernel programs (dockflow-ebpf) and the loader (dockflow-user).
//!
//! This crate is the single source of truth for everything that crosses the kernel/user
//! boundary: the kernel writes these structs, userspace reads them back byte for byte. Keep
//! every struct `#[repr(C)]`, explicitly padded and a multiple of 8 bytes, so both sides agree
//! without guessing at alignment.
#![no_std]

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

impl CtTuple {
    /// Turns the tuple around: the connection seen from its other end (in place, so the kernel
    /// programs need no second copy on their small stack).
    pub fn invert(&mut self) {
        core::mem::swap(&mut self.src, &mut self.dst);
        core::mem::swap(&mut self.sport, &mut self.dport);
    }
}

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

/// Where in the kernel an event was taken.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize),
    serde(rename_all = "snake_case")
)]
pub enum ProbePoint {
    /// tc ingress on an interface: the frame arrives at the interface from its wire.
    TcIngress = 1,
    /// tc egress on an interface: the frame is handed to the interface to send.
    TcEgress = 2,
    /// A BPF netfilter program at one (family, hook, priority).
    Netfilter = 3,
    /// Tracepoint skb:kfree_skb: the packet was dropped, with a reason.
    KfreeSkb = 4,
    /// Tracepoint net:netif_receive_skb: a device hands the packet to the stack (or bridge).
    NetifReceive = 5,
    /// Tracepoint net:net_dev_queue: the packet is queued for transmission on a device.
    NetDevQueue = 6,
    /// kprobe br_handle_frame: a frame enters a bridge port.
    BrHandleFrame = 7,
    /// br_forward: the bridge forwards (or floods) a frame to a port.
    BrForward = 8,
    /// br_pass_frame_up: the bridge passes a frame up to the host's IP stack.
    BrPassFrameUp = 9,
    /// br_dev_xmit: the host's IP stack sends into the bridge device.
    BrDevXmit = 10,
    /// nf_hook_slow: a netfilter hook of any family runs (bridge family included).
    NfHookSlow = 11,
}

/// Slots for [`LOST_MAP`]: one per probe point, index = the point's value.
pub const PROBE_POINT_SLOTS: u32 = 16;

impl ProbePoint {
    pub const ALL: [ProbePoint; 11] = [
        ProbePoint::TcIngress,
        ProbePoint::TcEgress,
        ProbePoint::Netfilter,
        ProbePoint::KfreeSkb,
        ProbePoint::NetifReceive,
        ProbePoint::NetDevQueue,
        ProbePoint::BrHandleFrame,
        ProbePoint::BrForward,
        ProbePoint::BrPassFrameUp,
        ProbePoint::BrDevXmit,
        ProbePoint::NfHookSlow,
    ];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u8 == raw)
    }

    /// The point as a hop line names it ("tc ingress", "bridge pass up", ...).
    pub fn name(self) -> &'static str {
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
        }
    }

    /// The attach point as dockflow's startup lines name it ("tracepoint net:netif_receive_skb").
    pub fn attach_point(self) -> &'static str {
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
        }
    }
}

/// Why the in-kernel filter kept or skipped a frame at tc, as --debug-kernel reports it.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterReason {
    /// Bare interfaces: everything on them is wanted.
    NoFilter = 0,
    /// Not an IP or ARP frame the program could read.
    NotIp = 1,
    /// To or from one of the target's addresses.
    Address = 2,
    /// To or from one of its published ports.
    Port = 3,
    /// A learned reply tuple of one of its NATed connections.
    ReplyTuple = 4,
    /// None of these: skipped.
    NotTarget = 5,
    /// The target's, but of a connection the filter expression leaves out: skipped.
    LeftOut = 6,
}

impl FilterReason {
    pub const ALL: [FilterReason; 7] = [
        FilterReason::NoFilter,
        FilterReason::NotIp,
        FilterReason::Address,
        FilterReason::Port,
        FilterReason::ReplyTuple,
        FilterReason::NotTarget,
        FilterReason::LeftOut,
    ];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| *r as u8 == raw)
    }

    pub fn words(self) -> &'static str {
        match self {
            FilterReason::NoFilter => "kept: no filter (bare interfaces)",
            FilterReason::NotIp => "skipped: not an IP or ARP frame it can read",
            FilterReason::Address => "kept: to or from a target address",
            FilterReason::Port => "kept: to or from a published port",
            FilterReason::ReplyTuple => "kept: a learned reply tuple of a NATed connection",
            FilterReason::NotTarget => {
                "skipped: neither the target's addresses, nor its ports, nor a learned reply"
            }
            FilterReason::LeftOut => {
                "skipped: its connection is one the filter expression leaves out"
            }
        }
    }
}

/// Where on a netfilter hook a program sits. Each slot is its own program (the kernel does not
/// tell a netfilter program its priority), attached at [`NF_SLOT_PRIORITIES`].
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

/// IP protocol numbers (IANA), one definition for the kernel programs and userspace.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// Address families as the kernel numbers them (AF_INET, AF_INET6).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
/// [`PacketHeaders::family`] of an ARP frame (Ethernet, IPv4): not an AF_* value, as ARP has
/// none.
pub const FAMILY_ARP: u8 = 0xa8;
/// ARP operations ([`PacketHeaders::arp_op`]).
pub const ARP_REQUEST: u8 = 1;
pub const ARP_REPLY: u8 = 2;

/// Which parts of a [`PacketEvent`] are filled in (retis-style sections: a probe that cannot see
/// something leaves its section out instead of writing zeros that look like data).
pub const SECTION_PACKET: u8 = 1;
pub const SECTION_NETFILTER: u8 = 2;
pub const SECTION_CONNTRACK: u8 = 4;
pub const SECTION_DROP: u8 = 8;
pub const SECTION_SKB: u8 = 16;
/// The record carries the packet's first bytes after the event ([`PacketEvent::snap_len`]).
pub const SECTION_BYTES: u8 = 32;
/// Those bytes start with an Ethernet header the program wrote (zero MACs, the IP version's
/// ethertype): the skb had no MAC header (a packet the host itself sent, say).
pub const SECTION_SYNTHETIC_ETHERNET: u8 = 64;
/// The packet is past its connection's --per-connection limit and shown as its sample (one a
/// second), or it is a drop of a packet held back until then.
pub const SECTION_SAMPLE: u8 = 128;

/// Name of the read-only global holding how many bytes of each packet to capture (--snaplen).
pub const SNAPLEN_GLOBAL: &str = "SNAPLEN";
/// The most bytes a record carries.
pub const MAX_SNAPLEN: u32 = 256;

/// The byte counts a record may reserve after its [`PacketEvent`] (see [`snap_reserve`]).
pub const SNAP_RESERVES: [usize; 4] = [0, 64, 128, 256];

/// The bytes reserved after each [`PacketEvent`] for a snaplen: the programs reserve one of a
/// few fixed record sizes (the ring buffer wants a constant size), the smallest that fits.
pub const fn snap_reserve(snaplen: u32) -> usize {
    match snaplen {
        0 => 0,
        1..=64 => 64,
        65..=128 => 128,
        _ => 256,
    }
}

/// One direction of a conntrack entry (struct nf_conntrack_tuple, flattened). Also the key of
/// [`REPLY_TUPLES_MAP`], where `family` is set; events leave it 0.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtTuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub l4_proto: u8,
    /// [`AF_INET`] or [`AF_INET6`] in a [`REPLY_TUPLES_MAP`] key; 0 in events.
    pub family: u8,
    pub _pad: [u8; 2],
}

/// The L3/L4 headers as a probe saw them (SECTION_PACKET). Kernel programs parse these first
/// and decide from them (and, failing that, from the conntrack entry) whether the packet is
/// the target's, before they reserve an event or read anything else.
///
/// Addresses are stored as they appear on the wire (network byte order); IPv4 uses the first
/// four bytes. Ports and lengths are converted to host order by the kernel program. An ARP
/// frame ([`FAMILY_ARP`]) has its sender and target IPv4 addresses in `saddr` and `daddr`, its
/// operation in `arp_op`, and its length in `ip_len`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketHeaders {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// IP total length (IPv4) or payload length + 40 (IPv6).
    pub ip_len: u16,
    /// IPv4 identification; 0 for IPv6.
    pub ip_id: u16,
    pub sport: u16,
    pub dport: u16,
    /// [`AF_INET`], [`AF_INET6`], or 0 for a frame that is not IP.
    pub family: u8,
    /// IP protocol number (17 UDP, 6 TCP, 1 ICMP, ...).
    pub l4_proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// TCP flags byte (FIN=0x01 ... CWR=0x80); 0 for other protocols.
    pub tcp_flags: u8,
    /// [`ARP_REQUEST`] or [`ARP_REPLY`] for an ARP frame; 0 otherwise.
    pub arp_op: u8,
    pub _pad: [u8; 3],
}

/// One packet seen at one probe point: a fixed head, then one struct per section.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketEvent {
    /// bpf_ktime_get_ns() at the probe.
    pub ts_ns: u64,
    /// Packet identity that survives the path: skb->head (SECTION_SKB).
    pub skb_id: u64,
    /// Netfilter: the hook's continuation function (state->okfn), resolved to a symbol in
    /// userspace; it tells a hook run by br_netfilter from one of the routed path.
    pub nf_okfn: u64,
    /// Conntrack status bits (enum ip_conntrack_status).
    pub ct_status: u64,
    /// [`ProbePoint`] as u8.
    pub probe: u8,
    /// SECTION_* bits.
    pub sections: u8,
    /// Netfilter hook (NF_INET_*).
    pub nf_hook: u8,
    /// Netfilter family (NFPROTO_*).
    pub nf_pf: u8,
    /// [`NfSlot`] as u8.
    pub nf_slot: u8,
    /// enum ip_conntrack_info (0 ESTABLISHED, 1 RELATED, 2 NEW, 3 ESTABLISHED_REPLY, ...).
    pub ct_info: u8,
    /// Bytes of the packet captured after this event in the record (SECTION_BYTES).
    pub snap_len: u16,
    /// Interface the probe is attached to (tc) or skb->dev (others).
    pub ifindex: u32,
    /// Inode of the network namespace of skb->dev; 0 where unknown.
    pub netns: u32,
    /// skb:kfree_skb drop reason (enum skb_drop_reason).
    pub drop_reason: u32,
    /// Netfilter: state->in and state->out ifindex (0 when none).
    pub nf_in_ifindex: u32,
    pub nf_out_ifindex: u32,
    /// The packet's length from where the captured bytes start (its MAC header, or the
    /// synthesized one), as it was on the wire (SECTION_BYTES).
    pub wire_len: u32,
    pub packet: PacketHeaders,
    pub ct_original: CtTuple,
    pub ct_reply: CtTuple,
}

/// Size of a [`PacketEvent`] record in the ring buffer.
pub const PACKET_EVENT_SIZE: usize = core::mem::size_of::<PacketEvent>();

const _: () = assert!(PACKET_EVENT_SIZE.is_multiple_of(8));
// The kernel's filter compares addresses as two u64s.
const _: () = assert!(core::mem::size_of::<PacketHeaders>().is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(PacketEvent, packet) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(PacketEvent, ct_original) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(PacketEvent, ct_reply) % 8 == 0);
// Compared as 8-byte words by the kernel programs.
const _: () = assert!(core::mem::size_of::<CtTuple>() == 40);

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
    /// Offset of tuplehash[0].tuple in struct nf_conn.
    pub ct_tuple_original: u32,
    /// Offset of tuplehash[1].tuple in struct nf_conn.
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

pub const MAX_TARGET_ADDRESSES: usize = 8;
pub const MAX_TARGET_PORTS: usize = 16;
/// The host's and up to seven targets' (the kernel side compares them one by one, unrolled).
pub const MAX_TARGET_NETNS: usize = 8;
/// Sets larger than [`TargetSet`]'s arrays (a Docker network of many containers) go into these
/// hash maps instead, whole: the kernel looks there when a count in [`TargetSet`] is past its
/// array's size. Keys: a 16-byte address, a [`port_key`], a namespace inode; values unused.
pub const TARGET_ADDRESSES_MAP: &str = "TARGET_ADDRESSES";
pub const TARGET_PORTS_MAP: &str = "TARGET_PORTS";
pub const TARGET_NETNS_MAP: &str = "TARGET_NETNS";
/// Entries of each of those maps at most.
pub const MAX_LARGE_TARGET: u32 = 4096;

/// What the in-kernel filter lets through: packets from or to these addresses or ports.
///
/// A one-entry array rather than hash maps: the verifier inlines array lookups, and comparing
/// a handful of values costs less than hashing, on a path every packet of the host takes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetSet {
    /// IPv4 in the first four bytes, the rest zero.
    pub addresses: [[u8; 16]; MAX_TARGET_ADDRESSES],
    /// [`port_key`]s.
    pub ports: [u32; MAX_TARGET_PORTS],
    pub n_addresses: u32,
    pub n_ports: u32,
    /// Inodes of the network namespaces whose device hops (netif_receive_skb, net_dev_queue)
    /// are looked at: the host's and the target's. Other namespaces' devices (other
    /// containers', a client's) are skipped before any header is read. None: all.
    pub netns: [u32; MAX_TARGET_NETNS],
    pub n_netns: u32,
    pub _pad: u32,
}

impl Default for TargetSet {
    fn default() -> Self {
        Self {
            addresses: [[0; 16]; MAX_TARGET_ADDRESSES],
            ports: [0; MAX_TARGET_PORTS],
            n_addresses: 0,
            n_ports: 0,
            netns: [0; MAX_TARGET_NETNS],
            n_netns: 0,
            _pad: 0,
        }
    }
}

/// A [`TargetSet`] port entry: protocol in the high half, port in the low half.
pub const fn port_key(l4_proto: u8, port: u16) -> u32 {
    ((l4_proto as u32) << 16) | port as u32
}

#[cfg(feature = "aya")]
mod pod {
    // SAFETY (each): #[repr(C)] structs of integers and integer arrays, Copy, with explicit
    // padding fields where alignment needs them: every bit pattern is a valid value, and the
    // kernel programs read and write the same layout.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PacketEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::TargetSet {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CtTuple {}
}
