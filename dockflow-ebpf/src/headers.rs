//! L3/L4 header parsing shared by every probe family: each family only says how to read bytes
//! at an offset from the start of the IP header.

use dockflow_common::{AF_INET, AF_INET6, PacketEvent};

/// Reads a value at `offset` bytes from the start of the network header.
pub trait NetworkHeaderReader {
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Fills the L3/L4 fields of `event` from an IPv4 or IPv6 header; returns false for anything else.
#[inline(always)]
pub fn parse_ip<R: NetworkHeaderReader>(reader: &R, event: &mut PacketEvent) -> bool {
    let Some(first) = reader.read::<u8>(0) else {
        return false;
    };
    let l4_offset = match first >> 4 {
        4 => {
            event.family = AF_INET;
            event.ip_len = u16::from_be(reader.read::<u16>(2).unwrap_or(0));
            event.ip_id = u16::from_be(reader.read::<u16>(4).unwrap_or(0));
            event.ttl = reader.read::<u8>(8).unwrap_or(0);
            event.l4_proto = reader.read::<u8>(9).unwrap_or(0);
            if let Some(src) = reader.read::<[u8; 4]>(12) {
                event.saddr[..4].copy_from_slice(&src);
            }
            if let Some(dst) = reader.read::<[u8; 4]>(16) {
                event.daddr[..4].copy_from_slice(&dst);
            }
            // Fragments after the first carry no L4 header.
            let frag = u16::from_be(reader.read::<u16>(6).unwrap_or(0));
            if frag & 0x1fff != 0 {
                return true;
            }
            ((first & 0x0f) as usize) * 4
        }
        6 => {
            event.family = AF_INET6;
            event.ip_len = u16::from_be(reader.read::<u16>(4).unwrap_or(0)).wrapping_add(40);
            event.l4_proto = reader.read::<u8>(6).unwrap_or(0);
            event.ttl = reader.read::<u8>(7).unwrap_or(0);
            if let Some(src) = reader.read::<[u8; 16]>(8) {
                event.saddr = src;
            }
            if let Some(dst) = reader.read::<[u8; 16]>(24) {
                event.daddr = dst;
            }
            40
        }
        _ => return false,
    };
    if event.l4_proto == IPPROTO_TCP || event.l4_proto == IPPROTO_UDP {
        event.sport = u16::from_be(reader.read::<u16>(l4_offset).unwrap_or(0));
        event.dport = u16::from_be(reader.read::<u16>(l4_offset + 2).unwrap_or(0));
    }
    if event.l4_proto == IPPROTO_TCP {
        event.tcp_flags = reader.read::<u8>(l4_offset + 13).unwrap_or(0);
    }
    true
}
