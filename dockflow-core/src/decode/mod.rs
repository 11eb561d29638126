//! Decoding raw ring-buffer records into the typed [`model`](crate::model). Needs no kernel,
//! no root and no aya: replay builds on this alone. Kernel facts the decoder names things with
//! (drop reasons, hook continuation symbols) come in a [`Decoder`] built once at start.

pub mod names;
pub mod symbols;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Result, bail};
use dockflow_common::{
    AF_INET, AF_INET6, CtTuple, FAMILY_ARP, IPPROTO_TCP, IPPROTO_UDP, NFPROTO_IPV6, NfSlot,
    PACKET_EVENT_SIZE, PacketEvent, ProbePoint, SECTION_BYTES, SECTION_CONNTRACK, SECTION_DROP,
    SECTION_NETFILTER, SECTION_PACKET, SECTION_SAMPLE, SECTION_SKB, SECTION_SYNTHETIC_ETHERNET,
    nf_slot_priority,
};
use serde::Serialize;

pub use self::symbols::KernelSymbols;
use crate::model::{
    ArpOp, Capture, Conntrack, CtStatus, Drop, DropReason, Event, Hook, IpProto, NetfilterHop,
    Outer, Packet, Tuple,
};

/// Turns raw records into [`Event`]s, naming kernel numbers with what was learnt at start.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Decoder {
    /// enum skb_drop_reason values to names (from BTF).
    pub drop_reasons: HashMap<u32, String>,
    /// Kernel functions that netfilter hooks continue into.
    pub symbols: KernelSymbols,
    /// Whether events keep the packet bytes behind them (only --pcapng uses them): otherwise
    /// decoding copies none.
    #[serde(skip)]
    pub keep_bytes: bool,
}

impl Decoder {
    /// Decodes one ring-buffer record.
    pub fn decode(&self, record: &[u8]) -> Result<Event> {
        if record.len() < PACKET_EVENT_SIZE {
            bail!(
                "event record of {} bytes, expected {PACKET_EVENT_SIZE}",
                record.len()
            );
        }
        // SAFETY: PacketEvent is plain old data and the length was checked above.
        let raw: PacketEvent = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let Some(point) = ProbePoint::from_u8(raw.probe) else {
            bail!("event from unknown probe point {}", raw.probe);
        };
        let has = |section| raw.sections & section != 0;
        Ok(Event {
            ts_ns: raw.ts_ns,
            skb_id: has(SECTION_SKB).then_some(raw.skb_id),
            probe: point,
            ifindex: raw.ifindex,
            netns: (raw.netns != 0).then_some(raw.netns),
            packet: if has(SECTION_PACKET) {
                decode_packet(&raw)
            } else {
                None
            },
            netfilter: if has(SECTION_NETFILTER) {
                self.decode_netfilter(&raw)
            } else {
                None
            },
            conntrack: if has(SECTION_CONNTRACK) {
                decode_conntrack(&raw)
            } else {
                None
            },
            drop: has(SECTION_DROP).then(|| Drop {
                reason: self.drop_reason_name(raw.drop_reason),
                code: raw.drop_reason,
            }),
            outer: if point.is_tunnel() {
                decode_outer(&raw).map(Box::new)
            } else {
                None
            },
            capture: if self.keep_bytes && has(SECTION_BYTES) {
                decode_capture(&raw, &record[PACKET_EVENT_SIZE..])
            } else {
                None
            },
            sample: has(SECTION_SAMPLE),
        })
    }

    fn decode_netfilter(&self, raw: &PacketEvent) -> Option<NetfilterHop> {
        let slot = NfSlot::from_u8(raw.nf_slot)?;
        let okfn = self.symbols.name(raw.nf_okfn).cloned();
        Some(NetfilterHop {
            family: names::family(raw.nf_pf),
            hook: Hook::from_number(raw.nf_hook),
            hook_number: raw.nf_hook,
            priority: nf_slot_priority(slot, raw.nf_hook),
            slot,
            in_ifindex: (raw.nf_in_ifindex != 0).then_some(raw.nf_in_ifindex),
            out_ifindex: (raw.nf_out_ifindex != 0).then_some(raw.nf_out_ifindex),
            from_bridge: okfn.as_deref().is_some_and(|f| f.starts_with("br_nf_")),
            okfn,
        })
    }

    fn drop_reason_name(&self, code: u32) -> DropReason {
        match self.drop_reasons.get(&code) {
            Some(name) => DropReason::from_name(name.trim_start_matches("SKB_DROP_REASON_")),
            None => DropReason::Unnamed(code),
        }
    }
}

fn address(family: u8, bytes: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET | FAMILY_ARP => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(&bytes[..4]).unwrap(),
        ))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*bytes))),
        _ => None,
    }
}

fn decode_packet(raw: &PacketEvent) -> Option<Packet> {
    let h = &raw.packet;
    let has_ports = h.l4_proto == IPPROTO_TCP || h.l4_proto == IPPROTO_UDP;
    Some(Packet {
        src: address(h.family, &h.saddr)?,
        dst: address(h.family, &h.daddr)?,
        protocol: IpProto(h.l4_proto),
        sport: has_ports.then_some(h.sport),
        dport: has_ports.then_some(h.dport),
        ttl: h.ttl,
        ip_id: h.ip_id,
        len: h.ip_len,
        tcp_flags: (h.l4_proto == IPPROTO_TCP).then_some(h.tcp_flags),
        arp: (h.family == FAMILY_ARP)
            .then(|| ArpOp::from_raw(h.arp_op))
            .flatten(),
    })
}

/// The bytes behind the event, as many as the kernel captured (never past the record).
fn decode_capture(raw: &PacketEvent, behind: &[u8]) -> Option<Capture> {
    let bytes = behind.get(..raw.snap_len as usize)?;
    Some(Capture {
        bytes: bytes.to_vec(),
        wire_len: raw.wire_len,
        synthetic_ethernet: raw.sections & SECTION_SYNTHETIC_ETHERNET != 0,
    })
}

/// A tunnel point's outer headers, in the conntrack tuple's place (see PacketEvent).
fn decode_outer(raw: &PacketEvent) -> Option<Outer> {
    let t = &raw.ct_original;
    Some(Outer {
        src: address(t.family, &t.src)?,
        sport: t.sport,
        dst: address(t.family, &t.dst)?,
        dport: t.dport,
        vni: raw.ct_status as u32,
    })
}

fn decode_conntrack(raw: &PacketEvent) -> Option<Conntrack> {
    // Conntrack tuples carry no family of their own; the hook's family (or the packet's) tells.
    let family = if raw.nf_pf == NFPROTO_IPV6 || raw.packet.family == AF_INET6 {
        AF_INET6
    } else {
        AF_INET
    };
    let tuple = |t: &CtTuple| {
        Some(Tuple {
            src: address(family, &t.src)?,
            sport: t.sport,
            dst: address(family, &t.dst)?,
            dport: t.dport,
            protocol: IpProto(t.l4_proto),
        })
    };
    let (state, direction) = names::ct_info(raw.ct_info);
    Some(Conntrack {
        state,
        direction,
        status: CtStatus(raw.ct_status),
        original: tuple(&raw.ct_original)?,
        reply: tuple(&raw.ct_reply)?,
    })
}

#[cfg(test)]
mod tests {
    use dockflow_common::{NF_INET_PRE_ROUTING, NFPROTO_IPV4, PacketHeaders};

    use super::*;
    use crate::model::{CtDirection, CtState, Family};

    fn bytes_of(event: &PacketEvent) -> Vec<u8> {
        // SAFETY: PacketEvent is #[repr(C)] plain old data.
        unsafe {
            std::slice::from_raw_parts(
                (event as *const PacketEvent).cast::<u8>(),
                PACKET_EVENT_SIZE,
            )
        }
        .to_vec()
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..4].copy_from_slice(&a);
        out
    }

    fn request_before_dnat() -> PacketEvent {
        PacketEvent {
            ts_ns: 5,
            probe: ProbePoint::TcEgress as u8,
            sections: SECTION_PACKET,
            ifindex: 7,
            packet: PacketHeaders {
                family: AF_INET,
                l4_proto: IPPROTO_UDP,
                ttl: 63,
                ip_len: 42,
                ip_id: 10848,
                sport: 40000,
                dport: 1812,
                saddr: v4([10, 199, 0, 2]),
                daddr: v4([172, 20, 0, 2]),
                ..PacketHeaders::default()
            },
            ..PacketEvent::default()
        }
    }

    #[test]
    fn decodes_an_ipv4_udp_event() {
        let event = Decoder::default()
            .decode(&bytes_of(&request_before_dnat()))
            .unwrap();
        assert_eq!(event.probe, ProbePoint::TcEgress);
        assert_eq!(
            (
                event.skb_id,
                event.netfilter.is_none(),
                event.conntrack.is_none(),
                event.drop.is_none()
            ),
            (None, true, true, true)
        );
        let p = event.packet.unwrap();
        assert_eq!(p.src.to_string(), "10.199.0.2");
        assert_eq!(p.dst.to_string(), "172.20.0.2");
        assert_eq!(
            (p.sport, p.dport, p.ttl, p.ip_id, p.len),
            (Some(40000), Some(1812), 63, 10848, 42)
        );
        assert_eq!(p.tcp_flags, None);
    }

    #[test]
    fn decodes_a_vxlan_packets_outer_headers_beside_the_frame_inside() {
        let raw = PacketEvent {
            probe: ProbePoint::TunnelEgress as u8,
            ct_status: 4097,
            ct_original: CtTuple {
                src: v4([192, 168, 7, 1]),
                dst: v4([192, 168, 7, 2]),
                sport: 51000,
                dport: 4789,
                l4_proto: IPPROTO_UDP,
                family: AF_INET,
                ..CtTuple::default()
            },
            ..request_before_dnat()
        };
        let event = Decoder::default().decode(&bytes_of(&raw)).unwrap();
        let outer = event.outer.as_deref().unwrap();
        assert_eq!(
            outer.to_string(),
            "192.168.7.1:51000 -> 192.168.7.2:4789 VNI 4097"
        );
        assert!(event.conntrack.is_none());
        // The filter and the correlation read the frame inside.
        assert_eq!(event.packet.unwrap().dst.to_string(), "172.20.0.2");
        // Elsewhere those fields are conntrack's, never outer headers.
        let raw = PacketEvent {
            probe: ProbePoint::TcEgress as u8,
            ..raw
        };
        assert!(
            Decoder::default()
                .decode(&bytes_of(&raw))
                .unwrap()
                .outer
                .is_none()
        );
    }

    #[test]
    fn decodes_an_ipv6_tcp_event() {
        let raw = PacketEvent {
            probe: ProbePoint::TcIngress as u8,
            sections: SECTION_PACKET | SECTION_SKB,
            skb_id: 0xffff_8880_0000_1000,
            packet: PacketHeaders {
                family: AF_INET6,
                l4_proto: IPPROTO_TCP,
                tcp_flags: 0x12,
                saddr: Ipv6Addr::LOCALHOST.octets(),
                daddr: "fd00::2".parse::<Ipv6Addr>().unwrap().octets(),
                ..PacketHeaders::default()
            },
            ..PacketEvent::default()
        };
        let event = Decoder::default().decode(&bytes_of(&raw)).unwrap();
        assert_eq!(event.skb_id, Some(0xffff_8880_0000_1000));
        let p = event.packet.unwrap();
        assert_eq!(p.dst.to_string(), "fd00::2");
        assert_eq!(p.tcp_flags, Some(0x12));
    }

    #[test]
    fn decodes_a_netfilter_event_with_conntrack_run_from_the_bridge() {
        let raw = PacketEvent {
            probe: ProbePoint::Netfilter as u8,
            sections: SECTION_PACKET | SECTION_NETFILTER | SECTION_CONNTRACK | SECTION_SKB,
            nf_pf: NFPROTO_IPV4,
            nf_hook: NF_INET_PRE_ROUTING,
            nf_slot: NfSlot::AfterNat as u8,
            nf_okfn: 0xffff_ffff_81a0_0000,
            nf_in_ifindex: 3,
            ct_info: 3,
            ct_status: 0b1_0010_1010,
            ct_original: CtTuple {
                src: v4([10, 199, 0, 2]),
                dst: v4([10, 199, 0, 1]),
                sport: 40000,
                dport: 1812,
                l4_proto: 17,
                family: 0,
                _pad: [0; 2],
            },
            ct_reply: CtTuple {
                src: v4([172, 20, 0, 2]),
                dst: v4([10, 199, 0, 2]),
                sport: 1812,
                dport: 40000,
                l4_proto: 17,
                family: 0,
                _pad: [0; 2],
            },
            ..request_before_dnat()
        };
        let decoder = Decoder {
            symbols: KernelSymbols::from_entries([(
                0xffff_ffff_81a0_0000,
                "br_nf_pre_routing_finish".to_string(),
            )]),
            ..Decoder::default()
        };
        let event = decoder.decode(&bytes_of(&raw)).unwrap();
        let nf = event.netfilter.unwrap();
        assert_eq!(
            (nf.family, nf.hook, nf.priority, nf.slot),
            (Family::Ipv4, Hook::Prerouting, Some(-99), NfSlot::AfterNat)
        );
        assert_eq!(nf.in_ifindex, Some(3));
        assert!(nf.from_bridge);
        let ct = event.conntrack.unwrap();
        assert_eq!(
            (ct.state, ct.direction),
            (CtState::Established, CtDirection::Reply)
        );
        assert!(ct.status.dst_nat());
        assert_eq!(ct.original.dst.to_string(), "10.199.0.1");
        assert_eq!(ct.reply.src.to_string(), "172.20.0.2");
    }

    #[test]
    fn takes_the_captured_bytes_behind_the_event_and_no_more() {
        let raw = PacketEvent {
            sections: SECTION_BYTES | SECTION_SYNTHETIC_ETHERNET,
            snap_len: 3,
            wire_len: 74,
            ..request_before_dnat()
        };
        let mut record = bytes_of(&raw);
        record.extend([1, 2, 3, 4, 5, 6, 7, 8]);
        let keeping = Decoder {
            keep_bytes: true,
            ..Decoder::default()
        };
        let capture = keeping.decode(&record).unwrap().capture.unwrap();
        assert_eq!(capture.bytes, [1, 2, 3]);
        assert_eq!(capture.wire_len, 74);
        assert!(capture.synthetic_ethernet);
        // A snap length past the record is refused, not read beyond it.
        let liar = PacketEvent {
            snap_len: 200,
            ..raw
        };
        let mut record = bytes_of(&liar);
        record.extend([0; 64]);
        assert_eq!(keeping.decode(&record).unwrap().capture, None);
        // Without the section, no bytes.
        assert_eq!(
            keeping
                .decode(&bytes_of(&request_before_dnat()))
                .unwrap()
                .capture,
            None
        );
    }

    #[test]
    fn decodes_a_drop_with_its_reason_name() {
        let raw = PacketEvent {
            probe: ProbePoint::KfreeSkb as u8,
            sections: SECTION_DROP | SECTION_PACKET,
            drop_reason: 6,
            ..request_before_dnat()
        };
        let decoder = Decoder {
            drop_reasons: [(6, "SKB_DROP_REASON_NETFILTER_DROP".to_string())].into(),
            ..Decoder::default()
        };
        let event = decoder.decode(&bytes_of(&raw)).unwrap();
        assert_eq!(
            event.drop,
            Some(Drop {
                reason: DropReason::NetfilterDrop,
                code: 6
            })
        );
        let unknown = PacketEvent {
            drop_reason: 999,
            ..raw
        };
        assert_eq!(
            Decoder::default()
                .decode(&bytes_of(&unknown))
                .unwrap()
                .drop
                .unwrap()
                .reason
                .to_string(),
            "reason 999"
        );
    }

    #[test]
    fn sections_left_out_decode_to_nothing() {
        let raw = PacketEvent {
            probe: ProbePoint::TcIngress as u8,
            packet: PacketHeaders {
                family: AF_INET,
                ..PacketHeaders::default()
            },
            ..PacketEvent::default()
        };
        let event = Decoder::default().decode(&bytes_of(&raw)).unwrap();
        assert_eq!(
            (event.packet, event.netfilter, event.conntrack, event.drop),
            (None, None, None, None)
        );
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(Decoder::default().decode(&[0u8; 8]).is_err());
        let raw = PacketEvent {
            probe: 200,
            ..PacketEvent::default()
        };
        assert!(
            Decoder::default()
                .decode(&bytes_of(&raw))
                .unwrap_err()
                .to_string()
                .contains("unknown probe point 200")
        );
    }
}
