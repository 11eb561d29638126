//! What the in-kernel filter lets through: the target's addresses, published ports and
//! namespaces, in a one-entry array for small targets and hash maps for large ones.

// The other modules' items, for the documentation's links.
#[cfg(doc)]
#[allow(unused_imports)]
use crate::*;

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
