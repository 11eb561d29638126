//! The packet an nftables trace message carries, from its raw IP and transport headers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dockflow_common::{IPPROTO_TCP, IPPROTO_UDP};

use crate::model::{IpProto, Packet};

/// The packet a trace message carries (its IP and transport headers).
pub fn packet_from_headers(network: &[u8], transport: &[u8]) -> Option<Packet> {
    let version = network.first()? >> 4;
    let (src, dst, protocol, ttl, ip_id, len) = match version {
        4 if network.len() >= 20 => (
            IpAddr::V4(Ipv4Addr::new(
                network[12],
                network[13],
                network[14],
                network[15],
            )),
            IpAddr::V4(Ipv4Addr::new(
                network[16],
                network[17],
                network[18],
                network[19],
            )),
            network[9],
            network[8],
            u16::from_be_bytes([network[4], network[5]]),
            u16::from_be_bytes([network[2], network[3]]),
        ),
        6 if network.len() >= 40 => (
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&network[8..24]).ok()?)),
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&network[24..40]).ok()?)),
            network[6],
            network[7],
            0,
            u16::from_be_bytes([network[4], network[5]]).wrapping_add(40),
        ),
        _ => return None,
    };
    let has_ports = (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP) && transport.len() >= 4;
    let port = |at: usize| u16::from_be_bytes([transport[at], transport[at + 1]]);
    Some(Packet {
        src,
        dst,
        protocol: IpProto(protocol),
        sport: has_ports.then(|| port(0)),
        dport: has_ports.then(|| port(2)),
        ttl,
        ip_id,
        len,
        tcp_flags: (protocol == IPPROTO_TCP).then(|| transport.get(13).copied().unwrap_or(0)),
        arp: None,
    })
}
