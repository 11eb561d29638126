//! Event layouts shared by the kernel programs (dockflow-ebpf) and the loader (dockflow-user).
//!
//! This crate is the single source of truth for everything that crosses the ring buffer: the
//! kernel writes these structs, userspace reads them back byte for byte. Keep every struct
//! `#[repr(C)]`, explicitly padded and a multiple of 8 bytes, so both sides agree without
//! guessing at alignment.
#![no_std]

/// Name of the ring buffer map every program writes into.
pub const EVENTS_MAP: &str = "EVENTS";
/// Every program and map of ours starts with this, so leftovers can be found by name.
pub const NAME_PREFIX: &str = "df_";

/// Where in the kernel an event was taken.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbePoint {
    /// tc ingress on an interface: the frame arrives at the interface from its wire.
    TcIngress = 1,
    /// tc egress on an interface: the frame is handed to the interface to send.
    TcEgress = 2,
}

impl ProbePoint {
    pub const ALL: [ProbePoint; 2] = [ProbePoint::TcIngress, ProbePoint::TcEgress];

    pub fn from_u8(raw: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| *p as u8 == raw)
    }
}

/// Address families as the kernel numbers them (AF_INET, AF_INET6).
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

/// One packet seen at one probe point.
///
/// Addresses are stored as they appear on the wire (network byte order); IPv4 uses the first
/// four bytes. Ports and lengths are converted to host order by the kernel program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketEvent {
    /// bpf_ktime_get_ns() at the probe.
    pub ts_ns: u64,
    /// Packet identity that survives the path (skb->head); 0 where the probe cannot read it.
    pub skb_id: u64,
    /// [`ProbePoint`] as u8.
    pub probe: u8,
    /// [`AF_INET`], [`AF_INET6`], or 0 for a frame that is not IP.
    pub family: u8,
    /// IP protocol number (17 UDP, 6 TCP, 1 ICMP, ...).
    pub l4_proto: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// Interface the probe is attached to.
    pub ifindex: u32,
    /// Inode of the network namespace of that interface; 0 where unknown.
    pub netns: u32,
    /// IP total length (IPv4) or payload length + 40 (IPv6).
    pub ip_len: u16,
    /// IPv4 identification; 0 for IPv6.
    pub ip_id: u16,
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte (FIN=0x01 ... CWR=0x80); 0 for other protocols.
    pub tcp_flags: u8,
    pub _pad: [u8; 7],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Size of a [`PacketEvent`] record in the ring buffer.
pub const PACKET_EVENT_SIZE: usize = core::mem::size_of::<PacketEvent>();

const _: () = assert!(PACKET_EVENT_SIZE % 8 == 0);

#[cfg(feature = "user")]
unsafe impl aya::Pod for PacketEvent {}
