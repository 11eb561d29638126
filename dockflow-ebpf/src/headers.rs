//! L3/L4 header parsing shared by every probe family: each family only says how to read bytes
//! at an offset from the start of the IP header. Headers are read in a few whole chunks, not
//! field by field: every read is a helper call, and this runs for every packet on the host.

use dockflow_common::{AF_INET, AF_INET6, PacketEvent};

/// Reads a value at `offset` bytes from the start of the network header.
pub trait NetworkHeaderReader {
    fn read<T: Copy>(&self, offset: usize) -> Option<T>;
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Fills the L3/L4 fields of `event` from an IPv4 or IPv6 header; returns false for anything else.
#[inline(always)]
pub fn parse_ip<R: NetworkHeaderReader>(reader: &R, event: &mut PacketEvent) -> bool {
    let Some(v4) = reader.read::<[u8; 20]>(0) else {
        return false;
    };
    let l4_offset = match v4[0] >> 4 {
        4 => {
            event.family = AF_INET;
            event.ip_len = be16(&v4, 2);
            event.ip_id = be16(&v4, 4);
            event.ttl = v4[8];
            event.l4_proto = v4[9];
            event.saddr[..4].copy_from_slice(&v4[12..16]);
            event.daddr[..4].copy_from_slice(&v4[16..20]);
            // Fragments after the first carry no L4 header.
            if be16(&v4, 6) & 0x1fff != 0 {
                return true;
            }
            ((v4[0] & 0x0f) as usize) * 4
        }
        6 => {
            let Some(v6) = reader.read::<[u8; 40]>(0) else {
                return false;
            };
            event.family = AF_INET6;
            event.ip_len = be16(&v6, 4).wrapping_add(40);
            event.l4_proto = v6[6];
            event.ttl = v6[7];
            event.saddr.copy_from_slice(&v6[8..24]);
            event.daddr.copy_from_slice(&v6[24..40]);
            40
        }
        _ => return false,
    };
    if event.l4_proto == IPPROTO_TCP {
        // Ports and flags in one read: a TCP header is at least 20 bytes.
        if let Some(tcp) = reader.read::<[u8; 14]>(l4_offset) {
            event.sport = be16(&tcp, 0);
            event.dport = be16(&tcp, 2);
            event.tcp_flags = tcp[13];
        }
    } else if event.l4_proto == IPPROTO_UDP {
        if let Some(ports) = reader.read::<[u8; 4]>(l4_offset) {
            event.sport = be16(&ports, 0);
            event.dport = be16(&ports, 2);
        }
    }
    true
}
