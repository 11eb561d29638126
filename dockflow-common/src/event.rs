//! One packet seen at one probe point, as the kernel writes it into the ring buffer and
//! userspace reads it back: the fixed head, its sections (headers, netfilter, conntrack, drop,
//! skb, bytes) and the kernel numbers they carry (protocols, address families, ARP).

// The other modules' items, for the documentation's links.
#[cfg(doc)]
#[allow(unused_imports)]
use crate::*;

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
/// [`REPLY_TUPLES_MAP`], where `family` is set; events leave it 0, but for a tunnel event's
/// outer headers (see [`PacketEvent::ct_original`]).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtTuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub l4_proto: u8,
    /// [`AF_INET`] or [`AF_INET6`] in a [`REPLY_TUPLES_MAP`] key and in a tunnel event's
    /// outer headers; 0 in conntrack sections.
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
    /// Conntrack status bits (enum ip_conntrack_status); at a tunnel point, the VXLAN
    /// network identifier (VNI).
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
    /// At a tunnel point ([`ProbePoint::is_tunnel`]) the headers of the frame inside the
    /// VXLAN packet: the filter, the per-connection counts and the correlation read them as at
    /// any other hop.
    pub packet: PacketHeaders,
    /// At a tunnel point, where tc reads no conntrack entry, the VXLAN packet's own (outer)
    /// addresses and UDP ports, with `family` set ([`PacketEvent::ct_status`] holds the VNI).
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

impl CtTuple {
    /// Turns the tuple around: the connection seen from its other end (in place, so the kernel
    /// programs need no second copy on their small stack).
    pub fn invert(&mut self) {
        core::mem::swap(&mut self.src, &mut self.dst);
        core::mem::swap(&mut self.sport, &mut self.dport);
    }
}
