//! The path logic on synthetic events shaped like the seed's exchange (the kernel-facing side is
//! covered end to end in tests/).

use std::collections::HashMap;

use super::{
    correlate::Correlator,
    explain::{Fact, NatKind, Origin, Outcome, Role, explain},
    hop::{Direction, Layer, PacketPath, RewriteField},
};
use crate::model::{
    Conntrack, CtDirection, CtState, CtStatus, Event, Family, Hook, NetfilterHop, Packet,
    ProbePoint, Tuple,
    topology::{InterfaceNames, Link, Topology},
};

const HOST_NS: u32 = 1;
const DFEXT0: u32 = 2;
const DOCKER1: u32 = 3;
const VETH: u32 = 4;
/// Ports of two more containers on the same bridge.
const VETH_B: u32 = 5;
const VETH_C: u32 = 6;
/// A container's namespace, and its eth0 there.
const CONTAINER_NS: u32 = 9;
const ETH0: u32 = 2;

fn topology() -> Topology {
    let names = InterfaceNames::from_entries(
        HOST_NS,
        [
            ((HOST_NS, DFEXT0), "dfext0".into()),
            ((HOST_NS, DOCKER1), "docker1".into()),
            ((HOST_NS, VETH), "vethc".into()),
            ((HOST_NS, VETH_B), "vethb".into()),
            ((HOST_NS, VETH_C), "vethd".into()),
            ((CONTAINER_NS, ETH0), "billing:eth0".into()),
        ],
    );
    let links = [
        Link {
            index: DFEXT0,
            name: "dfext0".into(),
            kind: Some("veth".into()),
            ..Link::default()
        },
        Link {
            index: DOCKER1,
            name: "docker1".into(),
            kind: Some("bridge".into()),
            ..Link::default()
        },
        port(VETH, "vethc"),
        port(VETH_B, "vethb"),
        port(VETH_C, "vethd"),
    ];
    let owners = HashMap::from([
        (VETH, "radius".to_string()),
        (VETH_B, "billing".to_string()),
        (VETH_C, "auditor".to_string()),
    ]);
    Topology::from_links(names, &links, owners)
}

fn port(index: u32, name: &str) -> Link {
    Link {
        index,
        name: name.into(),
        kind: Some("veth".into()),
        master: Some(DOCKER1),
        ..Link::default()
    }
}

fn packet(src: &str, sport: u16, dst: &str, dport: u16, ip_id: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: crate::model::IpProto::UDP,
        sport: Some(sport),
        dport: Some(dport),
        ttl: 64,
        ip_id,
        len: 90,
        tcp_flags: None,
        arp: None,
    }
}

fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: src.parse().unwrap(),
        sport,
        dst: dst.parse().unwrap(),
        dport,
        protocol: crate::model::IpProto::UDP,
    }
}

fn conntrack(state: CtState, direction: CtDirection) -> Conntrack {
    Conntrack {
        state,
        direction,
        status: CtStatus(CONFIRMED | CtStatus::DST_NAT),
        original: tuple("10.199.0.2", 40000, "10.199.0.1", 1812),
        reply: tuple("172.20.0.2", 1812, "10.199.0.2", 40000),
    }
}

fn event(ts: u64, probe: ProbePoint, ifindex: u32, packet: Packet) -> Event {
    Event {
        ts_ns: ts,
        skb_id: None,
        probe,
        ifindex,
        netns: None,
        packet: Some(packet),
        netfilter: None,
        conntrack: None,
        drop: None,
        capture: None,
        outer: None,
        sample: false,
    }
}

const CONFIRMED: u64 = 1 << 3;

fn hook(
    ts: u64,
    hook: Hook,
    priority: i32,
    packet: Packet,
    ct: Option<Conntrack>,
    from_bridge: bool,
) -> Event {
    Event {
        netfilter: Some(NetfilterHop {
            family: Family::Ipv4,
            hook,
            hook_number: 0,
            priority: Some(priority),
            slot: crate::model::NfSlot::First,
            in_ifindex: None,
            out_ifindex: None,
            okfn: None,
            from_bridge,
        }),
        conntrack: ct,
        netns: Some(HOST_NS),
        skb_id: Some(0xffff_0000),
        ..event(ts, ProbePoint::Netfilter, 0, packet)
    }
}

/// The seed's request and reply as the probes report them (and the topology they name).
pub fn seed_events() -> Vec<Event> {
    let before = packet("10.199.0.2", 40000, "10.199.0.1", 1812, 10848);
    let after = packet("10.199.0.2", 40000, "172.20.0.2", 1812, 10848);
    let reply = packet("172.20.0.2", 1812, "10.199.0.2", 40000, 64789);
    let unnat = packet("10.199.0.1", 1812, "10.199.0.2", 40000, 64789);
    let new = || Some(conntrack(CtState::New, CtDirection::Original));
    let est = || Some(conntrack(CtState::Established, CtDirection::Reply));
    vec![
        event(1_000, ProbePoint::NetifReceive, DFEXT0, before.clone()),
        hook(1_100, Hook::Prerouting, -101, before.clone(), new(), false),
        hook(1_200, Hook::Prerouting, -99, after.clone(), new(), false),
        hook(
            1_300,
            Hook::Forward,
            i32::MIN + 1,
            after.clone(),
            new(),
            false,
        ),
        hook(1_400, Hook::Postrouting, 101, after.clone(), new(), false),
        event(1_500, ProbePoint::TcEgress, DOCKER1, after.clone()),
        event(1_600, ProbePoint::TcEgress, VETH, after),
        // The reply reuses the request's skb head: still a different packet.
        event(5_000, ProbePoint::TcIngress, VETH, reply.clone()),
        hook(5_100, Hook::Prerouting, -99, reply.clone(), est(), true),
        event(5_200, ProbePoint::TcIngress, DOCKER1, reply.clone()),
        hook(
            5_300,
            Hook::Forward,
            i32::MIN + 1,
            reply.clone(),
            est(),
            false,
        ),
        hook(5_400, Hook::Postrouting, 99, reply, est(), false),
        hook(5_500, Hook::Postrouting, 101, unnat.clone(), est(), false),
        event(5_600, ProbePoint::NetDevQueue, DFEXT0, unnat),
    ]
}

/// The seed's request and reply, correlated, with the topology they were classified in.
pub fn seed_paths() -> (Topology, Vec<PacketPath>) {
    (topology(), correlate(seed_events()))
}

fn correlate(events: Vec<Event>) -> Vec<PacketPath> {
    let mut c = Correlator::new(topology());
    for e in events {
        c.push(e);
    }
    c.finish()
}

fn layers_and_kinds(path: &PacketPath) -> Vec<(Layer, &'static str)> {
    path.hops.iter().map(|h| (h.layer, h.kind.name())).collect()
}

#[test]
fn groups_events_into_request_and_reply_of_one_connection() {
    let paths = correlate(seed_events());
    assert_eq!(paths.len(), 2);
    let (request, reply) = (&paths[0], &paths[1]);
    assert_eq!(
        (request.connection, request.direction),
        (Some(1), Some(Direction::Request))
    );
    assert_eq!(
        (reply.connection, reply.direction),
        (Some(1), Some(Direction::Reply))
    );
    assert_eq!(request.hops.len(), 7);
    assert_eq!(reply.hops.len(), 7);
}

#[test]
fn classifies_the_request_as_routed_then_bridged() {
    let paths = correlate(seed_events());
    use Layer::*;
    assert_eq!(
        layers_and_kinds(&paths[0]),
        vec![
            (Device, "receive"),
            (L3, "hook"),
            (L3, "hook"),
            (L3, "hook"),
            (L3, "hook"),
            (L3, "into_bridge"),
            (L2, "to_port")
        ]
    );
    let dnat = &paths[0].hops[2];
    assert_eq!(dnat.rewrites.len(), 1);
    assert_eq!(
        (
            dnat.rewrites[0].field,
            dnat.rewrites[0].before.as_str(),
            dnat.rewrites[0].after.as_str()
        ),
        (
            RewriteField::Destination,
            "10.199.0.1:1812",
            "172.20.0.2:1812"
        )
    );
}

#[test]
fn classifies_the_reply_as_bridged_then_routed_with_a_hook_run_from_the_bridge() {
    let paths = correlate(seed_events());
    use Layer::*;
    assert_eq!(
        layers_and_kinds(&paths[1]),
        vec![
            (L2, "from_port"),
            (L3FromBridge, "hook"),
            (L2, "passed_up"),
            (L3, "hook"),
            (L3, "hook"),
            (L3, "hook"),
            (Device, "transmit")
        ]
    );
    let unnat = &paths[1].hops[5];
    assert_eq!(
        (unnat.rewrites[0].field, unnat.rewrites[0].after.as_str()),
        (RewriteField::Source, "10.199.0.1:1812")
    );
}

#[test]
fn a_reused_skb_head_does_not_merge_a_reply_into_its_request() {
    // The reply reuses the request's freed head and has the request's IP id (0, as a DF packet
    // may) and length: only its headers, the request's turned around, keep the two apart.
    let mut events = seed_events();
    for e in &mut events {
        e.skb_id = Some(0xdead_beef);
        if let Some(p) = e.packet.as_mut() {
            p.ip_id = 0;
        }
    }
    let paths = correlate(events);
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert_eq!(
        (paths[0].direction, paths[1].direction),
        (Some(Direction::Request), Some(Direction::Reply))
    );
    assert_eq!((paths[0].hops.len(), paths[1].hops.len()), (7, 7));
}

#[test]
fn packets_with_ip_id_0_are_told_apart_by_their_skb() {
    // Two datagrams alike in every header (IP id 0, same length and ports), 100 us apart: the
    // skb heads say they are two packets; without heads (tc) a hop joins the latest.
    let datagram = packet("10.199.0.2", 40000, "172.20.0.2", 1812, 0);
    let at = |ts, probe, ifindex, skb| Event {
        skb_id: skb,
        ..event(ts, probe, ifindex, datagram.clone())
    };
    let events = vec![
        at(1_000, ProbePoint::NetDevQueue, DOCKER1, Some(0xa000)),
        at(101_000, ProbePoint::NetDevQueue, DOCKER1, Some(0xb000)),
        at(102_000, ProbePoint::NetDevQueue, VETH, Some(0xb000)),
        at(103_000, ProbePoint::NetDevQueue, VETH, Some(0xa000)),
        at(104_000, ProbePoint::TcEgress, VETH, None),
    ];
    let paths = correlate(events);
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert_eq!((paths[0].hops.len(), paths[1].hops.len()), (2, 3));
}

#[test]
fn names_the_container_at_each_end_before_or_after_nat() {
    let mut topology = topology();
    topology
        .address_owner
        .insert("172.20.0.2".parse().unwrap(), "radius".into());
    let mut c = Correlator::new(topology);
    for e in seed_events() {
        c.push(e);
    }
    let paths = c.finish();
    // The request is addressed to the host and DNATed to radius; the reply leaves radius and
    // is un-NATed to the host's address: radius is named at the far end of both.
    assert_eq!(
        (paths[0].ends.src.as_deref(), paths[0].ends.dst.as_deref()),
        (None, Some("radius"))
    );
    assert_eq!(
        (paths[1].ends.src.as_deref(), paths[1].ends.dst.as_deref()),
        (Some("radius"), None)
    );
}

#[test]
fn the_summary_row_names_client_server_and_the_requests_way() {
    let paths = correlate(seed_events());
    let mut summary = super::summary::Summary::default();
    for path in &paths {
        summary.packet(path);
    }
    summary.explanation(&explain(1, Some(&paths[0]), Some(&paths[1])));
    let rows: Vec<_> = summary.rows().cloned().collect();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.client, "10.199.0.2:40000");
    // The server as the request reached it, after DNAT.
    assert_eq!(row.server, "172.20.0.2:1812");
    assert_eq!(row.service, "udp 1812");
    assert_eq!(row.path, "routed with DNAT");
    assert_eq!((row.requests, row.replies), (1, 1));
}

#[test]
fn a_packet_seen_only_by_tc_joins_its_connection_by_its_headers() {
    let mut events = seed_events();
    let later = packet("172.20.0.2", 1812, "10.199.0.2", 40000, 7);
    events.push(event(900_000_000, ProbePoint::TcIngress, VETH, later));
    let paths = correlate(events);
    assert_eq!(
        (paths[2].connection, paths[2].direction),
        (Some(1), Some(Direction::Reply))
    );
}

/// The connection's facts, in order, with the explanation's own check that the JSON form and
/// the sentence both exist.
fn facts(request: Option<&PacketPath>, reply: Option<&PacketPath>) -> Vec<Fact> {
    let explanation = explain(1, request, reply);
    for step in &explanation.steps {
        assert!(!step.text.is_empty());
        let json = serde_json::to_value(step).unwrap();
        assert!(
            json["kind"].is_string() && json["text"].is_string(),
            "{json}"
        );
    }
    explanation.steps.into_iter().map(|s| s.fact).collect()
}

fn outcome_of(facts: &[Fact], role: Role) -> Option<Outcome> {
    facts.iter().find_map(|f| match f {
        Fact::Outcome {
            role: r, outcome, ..
        } if *r == role => Some(*outcome),
        _ => None,
    })
}

fn position(facts: &[Fact], pred: impl Fn(&Fact) -> bool) -> usize {
    facts
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("{facts:#?}"))
}

fn nat(facts: &[Fact], kind: NatKind) -> usize {
    position(
        facts,
        |f| matches!(f, Fact::Nat { nat, .. } if *nat == kind),
    )
}

#[test]
fn explains_dnat_its_reversal_and_the_crossing_of_request_and_reply() {
    let paths = correlate(seed_events());
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    let dnat = nat(&facts, NatKind::Dnat);
    let undo = nat(&facts, NatKind::UndoDnat);
    assert!(dnat < undo);
    let Fact::Nat {
        before, after, at, ..
    } = &facts[dnat]
    else {
        unreachable!()
    };
    assert_eq!(
        (before.as_str(), after.as_str(), at.hook),
        ("10.199.0.1:1812", "172.20.0.2:1812", Hook::Prerouting)
    );
    assert!(matches!(
        facts[0],
        Fact::Start {
            origin: Origin::HostInterface,
            role: Role::Request,
            ..
        }
    ));
    position(&facts, |f| matches!(f, Fact::PassedUp { .. }));
    position(
        &facts,
        |f| matches!(f, Fact::BridgeRunsIpHooks { hooks, role: Role::Reply } if hooks[0].hook == Hook::Prerouting),
    );
    assert_eq!(outcome_of(&facts, Role::Request), Some(Outcome::Routed));
    assert_eq!(outcome_of(&facts, Role::Reply), Some(Outcome::Routed));
    let crossing = position(&facts, |f| matches!(f, Fact::Crossing { .. }));
    let Fact::Crossing { request, reply, .. } = &facts[crossing] else {
        unreachable!()
    };
    assert_eq!(
        (request.as_slice(), reply.as_slice()),
        (&[Layer::L3, Layer::L2][..], &[Layer::L2, Layer::L3][..])
    );
    assert!(
        facts[crossing]
            .sentence()
            .contains("the reply went the other way, L2 -> L3 (bridged from the container up to the host, then routed by the host)"),
        "{}",
        facts[crossing].sentence()
    );
}

/// Container to container on one bridge: br_netfilter runs the IP hooks, nothing routes it.
fn bridged_events() -> Vec<Event> {
    let request = packet("172.20.0.3", 40001, "172.20.0.2", 1812, 300);
    let reply = packet("172.20.0.2", 1812, "172.20.0.3", 40001, 301);
    let mut ct = conntrack(CtState::New, CtDirection::Original);
    ct.status = CtStatus(CONFIRMED);
    ct.original = tuple("172.20.0.3", 40001, "172.20.0.2", 1812);
    ct.reply = tuple("172.20.0.2", 1812, "172.20.0.3", 40001);
    let new = || Some(ct.clone());
    let est = || {
        Some(Conntrack {
            state: CtState::Established,
            direction: CtDirection::Reply,
            ..ct.clone()
        })
    };
    vec![
        event(1_000, ProbePoint::TcIngress, VETH_B, request.clone()),
        hook(1_100, Hook::Prerouting, -99, request.clone(), new(), true),
        hook(1_200, Hook::Forward, -99, request.clone(), new(), true),
        hook(1_300, Hook::Postrouting, 101, request.clone(), new(), true),
        event(1_400, ProbePoint::TcEgress, VETH, request),
        event(5_000, ProbePoint::TcIngress, VETH, reply.clone()),
        hook(5_100, Hook::Prerouting, -99, reply.clone(), est(), true),
        hook(5_200, Hook::Forward, -99, reply.clone(), est(), true),
        hook(5_300, Hook::Postrouting, 101, reply.clone(), est(), true),
        event(5_400, ProbePoint::TcEgress, VETH_B, reply),
    ]
}

#[test]
fn container_to_container_is_bridged_only_and_never_called_routed() {
    let paths = correlate(bridged_events());
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    assert_eq!(
        outcome_of(&facts, Role::Request),
        Some(Outcome::BridgedOnly)
    );
    assert_eq!(outcome_of(&facts, Role::Reply), Some(Outcome::BridgedOnly));
    assert!(
        !facts.iter().any(|f| matches!(
            f,
            Fact::Crossing { .. } | Fact::PassedUp { .. } | Fact::RoutedIntoBridge { .. }
        )),
        "{facts:#?}"
    );
    assert!(
        !facts
            .iter()
            .any(|f| f.sentence().contains("routed through")),
        "{facts:#?}"
    );
    // Every port is named by the container behind it, not only the followed one's.
    assert!(
        matches!(&facts[0], Fact::Start { place, origin: Origin::BridgePort, .. } if place == "vethb (billing)")
    );
}

#[test]
fn a_hairpin_dnat_is_handed_back_to_the_bridge_not_routed() {
    let request = packet("172.20.0.3", 40002, "172.20.0.1", 1812, 400);
    let after = packet("172.20.0.3", 40002, "172.20.0.2", 1812, 400);
    let new = || Some(conntrack(CtState::New, CtDirection::Original));
    let events = vec![
        event(1_000, ProbePoint::TcIngress, VETH_B, request.clone()),
        hook(1_100, Hook::Prerouting, -101, request, new(), true),
        hook(1_200, Hook::Prerouting, -99, after.clone(), new(), true),
        event(1_300, ProbePoint::TcEgress, DOCKER1, after.clone()),
        event(1_350, ProbePoint::NetDevQueue, DOCKER1, after.clone()),
        hook(1_400, Hook::Forward, -99, after.clone(), new(), true),
        hook(1_500, Hook::Postrouting, 101, after.clone(), new(), true),
        event(1_600, ProbePoint::TcEgress, VETH, after),
    ];
    let paths = correlate(events);
    let kinds = layers_and_kinds(&paths[0]);
    assert!(kinds.contains(&(Layer::L2, "handed_back")), "{kinds:?}");
    assert!(!kinds.contains(&(Layer::L3, "into_bridge")), "{kinds:?}");
    let facts = facts(Some(&paths[0]), None);
    let dnat = nat(&facts, NatKind::Dnat);
    let back = position(&facts, |f| matches!(f, Fact::HandedBack { .. }));
    assert!(dnat < back, "{facts:#?}");
    assert_eq!(
        outcome_of(&facts, Role::Request),
        Some(Outcome::BridgedOnly)
    );
}

#[test]
fn a_host_process_to_a_published_port_is_sent_by_the_host_and_its_reply_delivered_locally() {
    let sent = packet("127.0.0.1", 40003, "127.0.0.1", 1812, 500);
    let dnat = packet("127.0.0.1", 40003, "172.20.0.2", 1812, 500);
    let masq = packet("172.20.0.1", 40003, "172.20.0.2", 1812, 500);
    let reply = packet("172.20.0.2", 1812, "172.20.0.1", 40003, 501);
    let unsnat = packet("172.20.0.2", 1812, "127.0.0.1", 40003, 501);
    let undone = packet("127.0.0.1", 1812, "127.0.0.1", 40003, 501);
    let mut ct = conntrack(CtState::New, CtDirection::Original);
    ct.status = CtStatus(CONFIRMED | CtStatus::DST_NAT | CtStatus::SRC_NAT);
    ct.original = tuple("127.0.0.1", 40003, "127.0.0.1", 1812);
    ct.reply = tuple("172.20.0.2", 1812, "172.20.0.1", 40003);
    let new = || Some(ct.clone());
    let est = || {
        Some(Conntrack {
            state: CtState::Established,
            direction: CtDirection::Reply,
            ..ct.clone()
        })
    };
    let events = vec![
        hook(1_000, Hook::Output, -101, sent, new(), false),
        hook(1_100, Hook::Output, -99, dnat.clone(), new(), false),
        hook(1_200, Hook::Postrouting, 99, dnat, new(), false),
        hook(1_300, Hook::Postrouting, 101, masq.clone(), new(), false),
        event(1_400, ProbePoint::TcEgress, DOCKER1, masq.clone()),
        event(1_500, ProbePoint::TcEgress, VETH, masq),
        event(5_000, ProbePoint::TcIngress, VETH, reply.clone()),
        hook(5_100, Hook::Prerouting, -101, reply, est(), true),
        hook(5_200, Hook::Prerouting, -99, unsnat.clone(), est(), true),
        event(5_300, ProbePoint::TcIngress, DOCKER1, unsnat.clone()),
        hook(5_400, Hook::Input, 99, unsnat, est(), false),
        hook(5_500, Hook::Input, 101, undone, est(), false),
    ];
    let paths = correlate(events);
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    assert!(matches!(
        facts[0],
        Fact::Start {
            origin: Origin::HostProcess,
            ..
        }
    ));
    assert_eq!(outcome_of(&facts, Role::Request), Some(Outcome::SentByHost));
    assert_eq!(
        outcome_of(&facts, Role::Reply),
        Some(Outcome::DeliveredLocally)
    );
    // In time order: the SNAT is undone at prerouting, before the DNAT at input.
    assert!(nat(&facts, NatKind::UndoSnat) < nat(&facts, NatKind::UndoDnat));
    assert!(nat(&facts, NatKind::Dnat) < nat(&facts, NatKind::Snat));
    let sentences: Vec<String> = facts.iter().map(Fact::sentence).collect();
    assert!(
        !sentences
            .iter()
            .any(|s| s.contains("routed out") || s.contains("routed through")),
        "{sentences:#?}"
    );
    assert!(
        sentences.iter().any(|s| s.contains(
            "the reply went the other way, L2 -> L3 (bridged from the container up to the host, then delivered to the host)"
        )),
        "{sentences:#?}"
    );
}

#[test]
fn a_flooded_first_frame_reaches_its_container_and_only_its_copies_are_dropped() {
    let request = packet("172.20.0.3", 40004, "172.20.0.2", 1812, 600);
    let new = || Some(conntrack(CtState::New, CtDirection::Original));
    let copy_dropped = Event {
        drop: Some(crate::model::Drop {
            reason: crate::model::DropReason::from_name("OTHERHOST"),
            code: 2,
        }),
        netns: Some(CONTAINER_NS),
        ..event(1_700, ProbePoint::KfreeSkb, ETH0, request.clone())
    };
    let events = vec![
        event(1_000, ProbePoint::TcIngress, VETH_B, request.clone()),
        hook(1_100, Hook::Prerouting, -99, request.clone(), new(), true),
        hook(1_200, Hook::Forward, -99, request.clone(), new(), true),
        event(1_300, ProbePoint::NetDevQueue, VETH_C, request.clone()),
        hook(1_400, Hook::Forward, -99, request.clone(), new(), true),
        event(1_500, ProbePoint::NetDevQueue, VETH_B, request.clone()),
        hook(1_550, Hook::Forward, -99, request.clone(), new(), true),
        event(1_600, ProbePoint::TcEgress, VETH, request.clone()),
        copy_dropped,
    ];
    let paths = correlate(events);
    assert!(paths[0].dropped().is_none(), "the packet itself arrived");
    let facts = facts(Some(&paths[0]), None);
    let flood = position(&facts, |f| matches!(f, Fact::Flooded { .. }));
    let Fact::Flooded {
        ports,
        copies_dropped,
        ..
    } = &facts[flood]
    else {
        unreachable!()
    };
    assert_eq!((ports.len(), *copies_dropped), (3, 1), "{facts:#?}");
    assert!(facts[flood].sentence().starts_with(
        "The bridge does not know the destination MAC yet and floods the frame to every port"
    ));
    assert!(
        !facts.iter().any(|f| matches!(f, Fact::Dropped { .. })),
        "{facts:#?}"
    );
    // br_netfilter's forward hook ran once per copy; it is told once.
    assert_eq!(
        facts
            .iter()
            .filter(|f| matches!(f, Fact::BridgeRunsIpHooks { .. }))
            .count(),
        1,
        "{facts:#?}"
    );
    assert_eq!(
        outcome_of(&facts, Role::Request),
        Some(Outcome::BridgedOnly)
    );
}

#[test]
fn a_packet_known_only_from_the_nftables_trace_is_explained_without_hops() {
    let path = PacketPath {
        id: 1,
        connection: Some(1),
        direction: Some(Direction::Request),
        packet: packet("10.199.0.2", 40000, "10.199.0.1", 1812, 9),
        ends: Default::default(),
        hops: Vec::new(),
        rules: Vec::new(),
        rule_at: Vec::new(),
        incomplete: false,
        proxy: None,
        rules_as: None,
        sample: false,
    };
    let facts = facts(Some(&path), None);
    assert!(matches!(
        facts[0],
        Fact::Start {
            origin: Origin::TraceOnly,
            ..
        }
    ));
}

#[test]
fn explains_a_drop_and_expects_no_reply() {
    let mut events = seed_events();
    events.truncate(4);
    events.push(Event {
        drop: Some(crate::model::Drop {
            reason: crate::model::DropReason::from_name("NETFILTER_DROP"),
            code: 6,
        }),
        ..event(
            1_350,
            ProbePoint::KfreeSkb,
            DFEXT0,
            packet("10.199.0.2", 40000, "172.20.0.2", 1812, 10848),
        )
    });
    let paths = correlate(events);
    assert_eq!(paths.len(), 1);
    assert!(paths[0].dropped().is_some());
    let facts = facts(Some(&paths[0]), None);
    let drop = position(&facts, |f| matches!(f, Fact::Dropped { .. }));
    assert_eq!(
        facts[drop].sentence(),
        "It is dropped (NETFILTER_DROP) after ipv4 forward; it goes no further."
    );
    assert!(
        !facts
            .iter()
            .any(|f| matches!(f, Fact::NoReply | Fact::Outcome { .. })),
        "{facts:#?}"
    );
}

#[test]
fn a_hairpin_dnat_without_a_bridge_transmit_is_still_told_as_handed_back() {
    let request = packet("172.20.0.3", 40005, "172.20.0.1", 1812, 700);
    let after = packet("172.20.0.3", 40005, "172.20.0.2", 1812, 700);
    let new = || Some(conntrack(CtState::New, CtDirection::Original));
    let events = vec![
        event(1_000, ProbePoint::TcIngress, VETH_B, request.clone()),
        hook(1_100, Hook::Prerouting, -101, request, new(), true),
        hook(1_200, Hook::Prerouting, -99, after.clone(), new(), true),
        hook(1_400, Hook::Forward, -99, after.clone(), new(), true),
        event(1_600, ProbePoint::TcEgress, VETH, after),
    ];
    let paths = correlate(events);
    let facts = facts(Some(&paths[0]), None);
    let back = position(&facts, |f| {
        matches!(f, Fact::HandedBack { bridge: None, .. })
    });
    assert!(nat(&facts, NatKind::Dnat) < back);
    assert_eq!(
        outcome_of(&facts, Role::Request),
        Some(Outcome::BridgedOnly)
    );
}

fn arp(op: crate::model::ArpOp, sender: &str, target: &str) -> Packet {
    Packet {
        arp: Some(op),
        len: 28,
        ip_id: 0,
        protocol: crate::model::IpProto(0),
        sport: None,
        dport: None,
        ..packet(sender, 0, target, 0, 0)
    }
}

#[test]
fn an_arp_question_and_its_answer_are_one_exchange_told_at_l2() {
    use crate::model::ArpOp;
    let question = arp(ArpOp::Request, "172.20.0.3", "172.20.0.1");
    let answer = arp(ArpOp::Reply, "172.20.0.1", "172.20.0.3");
    let paths = correlate(vec![
        event(1_000, ProbePoint::TcIngress, VETH_B, question.clone()),
        event(2_000, ProbePoint::NetDevQueue, VETH, question.clone()),
        event(2_100, ProbePoint::NetDevQueue, VETH_C, question.clone()),
        event(3_000, ProbePoint::TcIngress, DOCKER1, question),
        event(9_000, ProbePoint::TcEgress, DOCKER1, answer.clone()),
        event(10_000, ProbePoint::NetDevQueue, VETH_B, answer),
    ]);
    assert_eq!(paths.len(), 2);
    assert_eq!(paths[0].connection, paths[1].connection);
    assert_eq!(paths[1].direction, Some(Direction::Reply));
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    let asked = facts
        .iter()
        .find_map(|f| match f {
            Fact::ArpAsked {
                ports, passed_up, ..
            } => Some((ports.len(), passed_up.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(asked, (2, Some("docker1".to_string())));
    assert!(facts.iter().any(|f| matches!(
        f,
        Fact::ArpAnswered {
            answered_by: super::explain::Answerer::Host,
            ..
        }
    )));
    // No IP story for a frame the IP stack never handled.
    assert!(!facts.iter().any(|f| matches!(
        f,
        Fact::Outcome { .. } | Fact::Crossing { .. } | Fact::PassedUp { .. }
    )));
}

#[test]
fn a_reply_reusing_the_requests_buffer_is_not_merged_into_it() {
    // IPv6 has no IP id; conntrack may not track it. Same skb head, same length, reversed ends.
    let request = packet("fd00::20", 40000, "fd00::10", 5353, 0);
    let reply = packet("fd00::10", 5353, "fd00::20", 40000, 0);
    let with_skb = |mut e: Event| {
        e.skb_id = Some(0xabc);
        e
    };
    let paths = correlate(vec![
        with_skb(event(1_000, ProbePoint::TcIngress, VETH_B, request.clone())),
        with_skb(event(2_000, ProbePoint::TcEgress, VETH, request)),
        with_skb(event(3_000, ProbePoint::TcIngress, VETH, reply.clone())),
        with_skb(event(4_000, ProbePoint::TcEgress, VETH_B, reply)),
    ]);
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert_eq!(paths[0].connection, paths[1].connection);
    assert_eq!(paths[0].direction, Some(Direction::Request));
    assert_eq!(paths[1].direction, Some(Direction::Reply));
}

#[test]
fn finishing_idle_packets_costs_the_finished_not_the_open() {
    const OPEN: u64 = 10_000;
    const IDLE: u64 = 25;
    let mut c = Correlator::new(topology());
    let recent = 1_000_000_000;
    for i in 0..OPEN {
        // The first IDLE packets are old; the rest arrived just now.
        let ts = if i < IDLE { i } else { recent + i };
        c.push(event(
            ts,
            ProbePoint::TcIngress,
            VETH,
            packet("10.0.0.1", 1, "10.0.0.2", 2, i as u16 + 1),
        ));
    }
    let before = c.flush_work();
    let done = c.flush_idle(recent, 100_000_000);
    assert_eq!(done.len() as u64, IDLE);
    // One look per finished packet, and one at the first that is not idle.
    assert_eq!(c.flush_work() - before, IDLE + 1);
    assert_eq!(c.open_packets() as u64, OPEN - IDLE);
}

#[test]
fn the_open_packet_limit_finishes_the_oldest_early_and_counts_it() {
    use super::correlate::Limits;
    let mut c = Correlator::with_limits(
        topology(),
        Limits {
            open_packets: 3,
            connections: 2,
            per_connection: None,
        },
    );
    for i in 0..5u16 {
        c.push(event(
            u64::from(i),
            ProbePoint::TcIngress,
            VETH,
            packet("10.0.0.1", 1000 + i, "10.0.0.2", 2, i + 1),
        ));
    }
    assert_eq!(c.open_packets(), 3);
    assert_eq!(c.evictions.packets, 2);
    // Evicted packets still come out (early), and all five are told.
    let early = c.flush_idle(0, u64::MAX / 2);
    assert_eq!(early.len(), 2);
    assert_eq!(c.finish().len(), 3);
    // Five one-packet connections under a limit of two: three forgotten.
    assert_eq!(c.evictions.connections, 3);
}

#[test]
fn packets_on_their_way_while_events_were_lost_are_marked_and_explained_as_incomplete() {
    let mut c = Correlator::new(topology());
    let second = 1_000_000_000;
    // One packet a second before the loss, one just around it.
    c.push(event(
        1_000,
        ProbePoint::TcIngress,
        VETH,
        packet("10.0.0.1", 1, "10.0.0.2", 2, 1),
    ));
    c.push(event(
        second + 5_000,
        ProbePoint::TcIngress,
        VETH,
        packet("10.0.0.1", 1, "10.0.0.2", 2, 2),
    ));
    c.mark_gap(second, second + 1_000);
    let paths = c.finish();
    assert_eq!(paths.len(), 2);
    assert!(!paths[0].incomplete);
    assert!(paths[1].incomplete);
    assert_eq!(c.incomplete, 1);
    let facts = facts(Some(&paths[1]), None);
    assert!(facts.iter().any(|f| matches!(
        f,
        Fact::Incomplete {
            role: Role::Request
        }
    )));
}

/// Four requests of one connection (no conntrack: the connection is the headers') through a
/// correlator that shows two per connection; the kernel marked the one numbered `sample`.
fn four_requests_past_a_limit_of_two(sample: Option<u16>) -> (Vec<PacketPath>, u64) {
    use super::correlate::Limits;
    let mut c = Correlator::with_limits(
        topology(),
        Limits {
            per_connection: Some(2),
            ..Limits::default()
        },
    );
    for i in 0..4u16 {
        let mut hop = event(
            u64::from(i) * 1_000,
            ProbePoint::TcIngress,
            VETH,
            packet("10.0.0.1", 1000, "10.0.0.2", 2, i + 1),
        );
        hop.sample = sample == Some(i);
        c.push(hop);
    }
    let shown = c.finish();
    (shown, c.folded())
}

#[test]
fn past_the_per_connection_limit_fragments_the_kernel_let_through_are_folded() {
    let (shown, folded) = four_requests_past_a_limit_of_two(None);
    assert_eq!(shown.len(), 2);
    assert_eq!(folded, 2);
}

#[test]
fn past_the_per_connection_limit_the_kernels_sample_is_shown_and_marked() {
    // The fourth is the kernel's sample; the third a fragment it let through.
    let (shown, folded) = four_requests_past_a_limit_of_two(Some(3));
    assert_eq!(shown.len(), 3);
    assert_eq!(folded, 1);
    assert!(shown[2].sample && !shown[1].sample);
    let block = crate::render::paths::packet_block(&shown[2], &topology(), &Default::default());
    assert!(
        block.lines().next().unwrap().contains(" · sample: "),
        "{block}"
    );
    let json = serde_json::to_value(&shown[2]).unwrap();
    assert_eq!(json["sample"], true);
    assert!(
        serde_json::to_value(&shown[1])
            .unwrap()
            .get("sample")
            .is_none()
    );
    // A held-back packet's drop comes alone, and says why it has no other hops.
    let mut drop_only = shown[2].clone();
    drop_only.hops.truncate(1);
    crate::path::rules::place(&mut drop_only);
    drop_only.hops[0].event.drop = Some(crate::model::Drop {
        reason: crate::model::DropReason::from_name("TCP_OLD_DATA"),
        code: 99,
    });
    let block = crate::render::paths::packet_block(&drop_only, &topology(), &Default::default());
    let first = block.lines().next().unwrap();
    assert!(
        first.ends_with(" · dropped past --per-connection: its earlier hops were held back"),
        "{block}"
    );
}

/// A docker-proxy for 0.0.0.0:1812 and [::]:1812, relaying to radius (172.20.0.2:1812).
fn proxied_topology() -> Topology {
    let proxy = |pid, host_ip: &str| crate::model::topology::UserlandProxy {
        pid,
        protocol: crate::model::IpProto::UDP,
        host_ip: host_ip.parse().unwrap(),
        host_port: 1812,
        container_ip: "172.20.0.2".parse().unwrap(),
        container_port: 1812,
    };
    let mut topology = topology();
    topology.proxies = vec![proxy(700, "0.0.0.0"), proxy(701, "::")];
    topology
        .address_owner
        .insert("172.20.0.2".parse().unwrap(), "radius".into());
    topology
}

/// A host process's UDP exchange to 127.0.0.1:1812 through docker-proxy: the client's leg,
/// delivered to the proxy's socket, then the proxy's own leg from the gateway to radius.
fn proxied_events(client_port: u16, proxy_port: u16, t: u64) -> Vec<Event> {
    let front = packet("127.0.0.1", client_port, "127.0.0.1", 1812, 1);
    let front_reply = packet("127.0.0.1", 1812, "127.0.0.1", client_port, 4);
    let back = packet("172.20.0.1", proxy_port, "172.20.0.2", 1812, 2);
    let back_reply = packet("172.20.0.2", 1812, "172.20.0.1", proxy_port, 3);
    let ct = |original: Tuple, reply: Tuple, state, direction| Conntrack {
        state,
        direction,
        status: CtStatus(CONFIRMED),
        original,
        reply,
    };
    let front_ct = |state, direction| {
        Some(ct(
            tuple("127.0.0.1", client_port, "127.0.0.1", 1812),
            tuple("127.0.0.1", 1812, "127.0.0.1", client_port),
            state,
            direction,
        ))
    };
    let back_ct = |state, direction| {
        Some(ct(
            tuple("172.20.0.1", proxy_port, "172.20.0.2", 1812),
            tuple("172.20.0.2", 1812, "172.20.0.1", proxy_port),
            state,
            direction,
        ))
    };
    use CtDirection::{Original, Reply};
    use CtState::{Established, New};
    vec![
        hook(
            t,
            Hook::Output,
            -99,
            front.clone(),
            front_ct(New, Original),
            false,
        ),
        hook(
            t + 100,
            Hook::Input,
            101,
            front,
            front_ct(New, Original),
            false,
        ),
        hook(
            t + 1_000,
            Hook::Output,
            -99,
            back.clone(),
            back_ct(New, Original),
            false,
        ),
        event(t + 1_100, ProbePoint::TcEgress, VETH, back),
        event(t + 2_000, ProbePoint::TcIngress, VETH, back_reply.clone()),
        hook(
            t + 2_100,
            Hook::Input,
            101,
            back_reply,
            back_ct(Established, Reply),
            false,
        ),
        hook(
            t + 3_000,
            Hook::Output,
            -99,
            front_reply.clone(),
            front_ct(Established, Reply),
            false,
        ),
        hook(
            t + 3_100,
            Hook::Input,
            101,
            front_reply,
            front_ct(Established, Reply),
            false,
        ),
    ]
}

#[test]
fn the_two_connections_through_docker_proxy_are_linked_as_one_exchange() {
    use super::{hop::LegRole, proxy::ProxyLinker};
    let topology = proxied_topology();
    let mut events = proxied_events(40000, 50000, 1_000);
    // A second exchange, later, through the same proxy.
    events.extend(proxied_events(40001, 50001, 1_000_000_000));
    let mut c = Correlator::new(topology.clone());
    for e in events {
        c.push(e);
    }
    let mut paths = c.finish();
    let mut linker = ProxyLinker::with_limit(16);
    for path in &mut paths {
        linker.annotate(path, &topology);
    }
    let legs: Vec<(u64, LegRole, Option<u64>, u32)> = paths
        .iter()
        .map(|p| {
            let leg = p.proxy.as_ref().expect("every packet is a leg");
            (p.connection.unwrap(), leg.leg, leg.group, leg.pid)
        })
        .collect();
    let front = legs[0].0;
    let back = legs[1].0;
    let later = legs[4].0;
    assert_eq!(
        legs[..4],
        [
            (front, LegRole::Front, Some(front), 700),
            (back, LegRole::Back, Some(front), 700),
            (back, LegRole::Back, Some(front), 700),
            (front, LegRole::Front, Some(front), 700),
        ],
        "the IPv4 proxy, not the one on [::]"
    );
    assert_eq!(
        legs[5].2,
        Some(later),
        "the later exchange is a group of its own"
    );
    assert_eq!(
        paths[1].proxy.as_ref().unwrap().container.as_deref(),
        Some("radius")
    );
    let front_facts = facts(Some(&paths[0]), Some(&paths[3]));
    assert!(
        front_facts
            .iter()
            .any(|f| matches!(f, Fact::ProxyAccepts { .. }))
    );
    let back_facts = facts(Some(&paths[1]), Some(&paths[2]));
    let opens = back_facts
        .iter()
        .find(|f| matches!(f, Fact::ProxyOpens { .. }))
        .expect("the back leg says who opened it");
    assert!(
        opens
            .sentence()
            .contains(&format!("to relay connection {front}")),
        "{}",
        opens.sentence()
    );
}

#[test]
fn without_a_proxy_a_host_process_connection_is_no_leg() {
    use super::proxy::ProxyLinker;
    let mut paths = correlate(proxied_events(40000, 50000, 1_000));
    let mut linker = ProxyLinker::with_limit(16);
    for path in &mut paths {
        linker.annotate(path, &topology());
        assert!(path.proxy.is_none());
    }
}

/// An nftables rule evaluation of `packet`, as the trace names it.
fn rule(
    ts: u64,
    (table, chain, hook): (&str, &str, Hook),
    text: &str,
    verdict: crate::model::Verdict,
    packet: Packet,
) -> crate::model::RuleTrace {
    crate::model::RuleTrace {
        ts_ns: ts,
        trace_id: 1,
        family: crate::model::NftFamily::Ip,
        table: table.into(),
        chain: chain.into(),
        hook: Some(hook),
        kind: crate::model::TraceKind::Rule,
        handle: Some(7),
        rule: Some(text.into()),
        verdict,
        packet: Some(packet),
    }
}

/// A packet from the external link straight to radius's address (10.199.0.2 -> 172.20.0.2),
/// dropped at raw prerouting by `drop_rule`, and what the explanation makes of it.
fn direct_access_facts(
    from: &str,
    drop_rule: (&str, &str, Hook),
    text: &str,
) -> (Vec<Fact>, PacketPath) {
    let mut topology = topology();
    topology
        .address_owner
        .insert("172.20.0.2".parse().unwrap(), "radius".into());
    topology
        .address_owner
        .insert("10.214.6.5".parse().unwrap(), "outsider".into());
    let direct = packet(from, 40000, "172.20.0.2", 1812, 900);
    let mut c = Correlator::new(topology);
    c.push(event(
        1_000,
        ProbePoint::NetifReceive,
        DFEXT0,
        direct.clone(),
    ));
    c.push(hook(
        1_100,
        Hook::Prerouting,
        i32::MIN + 1,
        direct.clone(),
        None,
        false,
    ));
    c.push_trace(rule(
        1_150,
        drop_rule,
        text,
        crate::model::Verdict::Drop,
        direct.clone(),
    ));
    c.push(Event {
        drop: Some(crate::model::Drop {
            reason: crate::model::DropReason::from_name("NETFILTER_DROP"),
            code: 6,
        }),
        ..event(1_200, ProbePoint::KfreeSkb, DFEXT0, direct)
    });
    let paths = c.finish();
    assert_eq!(paths.len(), 1, "{paths:#?}");
    (facts(Some(&paths[0]), None), paths[0].clone())
}

fn docker_drop(facts: &[Fact]) -> Option<super::docker::DockerDrop> {
    facts.iter().find_map(|f| match f {
        Fact::DockerRule { why, .. } => Some(*why),
        _ => None,
    })
}

#[test]
fn docker_drops_are_told_by_what_they_protect_on_every_engine() {
    use super::docker::DockerDrop;
    // Docker 28 (iptables-nft): raw PREROUTING, matched by place and destination.
    let (facts, _) = direct_access_facts(
        "10.199.0.2",
        ("raw", "PREROUTING", Hook::Prerouting),
        "iifname != \"docker1\" ip daddr 172.20.0.2 counter drop",
    );
    assert_eq!(docker_drop(&facts), Some(DockerDrop::DirectAccess));
    let said = facts
        .iter()
        .find(|f| matches!(f, Fact::DockerRule { .. }))
        .unwrap()
        .sentence();
    assert!(said.contains("container radius's address"), "{said}");
    assert!(said.contains("allow-direct-routing"), "{said}");
    // Docker 29's nftables backend: its own table and chain names, and the rule's comment.
    let (facts, _) = direct_access_facts(
        "10.199.0.2",
        ("docker-bridges", "raw-PREROUTING", Hook::Prerouting),
        "ip daddr 172.20.0.2 iifname != \"docker1\" counter drop comment \"DROP DIRECT ACCESS\"",
    );
    assert_eq!(docker_drop(&facts), Some(DockerDrop::DirectAccess));
    let dropped = facts
        .iter()
        .find(|f| matches!(f, Fact::Dropped { .. }))
        .unwrap()
        .sentence();
    assert!(
        dropped.contains("ip docker-bridges chain raw-PREROUTING"),
        "names the table and chain the trace named: {dropped}"
    );
    // From a container of another Docker network: isolation.
    let (facts, _) = direct_access_facts(
        "10.214.6.5",
        ("raw", "PREROUTING", Hook::Prerouting),
        "iifname != \"docker1\" ip daddr 172.20.0.2 counter drop",
    );
    assert_eq!(docker_drop(&facts), Some(DockerDrop::NetworkIsolation));
    // Docker 20.10's isolation chain.
    let (facts, _) = direct_access_facts(
        "10.214.6.5",
        ("filter", "DOCKER-ISOLATION-STAGE-2", Hook::Forward),
        "oifname \"docker1\" counter drop",
    );
    assert_eq!(docker_drop(&facts), Some(DockerDrop::NetworkIsolation));
    // An internal network's rule: anything not for its own subnet.
    let (facts, _) = direct_access_facts(
        "10.199.0.2",
        ("filter", "DOCKER-ISOLATION-STAGE-1", Hook::Forward),
        "oifname \"dfint0\" ip saddr != 10.218.10.0/24 counter drop",
    );
    assert_eq!(docker_drop(&facts), Some(DockerDrop::InternalNetwork));
    // A user's own rule is not Docker's.
    let (facts, _) = direct_access_facts(
        "10.199.0.2",
        ("filter", "INPUT", Hook::Input),
        "tcp dport 22 drop",
    );
    assert_eq!(docker_drop(&facts), None);
}

#[test]
fn docker_29_rule_lines_are_named_as_the_trace_names_them() {
    let (_, mut seed) = seed_paths();
    let request = &mut seed[0];
    let before = request.packet.clone();
    request.rules = vec![
        rule(
            1_110,
            ("docker-bridges", "nat-PREROUTING", Hook::Prerouting),
            "fib daddr type local counter jump nat-prerouting-and-output",
            crate::model::Verdict::Jump("nat-prerouting-and-output".into()),
            before.clone(),
        ),
        rule(
            1_120,
            (
                "docker-bridges",
                "nat-prerouting-and-output",
                Hook::Prerouting,
            ),
            "iifname != \"docker1\" udp dport 1812 counter dnat to 172.20.0.2:1812 comment \"DNAT\"",
            crate::model::Verdict::Accept,
            before,
        ),
    ];
    crate::path::rules::place(request);
    let facts = facts(Some(&seed[0]), Some(&seed[1]));
    let accepted: Vec<String> = facts
        .iter()
        .filter(|f| matches!(f, Fact::Accepted { .. }))
        .map(Fact::sentence)
        .collect();
    assert!(
        accepted.iter().any(
            |s| s.contains("ip docker-bridges chain nat-prerouting-and-output")
                && s.contains("comment \"DNAT\"")
        ),
        "{accepted:#?}"
    );
    assert!(docker_drop(&facts).is_none());
}

#[test]
fn a_gratuitous_arp_is_an_announcement_that_expects_no_answer() {
    use crate::model::ArpOp;
    let announcement = arp(ArpOp::Request, "172.20.0.3", "172.20.0.3");
    let paths = correlate(vec![
        event(1_000, ProbePoint::TcIngress, VETH_B, announcement.clone()),
        event(2_000, ProbePoint::NetDevQueue, VETH, announcement.clone()),
        event(3_000, ProbePoint::TcIngress, DOCKER1, announcement),
    ]);
    assert_eq!(paths.len(), 1);
    let facts = facts(Some(&paths[0]), None);
    let said = facts
        .iter()
        .find(|f| matches!(f, Fact::ArpAnnounced { .. }))
        .unwrap_or_else(|| panic!("{facts:#?}"))
        .sentence();
    assert!(
        said.starts_with("Gratuitous ARP: the owner of 172.20.0.3 announces"),
        "{said}"
    );
    assert!(said.contains("up to the host through docker1"), "{said}");
    assert!(
        !facts
            .iter()
            .any(|f| matches!(f, Fact::NoReply | Fact::ArpAsked { .. })),
        "not a question left unanswered: {facts:#?}"
    );
    assert_eq!(
        crate::render::packet_summary(&paths[0].packet),
        "arp announcement 172.20.0.3 (gratuitous)"
    );
}

#[test]
fn an_ipv6_packet_stays_one_packet_when_nat66_rewrites_its_port() {
    // [fd00:199::2]:40000 -> [fd00:199::1]:15353, DNATed to [fd00:213:5::10]:5353, and back.
    let v6 = |src: &str, sport, dst: &str, dport| Packet {
        ip_id: 0,
        ..packet(src, sport, dst, dport, 0)
    };
    let before = v6("fd00:199::2", 40000, "fd00:199::1", 15353);
    let after = v6("fd00:199::2", 40000, "fd00:213:5::10", 5353);
    let reply = v6("fd00:213:5::10", 5353, "fd00:199::2", 40000);
    let undone = v6("fd00:199::1", 15353, "fd00:199::2", 40000);
    let ct = |state, direction| {
        Some(Conntrack {
            state,
            direction,
            status: CtStatus(CONFIRMED | CtStatus::DST_NAT),
            original: tuple("fd00:199::2", 40000, "fd00:199::1", 15353),
            reply: tuple("fd00:213:5::10", 5353, "fd00:199::2", 40000),
        })
    };
    let paths = correlate(vec![
        event(1_000, ProbePoint::NetifReceive, DFEXT0, before.clone()),
        hook(
            1_100,
            Hook::Prerouting,
            -101,
            before,
            ct(CtState::New, CtDirection::Original),
            false,
        ),
        hook(
            1_200,
            Hook::Prerouting,
            -99,
            after.clone(),
            ct(CtState::New, CtDirection::Original),
            false,
        ),
        event(1_300, ProbePoint::TcEgress, VETH, after),
        event(5_000, ProbePoint::TcIngress, VETH, reply.clone()),
        hook(
            5_100,
            Hook::Postrouting,
            99,
            reply,
            ct(CtState::Established, CtDirection::Reply),
            false,
        ),
        hook(
            5_200,
            Hook::Postrouting,
            101,
            undone.clone(),
            ct(CtState::Established, CtDirection::Reply),
            false,
        ),
        event(5_300, ProbePoint::NetDevQueue, DFEXT0, undone),
    ]);
    assert_eq!(paths.len(), 2, "one request and one reply: {paths:#?}");
    assert_eq!(paths[0].hops.len(), 4);
    assert_eq!(paths[1].hops.len(), 4);
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    nat(&facts, NatKind::Dnat);
    nat(&facts, NatKind::UndoDnat);
}

#[test]
fn an_ipv6_packets_rules_read_before_its_events_after_nat66_stay_with_it() {
    // The rule trace of the DNATed request (its key now holds port 5353) is read before the
    // ring buffer's events after the rewrite: it must not start a packet of its own.
    let v6 = |src: &str, sport, dst: &str, dport| Packet {
        ip_id: 0,
        ..packet(src, sport, dst, dport, 0)
    };
    let before = v6("fd00:199::2", 40000, "fd00:199::1", 15353);
    let after = v6("fd00:199::2", 40000, "fd00:213:5::10", 5353);
    let ct = Some(Conntrack {
        state: CtState::New,
        direction: CtDirection::Original,
        status: CtStatus(CONFIRMED | CtStatus::DST_NAT),
        original: tuple("fd00:199::2", 40000, "fd00:199::1", 15353),
        reply: tuple("fd00:213:5::10", 5353, "fd00:199::2", 40000),
    });
    let mut c = Correlator::new(topology());
    c.push(event(
        1_000,
        ProbePoint::NetifReceive,
        DFEXT0,
        before.clone(),
    ));
    c.push(hook(
        1_100,
        Hook::Prerouting,
        -101,
        before,
        ct.clone(),
        false,
    ));
    c.push_trace(rule(
        1_250,
        ("filter", "FORWARD", Hook::Forward),
        "ip6 daddr fd00:213:5::10 udp dport 5353 accept",
        crate::model::Verdict::Accept,
        after.clone(),
    ));
    c.push(hook(1_200, Hook::Prerouting, -99, after.clone(), ct, false));
    c.push(event(1_300, ProbePoint::TcEgress, VETH, after));
    let paths = c.finish();
    assert_eq!(paths.len(), 1, "one request: {paths:#?}");
    assert_eq!(paths[0].hops.len(), 4);
    assert_eq!(paths[0].rules.len(), 1);
}

#[test]
fn the_hosts_arp_question_soon_after_an_announcement_is_another_frame() {
    use crate::model::ArpOp;
    let announcement = arp(ArpOp::Request, "172.20.0.2", "172.20.0.2");
    let question = arp(ArpOp::Request, "172.20.0.1", "172.20.0.2");
    let paths = correlate(vec![
        event(1_000, ProbePoint::TcIngress, VETH, announcement.clone()),
        event(2_000, ProbePoint::TcIngress, DOCKER1, announcement),
        // 150 ms later, within the window one packet's events may span.
        event(150_000_000, ProbePoint::TcEgress, DOCKER1, question.clone()),
        event(150_001_000, ProbePoint::NetDevQueue, VETH, question),
    ]);
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert!(paths.iter().all(|p| p.hops.len() == 2));
}

#[test]
fn an_ipv6_loopback_answer_is_not_taken_for_its_request() {
    // ::1:59424 -> ::1:15353 and its answer: the same addresses, the same key (no IP id).
    let v6 = |sport, dport| Packet {
        ip_id: 0,
        ..packet("::1", sport, "::1", dport, 0)
    };
    let paths = correlate(vec![
        hook(
            1_000,
            Hook::Output,
            i32::MIN + 1,
            v6(59424, 15353),
            None,
            false,
        ),
        hook(
            1_100,
            Hook::Input,
            i32::MAX - 1,
            v6(59424, 15353),
            None,
            false,
        ),
        // The answer's first hop comes before conntrack has named it.
        hook(
            50_000,
            Hook::Output,
            i32::MIN + 1,
            v6(15353, 59424),
            None,
            false,
        ),
        hook(
            50_100,
            Hook::Input,
            i32::MAX - 1,
            v6(15353, 59424),
            None,
            false,
        ),
    ]);
    assert_eq!(paths.len(), 2, "{paths:#?}");
    assert_eq!(paths[0].hops.len(), 2);
}

#[test]
fn an_overlay_frame_to_another_node_leaves_through_the_tunnel_and_its_reply_comes_back_in() {
    const TASK_VETH: u32 = OVERLAY_TASK_VETH;
    const VXLAN0: u32 = OVERLAY_VXLAN0;
    let topology = overlay_topology();
    let in_overlay = |ts, probe, ifindex, packet| Event {
        netns: Some(OVERLAY_NS_TEST),
        ..event(ts, probe, ifindex, packet)
    };
    let request = packet("10.233.9.2", 34318, "10.233.9.3", 7400, 57059);
    let reply = packet("10.233.9.3", 7400, "10.233.9.2", 34318, 16147);
    let mut c = Correlator::new(topology);
    for e in [
        in_overlay(1_000, ProbePoint::TcIngress, TASK_VETH, request.clone()),
        in_overlay(1_100, ProbePoint::TcEgress, VXLAN0, request),
        in_overlay(9_000, ProbePoint::TcIngress, VXLAN0, reply.clone()),
        in_overlay(9_100, ProbePoint::TcEgress, TASK_VETH, reply),
    ] {
        c.push(e);
    }
    let paths = c.finish();
    assert_eq!(paths.len(), 2, "{paths:#?}");
    let kinds = |p: &PacketPath| -> Vec<(Layer, &'static str)> { layers_and_kinds(p) };
    assert_eq!(
        kinds(&paths[0]),
        [(Layer::L2, "from_port"), (Layer::L2, "to_tunnel")]
    );
    assert_eq!(
        kinds(&paths[1]),
        [(Layer::L2, "from_tunnel"), (Layer::L2, "to_port")]
    );
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    assert!(
        facts.iter().any(|f| matches!(
            f,
            Fact::Outcome {
                role: Role::Request,
                outcome: Outcome::ToOtherNode,
                ..
            }
        )),
        "{facts:#?}"
    );
    assert!(
        facts.iter().any(|f| matches!(
            f,
            Fact::Start {
                role: Role::Reply,
                origin: Origin::Tunnel,
                ..
            }
        )),
        "{facts:#?}"
    );
    let said: Vec<String> = facts.iter().map(Fact::sentence).collect();
    assert!(
        said.iter()
            .any(|s| s.contains("overlay skein:vxlan0") && s.contains("VNI 4097")),
        "{said:#?}"
    );
    assert!(
        said.iter().any(|s| s.contains("veth1 (egret.1)")),
        "the task's port is named with its task: {said:#?}"
    );
    assert!(
        said.iter()
            .any(|s| s.contains("wraps the frame in a UDP packet to port 7789 ")),
        "the overlay's own VXLAN port: {said:#?}"
    );
    // A recording made before dockflow kept the port says so, rather than guess.
    let unknown = Fact::ToTunnel {
        role: Role::Request,
        port: "vxlan0".into(),
        vni: 4097,
        udp_port: None,
    };
    assert!(
        unknown
            .sentence()
            .contains("a UDP packet to the overlay's VXLAN port of the node"),
        "{}",
        unknown.sentence()
    );
}

/// An overlay network's namespace: br0 with a task's veth and the VXLAN device (VNI 4097,
/// answering ARP itself as Docker's do), where ifindexes repeat the host's.
const OVERLAY_NS_TEST: u32 = 40;
const OVERLAY_BR0: u32 = 2;
const OVERLAY_VXLAN0: u32 = 3;
const OVERLAY_TASK_VETH: u32 = 4;

fn overlay_topology() -> Topology {
    let mut topology = topology();
    for (index, name) in [
        (OVERLAY_BR0, "br0"),
        (OVERLAY_VXLAN0, "vxlan0"),
        (OVERLAY_TASK_VETH, "veth1"),
    ] {
        topology
            .names
            .add(OVERLAY_NS_TEST, index, format!("overlay skein:{name}"));
    }
    topology
        .namespace_bridges
        .push(crate::model::topology::NamespaceBridge {
            netns: OVERLAY_NS_TEST,
            ifindex: OVERLAY_BR0,
            ports: vec![
                (OVERLAY_VXLAN0, None),
                (OVERLAY_TASK_VETH, Some("egret.1".into())),
            ],
            tunnels: vec![(OVERLAY_VXLAN0, 4097, true)],
            // As made by `docker swarm init --data-path-port 7789`.
            vxlan_port: Some(7789),
        });
    topology
}

#[test]
fn an_arp_answer_the_vxlan_device_makes_itself_is_not_said_to_come_from_another_node() {
    use crate::model::ArpOp;
    let question = arp(ArpOp::Request, "10.233.9.2", "10.233.9.3");
    let answer = arp(ArpOp::Reply, "10.233.9.3", "10.233.9.2");
    let in_overlay = |ts, probe, ifindex, packet| Event {
        netns: Some(OVERLAY_NS_TEST),
        ..event(ts, probe, ifindex, packet)
    };
    let mut c = Correlator::new(overlay_topology());
    for e in [
        in_overlay(
            1_000,
            ProbePoint::TcIngress,
            OVERLAY_TASK_VETH,
            question.clone(),
        ),
        in_overlay(1_100, ProbePoint::TcEgress, OVERLAY_VXLAN0, question),
        in_overlay(1_300, ProbePoint::TcIngress, OVERLAY_VXLAN0, answer.clone()),
        in_overlay(1_400, ProbePoint::TcEgress, OVERLAY_TASK_VETH, answer),
    ] {
        c.push(e);
    }
    let paths = c.finish();
    assert_eq!(paths.len(), 2, "{paths:#?}");
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    let answered = facts
        .iter()
        .find_map(|f| match f {
            Fact::ArpAnswered { answered_by, .. } => Some(*answered_by),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{facts:#?}"));
    assert_eq!(answered, super::explain::Answerer::TunnelProxy);
    assert!(
        !facts.iter().any(|f| matches!(
            f,
            Fact::Start {
                origin: Origin::Tunnel,
                ..
            }
        )),
        "the answer was made on this node: {facts:#?}"
    );
}

#[test]
fn a_bridge_in_a_namespace_of_its_own_passes_frames_up_to_that_namespace() {
    let said = |bridge: &str| {
        Fact::PassedUp {
            role: Role::Request,
            bridge: bridge.into(),
        }
        .sentence()
    };
    assert!(said("docker1").contains("up to the host's IP stack"));
    let overlay = said("overlay skein:br0");
    assert!(
        overlay.contains("up to the IP stack of overlay skein's namespace")
            && !overlay.contains("host"),
        "{overlay}"
    );
}

mod mesh;
