//! The path logic on synthetic events shaped like the seed's exchange (the kernel-facing side is
//! covered end to end in tests/).

use std::collections::HashMap;

use super::{
    classify::Layer,
    correlate::{Correlator, Direction, PacketPath},
    explain::explain,
    topology::Topology,
};
use crate::{
    event::{Conntrack, Event, NetfilterHop, Packet, Probe, Tuple},
    target::{links::Link, names::InterfaceNames},
};

const HOST_NS: u32 = 1;
const DFEXT0: u32 = 2;
const DOCKER1: u32 = 3;
const VETH: u32 = 4;

fn topology() -> Topology {
    let names = InterfaceNames::from_entries(
        HOST_NS,
        [
            ((HOST_NS, DFEXT0), "dfext0".into()),
            ((HOST_NS, DOCKER1), "docker1".into()),
            ((HOST_NS, VETH), "vethc".into()),
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
        Link {
            index: VETH,
            name: "vethc".into(),
            kind: Some("veth".into()),
            master: Some(DOCKER1),
            ..Link::default()
        },
    ];
    Topology::from_links(names, &links, HashMap::from([(VETH, "radius".to_string())]))
}

fn packet(src: &str, sport: u16, dst: &str, dport: u16, ip_id: u16) -> Packet {
    Packet {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: 17,
        sport: Some(sport),
        dport: Some(dport),
        ttl: 64,
        ip_id,
        len: 90,
        tcp_flags: None,
    }
}

fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: src.parse().unwrap(),
        sport,
        dst: dst.parse().unwrap(),
        dport,
        protocol: 17,
    }
}

fn conntrack(state: &'static str, direction: &'static str) -> Conntrack {
    Conntrack {
        state,
        direction,
        status: vec!["confirmed", "dst_nat"],
        original: tuple("10.199.0.2", 40000, "10.199.0.1", 1812),
        reply: tuple("172.20.0.2", 1812, "10.199.0.2", 40000),
    }
}

fn event(ts: u64, probe: Probe, ifindex: u32, packet: Packet) -> Event {
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
    }
}

fn hook(
    ts: u64,
    hook: &'static str,
    priority: i32,
    packet: Packet,
    ct: Option<Conntrack>,
    from_bridge: bool,
) -> Event {
    Event {
        netfilter: Some(NetfilterHop {
            family: "ipv4",
            hook,
            hook_number: 0,
            priority: Some(priority),
            slot: "",
            in_ifindex: None,
            out_ifindex: None,
            okfn: None,
            from_bridge,
        }),
        conntrack: ct,
        netns: Some(HOST_NS),
        skb_id: Some(0xffff_0000),
        ..event(ts, Probe::Netfilter, 0, packet)
    }
}

/// The seed's request and reply as the probes report them.
fn seed_events() -> Vec<Event> {
    let before = packet("10.199.0.2", 40000, "10.199.0.1", 1812, 10848);
    let after = packet("10.199.0.2", 40000, "172.20.0.2", 1812, 10848);
    let reply = packet("172.20.0.2", 1812, "10.199.0.2", 40000, 64789);
    let unnat = packet("10.199.0.1", 1812, "10.199.0.2", 40000, 64789);
    let new = || Some(conntrack("new", "original"));
    let est = || Some(conntrack("established", "reply"));
    vec![
        event(1_000, Probe::NetifReceive, DFEXT0, before.clone()),
        hook(1_100, "prerouting", -101, before.clone(), new(), false),
        hook(1_200, "prerouting", -99, after.clone(), new(), false),
        hook(1_300, "forward", i32::MIN + 1, after.clone(), new(), false),
        hook(1_400, "postrouting", 101, after.clone(), new(), false),
        event(1_500, Probe::TcEgress, DOCKER1, after.clone()),
        event(1_600, Probe::TcEgress, VETH, after),
        // The reply reuses the request's skb head: still a different packet.
        event(5_000, Probe::TcIngress, VETH, reply.clone()),
        hook(5_100, "prerouting", -99, reply.clone(), est(), true),
        event(5_200, Probe::TcIngress, DOCKER1, reply.clone()),
        hook(5_300, "forward", i32::MIN + 1, reply.clone(), est(), false),
        hook(5_400, "postrouting", 99, reply, est(), false),
        hook(5_500, "postrouting", 101, unnat.clone(), est(), false),
        event(5_600, Probe::NetDevQueue, DFEXT0, unnat),
    ]
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
        ("destination", "10.199.0.1:1812", "172.20.0.2:1812")
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
        ("source", "10.199.0.1:1812")
    );
}

#[test]
fn a_reused_skb_head_does_not_merge_different_packets() {
    let mut events = seed_events();
    for e in &mut events {
        e.skb_id = Some(0xdead_beef);
    }
    assert_eq!(correlate(events).len(), 2);
}

#[test]
fn a_packet_seen_only_by_tc_joins_its_connection_by_its_headers() {
    let mut events = seed_events();
    let later = packet("172.20.0.2", 1812, "10.199.0.2", 40000, 7);
    events.push(event(900_000_000, Probe::TcIngress, VETH, later));
    let paths = correlate(events);
    assert_eq!(
        (paths[2].connection, paths[2].direction),
        (Some(1), Some(Direction::Reply))
    );
}

#[test]
fn explains_dnat_its_reversal_and_why_input_never_sees_the_reply() {
    let paths = correlate(seed_events());
    let steps = explain(1, Some(&paths[0]), Some(&paths[1])).steps;
    let has = |needle: &str| steps.iter().any(|s| s.contains(needle));
    assert!(
        has(
            "DNAT: a nat rule rewrites the destination 10.199.0.1:1812 -> 172.20.0.2:1812 at ipv4 prerouting"
        ),
        "{steps:#?}"
    );
    assert!(
        has("conntrack undoes the request's DNAT on the reply"),
        "{steps:#?}"
    );
    assert!(has("no nat chain sees this one"), "{steps:#?}");
    assert!(
        has("br_netfilter runs the ipv4 prerouting hook"),
        "{steps:#?}"
    );
    assert!(has("passes the frame up"), "{steps:#?}");
    assert!(has("no IP input hook sees it"), "{steps:#?}");
    assert!(
        has("L2 -> L3 (bridged from the container up to the host, then routed out)"),
        "{steps:#?}"
    );
    assert!(steps[0].starts_with("1. The request"), "{steps:#?}");
}

#[test]
fn explains_a_drop_and_the_missing_reply() {
    let mut events = seed_events();
    events.truncate(4);
    events.push(Event {
        drop: Some(crate::event::Drop {
            reason: "NETFILTER_DROP".into(),
            code: 6,
        }),
        ..event(
            1_350,
            Probe::KfreeSkb,
            DFEXT0,
            packet("10.199.0.2", 40000, "172.20.0.2", 1812, 10848),
        )
    });
    let paths = correlate(events);
    assert_eq!(paths.len(), 1);
    assert!(paths[0].dropped().is_some());
    let steps = explain(1, Some(&paths[0]), None).steps;
    assert!(
        steps
            .iter()
            .any(|s| s.contains("It is dropped (NETFILTER_DROP) after ipv4 forward")),
        "{steps:#?}"
    );
    assert!(
        !steps.iter().any(|s| s.contains("No reply")),
        "a dropped request expects no reply: {steps:#?}"
    );
    assert!(
        !steps.iter().any(|s| s.contains("routed through the host")),
        "{steps:#?}"
    );
}
