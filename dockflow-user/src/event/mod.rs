//! Decoding raw ring-buffer records into typed events. Needs no kernel, no root and no aya:
//! replay and rendering build on this alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};
use dockflow_common::{AF_INET, AF_INET6, PACKET_EVENT_SIZE, PacketEvent, ProbePoint};
use serde::Serialize;

/// A decoded event: one packet at one probe point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    pub ts_ns: u64,
    /// Packet identity (skb->head); absent where the probe cannot see it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skb_id: Option<u64>,
    pub probe: Probe,
    pub ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<Packet>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    TcIngress,
    TcEgress,
}

impl Probe {
    fn from_point(point: ProbePoint) -> Self {
        match point {
            ProbePoint::TcIngress => Probe::TcIngress,
            ProbePoint::TcEgress => Probe::TcEgress,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Probe::TcIngress => "tc ingress",
            Probe::TcEgress => "tc egress",
        }
    }
}

/// L3/L4 headers as the probe saw them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    pub ttl: u8,
    pub ip_id: u16,
    pub len: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<u8>,
}

impl Packet {
    pub fn protocol_name(&self) -> String {
        match self.protocol {
            1 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            58 => "icmpv6".into(),
            p => format!("proto {p}"),
        }
    }
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<Event> {
    if record.len() < PACKET_EVENT_SIZE {
        bail!("event record of {} bytes, expected {PACKET_EVENT_SIZE}", record.len());
    }
    // SAFETY: PacketEvent is plain old data and the length was checked above.
    let raw: PacketEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
    let Some(point) = ProbePoint::from_u8(raw.probe) else {
        bail!("event from unknown probe point {}", raw.probe);
    };
    Ok(Event {
        ts_ns: raw.ts_ns,
        skb_id: (raw.skb_id != 0).then_some(raw.skb_id),
        probe: Probe::from_point(point),
        ifindex: raw.ifindex,
        packet: decode_packet(&raw),
    })
}

fn decode_packet(raw: &PacketEvent) -> Option<Packet> {
    let (src, dst) = match raw.family {
        AF_INET => (
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&raw.saddr[..4]).unwrap())),
            IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&raw.daddr[..4]).unwrap())),
        ),
        AF_INET6 => (IpAddr::V6(Ipv6Addr::from(raw.saddr)), IpAddr::V6(Ipv6Addr::from(raw.daddr))),
        _ => return None,
    };
    let has_ports = raw.l4_proto == IPPROTO_TCP || raw.l4_proto == IPPROTO_UDP;
    Some(Packet {
        src,
        dst,
        protocol: raw.l4_proto,
        sport: has_ports.then_some(raw.sport),
        dport: has_ports.then_some(raw.dport),
        ttl: raw.ttl,
        ip_id: raw.ip_id,
        len: raw.ip_len,
        tcp_flags: (raw.l4_proto == IPPROTO_TCP).then_some(raw.tcp_flags),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(event: &PacketEvent) -> Vec<u8> {
        // SAFETY: PacketEvent is #[repr(C)] plain old data.
        unsafe { std::slice::from_raw_parts((event as *const PacketEvent).cast::<u8>(), PACKET_EVENT_SIZE) }.to_vec()
    }

    #[test]
    fn decodes_an_ipv4_udp_event() {
        let mut raw = PacketEvent {
            ts_ns: 5,
            probe: ProbePoint::TcEgress as u8,
            family: AF_INET,
            l4_proto: IPPROTO_UDP,
            ttl: 63,
            ifindex: 7,
            ip_len: 42,
            ip_id: 10848,
            sport: 40000,
            dport: 1812,
            ..PacketEvent::default()
        };
        raw.saddr[..4].copy_from_slice(&[10, 199, 0, 2]);
        raw.daddr[..4].copy_from_slice(&[172, 20, 0, 2]);
        let event = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(event.probe, Probe::TcEgress);
        assert_eq!(event.skb_id, None);
        let p = event.packet.unwrap();
        assert_eq!(p.src.to_string(), "10.199.0.2");
        assert_eq!(p.dst.to_string(), "172.20.0.2");
        assert_eq!((p.sport, p.dport, p.ttl, p.ip_id, p.len), (Some(40000), Some(1812), 63, 10848, 42));
        assert_eq!(p.tcp_flags, None);
    }

    #[test]
    fn decodes_an_ipv6_tcp_event() {
        let raw = PacketEvent {
            probe: ProbePoint::TcIngress as u8,
            skb_id: 0xffff_8880_0000_1000,
            family: AF_INET6,
            l4_proto: IPPROTO_TCP,
            tcp_flags: 0x12,
            saddr: Ipv6Addr::LOCALHOST.octets(),
            daddr: "fd00::2".parse::<Ipv6Addr>().unwrap().octets(),
            ..PacketEvent::default()
        };
        let event = decode(&bytes_of(&raw)).unwrap();
        assert_eq!(event.skb_id, Some(0xffff_8880_0000_1000));
        let p = event.packet.unwrap();
        assert_eq!(p.dst.to_string(), "fd00::2");
        assert_eq!(p.tcp_flags, Some(0x12));
    }

    #[test]
    fn non_ip_frames_have_no_packet() {
        let raw = PacketEvent { probe: ProbePoint::TcIngress as u8, ..PacketEvent::default() };
        assert_eq!(decode(&bytes_of(&raw)).unwrap().packet, None);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(decode(&[0u8; 8]).is_err());
        let raw = PacketEvent { probe: 200, ..PacketEvent::default() };
        assert!(decode(&bytes_of(&raw)).unwrap_err().to_string().contains("unknown probe point 200"));
    }
}
