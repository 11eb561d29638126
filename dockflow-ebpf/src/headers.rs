//! L3/L4 header parsing shared by every probe family: each family only says how to read bytes
//! at an offset from the start of the IP header. Headers are read in as few whole chunks as
//! possible, not field by field: every read is a helper call, and this runs for every packet on
//! the host before the filter can say no.

use core::mem::MaybeUninit;

use dockflow_common::{AF_INET, AF_INET6, FAMILY_ARP, IPPROTO_TCP, IPPROTO_UDP, PacketHeaders};

use crate::kmem::zeroed;

/// Reads bytes at `offset` from the start of the network header.
pub trait NetworkHeaderReader {
    /// Fills `out` in place (the BPF stack has no room for copies); bytes past the end of the
    /// packet read as zero. False when nothing can be read at `offset`.
    fn read_bytes(&self, offset: usize, out: &mut [u8]) -> bool;
}

/// An Ethernet header (without VLAN tag).
pub const ETH_HLEN: usize = 14;
/// skb->mac_header and skb->network_header are "unset" at this value (~0U as u16).
pub const HEADER_UNSET: u16 = 0xffff;
/// An IPv4 header without options; the IPv6 header.
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// TCP ports through the flags byte.
const TCP_PREFIX: usize = 14;

/// Bytes read from the packet into an 8-aligned stack buffer, so that copying addresses out of
/// it compiles to word moves rather than byte loops.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Chunk<const N: usize>([u8; N]);

/// Fills `chunk` without zeroing it first: BPF has no inline memset, zeroing is a byte loop.
/// Never left uninitialised: `read_bytes` fills all of it or fails, and both helpers behind it
/// (skb_load_bytes, probe_read_kernel) zero the buffer when they fail.
#[inline(always)]
fn read_into<R: NetworkHeaderReader, const N: usize>(
    reader: &R,
    offset: usize,
    chunk: &mut MaybeUninit<Chunk<N>>,
) -> bool {
    // SAFETY: `chunk` is N bytes of this stack frame; bytes may be uninitialised for writing, and
    // the reader fills them (unread bytes read as zero) before anyone reads them.
    let bytes = unsafe { core::slice::from_raw_parts_mut(chunk.as_mut_ptr() as *mut u8, N) };
    reader.read_bytes(offset, bytes)
}

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Parses the IPv4 or IPv6 header (and the ports), or an ARP frame's addresses, into `slot`,
/// zeroed first; None for anything else.
#[inline(always)]
pub fn parse_ip<'a, R: NetworkHeaderReader>(
    reader: &R,
    slot: &'a mut MaybeUninit<PacketHeaders>,
) -> Option<&'a PacketHeaders> {
    let headers = zeroed(slot);
    if fill_ip(reader, headers) {
        Some(headers)
    } else {
        None
    }
}

#[inline(always)]
fn fill_ip<R: NetworkHeaderReader>(reader: &R, headers: &mut PacketHeaders) -> bool {
    // The first 40 bytes in one read: an IPv4 header without options and the start of its L4
    // header, or an IPv6 header. One path for every packet: the verifier of older kernels
    // gives up on programs whose branches multiply.
    let mut start = MaybeUninit::<Chunk<IPV6_HLEN>>::uninit();
    if !read_into(reader, 0, &mut start) {
        return false;
    }
    // SAFETY: `read_into` returned true: the reader filled every byte of the chunk.
    let ip = unsafe { &start.assume_init_ref().0 };
    match ip[0] >> 4 {
        4 => {
            headers.family = AF_INET;
            headers.ip_len = be16(ip, 2);
            headers.ip_id = be16(ip, 4);
            headers.ttl = ip[8];
            headers.l4_proto = ip[9];
            headers.saddr[..4].copy_from_slice(&ip[12..16]);
            headers.daddr[..4].copy_from_slice(&ip[16..20]);
            // Fragments after the first carry no L4 header.
            if be16(ip, 6) & 0x1fff != 0 {
                return true;
            }
            let l4_offset = ((ip[0] & 0x0f) as usize) * 4;
            if l4_offset == IPV4_MIN_HLEN {
                if let Ok(l4) =
                    <&[u8; TCP_PREFIX]>::try_from(&ip[IPV4_MIN_HLEN..IPV4_MIN_HLEN + TCP_PREFIX])
                {
                    parse_l4(headers, l4);
                }
            } else {
                read_l4(reader, l4_offset, headers);
            }
        }
        6 => {
            headers.family = AF_INET6;
            headers.ip_len = be16(ip, 4).wrapping_add(IPV6_HLEN as u16);
            headers.l4_proto = ip[6];
            headers.ttl = ip[7];
            headers.saddr.copy_from_slice(&ip[8..24]);
            headers.daddr.copy_from_slice(&ip[24..40]);
            read_l4(reader, IPV6_HLEN, headers);
        }
        // ARP for Ethernet and IPv4: hardware type 1, protocol 0x0800, lengths 6 and 4.
        0 if is_ethernet_ipv4_arp(ip) => {
            headers.family = FAMILY_ARP;
            headers.ip_len = ARP_LEN;
            headers.arp_op = ip[7];
            headers.saddr[..4].copy_from_slice(&ip[14..18]);
            headers.daddr[..4].copy_from_slice(&ip[24..28]);
        }
        _ => return false,
    }
    true
}

/// Byte by byte: a slice comparison would compile to memcmp, which BPF does not have.
#[inline(always)]
fn is_ethernet_ipv4_arp(h: &[u8; IPV6_HLEN]) -> bool {
    h[0] == 0 && h[1] == 1 && h[2] == 8 && h[3] == 0 && h[4] == 6 && h[5] == 4
}

/// An Ethernet/IPv4 ARP message: 8 bytes of header, two MAC and two IPv4 addresses.
const ARP_LEN: u16 = 28;

/// Reads the L4 header at `l4_offset` where the first chunk did not cover it.
#[inline(always)]
fn read_l4<R: NetworkHeaderReader>(reader: &R, l4_offset: usize, headers: &mut PacketHeaders) {
    if headers.l4_proto == IPPROTO_TCP {
        let mut tcp = MaybeUninit::<Chunk<TCP_PREFIX>>::uninit();
        if read_into(reader, l4_offset, &mut tcp) {
            // SAFETY: `read_into` returned true: the reader filled every byte of the chunk.
            parse_l4(headers, unsafe { &tcp.assume_init_ref().0 });
        }
    } else if headers.l4_proto == IPPROTO_UDP {
        let mut ports = MaybeUninit::<Chunk<4>>::uninit();
        if read_into(reader, l4_offset, &mut ports) {
            // SAFETY: `read_into` returned true: the reader filled every byte of the chunk.
            let ports = unsafe { &ports.assume_init_ref().0 };
            headers.sport = be16(ports, 0);
            headers.dport = be16(ports, 2);
        }
    }
}

/// Ports (TCP and UDP) and flags (TCP) from the first bytes of the L4 header.
#[inline(always)]
fn parse_l4(headers: &mut PacketHeaders, l4: &[u8; TCP_PREFIX]) {
    if headers.l4_proto == IPPROTO_TCP || headers.l4_proto == IPPROTO_UDP {
        headers.sport = be16(l4, 0);
        headers.dport = be16(l4, 2);
    }
    if headers.l4_proto == IPPROTO_TCP {
        headers.tcp_flags = l4[13];
    }
}
