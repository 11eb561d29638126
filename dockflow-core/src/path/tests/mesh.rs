//! Swarm's routing mesh on synthetic events: a published port DNATed on the host into
//! `ingress_sbox`, where IPVS rewrites both ends and sends the request on to a task; the reply
//! meets the task's and ingress_sbox's own conntrack entries before the host's.

use super::*;
use crate::path::{
    classify::flooded_ports,
    hop::{Hop, HopKind},
};

const SBOX_NS: u32 = 20;
const TASK_NS: u32 = 21;
const SBOX_ETH0: u32 = 3;
const SBOX_ETH1: u32 = 4;
const CLIENT: &str = "10.198.4.2";
const NODE: &str = "10.198.4.1";
const SBOX_GW: &str = "172.19.0.2";
const SBOX_INGRESS: &str = "10.0.7.2";
const TASK: &str = "10.0.7.9";
const TASK_NAME: &str = "wren.1.abc";

fn mesh_topology() -> Topology {
    let mut topology = topology();
    topology
        .names
        .add(SBOX_NS, SBOX_ETH1, "ingress_sbox:eth1".into());
    topology
        .names
        .add(SBOX_NS, SBOX_ETH0, "ingress_sbox:eth0".into());
    topology
        .names
        .add(TASK_NS, ETH0, format!("{TASK_NAME}:eth0"));
    topology
        .address_owner
        .insert(TASK.parse().unwrap(), TASK_NAME.into());
    topology
}

/// A hook in namespace `ns` (the host's, ingress_sbox's or the task's), with that
/// namespace's conntrack entry.
fn hook_in(ns: u32, ts: u64, at: Hook, packet: Packet, ct: Conntrack) -> Event {
    Event {
        netns: Some(ns),
        ..hook(ts, at, 0, packet, Some(ct), false)
    }
}

fn device(ns: u32, ts: u64, probe: ProbePoint, ifindex: u32, packet: Packet) -> Event {
    Event {
        netns: Some(ns),
        ..event(ts, probe, ifindex, packet)
    }
}

fn ct(direction: CtDirection, original: Tuple, reply: Tuple) -> Conntrack {
    Conntrack {
        state: CtState::Established,
        direction,
        status: CtStatus(CONFIRMED),
        original,
        reply,
    }
}

fn mesh_events() -> Vec<Event> {
    use CtDirection::{Original, Reply};
    let host_ct = |d| {
        ct(
            d,
            tuple(CLIENT, 41000, NODE, 7300),
            tuple(SBOX_GW, 7300, CLIENT, 41000),
        )
    };
    let sbox_ct = |d| {
        ct(
            d,
            tuple(CLIENT, 41000, SBOX_GW, 7300),
            tuple(TASK, 7300, SBOX_INGRESS, 41000),
        )
    };
    let task_ct = |d| {
        ct(
            d,
            tuple(SBOX_INGRESS, 41000, TASK, 7300),
            tuple(TASK, 7300, SBOX_INGRESS, 41000),
        )
    };
    let asked = packet(CLIENT, 41000, NODE, 7300, 500);
    let to_sbox = packet(CLIENT, 41000, SBOX_GW, 7300, 500);
    let to_task = packet(CLIENT, 41000, TASK, 7300, 500);
    let balanced = packet(SBOX_INGRESS, 41000, TASK, 7300, 500);
    let answer = packet(TASK, 7300, SBOX_INGRESS, 41000, 900);
    let unbalanced = packet(TASK, 7300, CLIENT, 41000, 900);
    let from_sbox = packet(SBOX_GW, 7300, CLIENT, 41000, 900);
    let answered = packet(NODE, 7300, CLIENT, 41000, 900);
    vec![
        event(1_000, ProbePoint::NetifReceive, DFEXT0, asked.clone()),
        hook_in(HOST_NS, 1_100, Hook::Prerouting, asked, host_ct(Original)),
        hook_in(
            HOST_NS,
            1_200,
            Hook::Forward,
            to_sbox.clone(),
            host_ct(Original),
        ),
        device(
            SBOX_NS,
            1_300,
            ProbePoint::NetifReceive,
            SBOX_ETH1,
            to_sbox.clone(),
        ),
        hook_in(SBOX_NS, 1_400, Hook::Input, to_sbox, sbox_ct(Original)),
        hook_in(SBOX_NS, 1_500, Hook::Output, to_task, sbox_ct(Original)),
        device(
            SBOX_NS,
            1_600,
            ProbePoint::NetDevQueue,
            SBOX_ETH0,
            balanced.clone(),
        ),
        device(
            TASK_NS,
            1_700,
            ProbePoint::NetifReceive,
            ETH0,
            balanced.clone(),
        ),
        hook_in(TASK_NS, 1_800, Hook::Input, balanced, task_ct(Original)),
        // The reply meets the task's entry first, then ingress_sbox's, then the host's.
        hook_in(TASK_NS, 5_000, Hook::Output, answer.clone(), task_ct(Reply)),
        device(
            TASK_NS,
            5_100,
            ProbePoint::NetDevQueue,
            ETH0,
            answer.clone(),
        ),
        device(
            SBOX_NS,
            5_200,
            ProbePoint::NetifReceive,
            SBOX_ETH0,
            answer.clone(),
        ),
        hook_in(SBOX_NS, 5_300, Hook::Forward, unbalanced, sbox_ct(Reply)),
        device(
            SBOX_NS,
            5_400,
            ProbePoint::NetDevQueue,
            SBOX_ETH1,
            from_sbox.clone(),
        ),
        hook_in(HOST_NS, 5_500, Hook::Forward, from_sbox, host_ct(Reply)),
        hook_in(
            HOST_NS,
            5_600,
            Hook::Postrouting,
            answered.clone(),
            host_ct(Reply),
        ),
        event(5_700, ProbePoint::NetDevQueue, DFEXT0, answered),
    ]
}

fn mesh_paths() -> Vec<PacketPath> {
    let mut c = Correlator::new(mesh_topology());
    for e in mesh_events() {
        c.push(e);
    }
    c.finish()
}

#[test]
fn the_reply_joins_its_request_by_the_hosts_conntrack_entry_not_a_namespaces() {
    let paths = mesh_paths();
    assert_eq!(paths.len(), 2);
    assert_eq!(
        [paths[0].connection, paths[1].connection],
        [Some(1), Some(1)]
    );
    assert_eq!(paths[1].direction, Some(Direction::Reply));
}

#[test]
fn ipvs_in_ingress_sbox_is_told_with_its_task_and_undone_on_the_reply() {
    let paths = mesh_paths();
    let facts = facts(Some(&paths[0]), Some(&paths[1]));
    let told = |role: Role| {
        facts.iter().find_map(|f| match f {
            Fact::NatInNamespace {
                role: r,
                namespace,
                rewrites,
                backend,
            } if *r == role => Some((namespace.clone(), rewrites.clone(), backend.clone())),
            _ => None,
        })
    };
    let (namespace, rewrites, backend) = told(Role::Request).expect("the request's IPVS step");
    assert_eq!(namespace, "ingress_sbox");
    assert_eq!(backend.as_deref(), Some(TASK_NAME));
    let changes: Vec<(RewriteField, &str)> = rewrites
        .iter()
        .map(|r| (r.field, r.after.as_str()))
        .collect();
    assert_eq!(
        changes,
        [
            (RewriteField::Destination, "10.0.7.9:7300"),
            (RewriteField::Source, "10.0.7.2:41000")
        ]
    );
    assert_eq!(
        outcome_of(&facts, Role::Request),
        Some(Outcome::BalancedToTask)
    );
    let (namespace, rewrites, _) = told(Role::Reply).expect("the reply's IPVS step");
    assert_eq!(namespace, "ingress_sbox");
    assert_eq!(rewrites.len(), 2);
    // Sent by the task, not by the host: its own output hook comes first.
    assert!(facts.iter().any(|f| matches!(
        f,
        Fact::Start { role: Role::Reply, origin: Origin::Container, place, .. }
            if place == &format!("{TASK_NAME}:eth0")
    )));
}

fn to_port(netns: u32, port: &str) -> Hop {
    let mut e = event(0, ProbePoint::TcEgress, 0, packet(CLIENT, 1, TASK, 2, 3));
    e.netns = Some(netns);
    Hop {
        layer: Layer::L2,
        kind: HopKind::ToPort { port: port.into() },
        rewrites: Vec::new(),
        event: e,
    }
}

#[test]
fn one_port_of_each_of_two_bridges_is_no_flood() {
    let receive = Hop {
        layer: Layer::Device,
        kind: HopKind::Receive {
            interface: "ingress_sbox:eth1".into(),
            host: false,
        },
        ..to_port(SBOX_NS, "")
    };
    let through_two = [
        to_port(HOST_NS, "veth1"),
        receive,
        to_port(22, "overlay ingress:veth1"),
    ];
    assert!(flooded_ports(&through_two).is_empty());
    // Two ports of one bridge in one pass are.
    let flood = [to_port(HOST_NS, "veth1"), to_port(HOST_NS, "veth2")];
    assert_eq!(flooded_ports(&flood), ["veth1", "veth2"]);
}

#[test]
fn hops_in_another_nodes_namespaces_are_left_out_of_a_nodes_part_in_a_merge() {
    // Nodes simulated on one kernel: the global probes see the other node's namespaces too.
    const OTHER_NODE_NS: u32 = 77;
    let mut topology = mesh_topology();
    topology
        .names
        .label_namespace(SBOX_NS, "ingress_sbox".into());
    let p = || packet(CLIENT, 41000, NODE, 7300, 500);
    let events = || {
        [
            event(1_000, ProbePoint::NetifReceive, DFEXT0, p()),
            device(SBOX_NS, 1_100, ProbePoint::NetifReceive, SBOX_ETH1, p()),
            device(OTHER_NODE_NS, 1_200, ProbePoint::NetifReceive, 5, p()),
            device(OTHER_NODE_NS, 1_300, ProbePoint::BrForward, 5, p()),
        ]
    };
    let namespaces = |mut c: Correlator| {
        for e in events() {
            c.push(e);
        }
        let paths = c.finish();
        let seen: Vec<Option<u32>> = paths[0].hops.iter().map(|h| h.event.netns).collect();
        seen
    };
    assert_eq!(
        namespaces(Correlator::new(topology.clone()).one_node_of_several()),
        [None, Some(SBOX_NS)]
    );
    // A live run keeps them: a restarted container's new namespace is learnt a moment later.
    assert_eq!(
        namespaces(Correlator::new(topology)),
        [
            None,
            Some(SBOX_NS),
            Some(OTHER_NODE_NS),
            Some(OTHER_NODE_NS)
        ]
    );
}
