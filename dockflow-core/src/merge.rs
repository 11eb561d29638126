//! Several nodes' recordings as one story. Each node's recording is correlated as its replay
//! would be; then a packet that left one node through an overlay's VXLAN port is joined to
//! the same packet coming in through the VXLAN port of another node: the same VNI and the
//! same inner headers (addresses, ports, IP id, length), which VXLAN carries unchanged.
//!
//! The nodes' clocks are their own (each recording's events are in its kernel's monotonic
//! time, with the offset to its wall clock). Wall clocks of a cluster agree to within what
//! NTP manages, not to the microsecond; the packets that crossed both ways align them better:
//! with `d1` the median delay seen from node A to node B and `d2` from B to A, B's clock is
//! `(d1 - d2) / 2` ahead of A's and the wire takes `(d1 + d2) / 2` (as NTP reasons).

use std::{net::IpAddr, path::Path};

use anyhow::Result;
use serde::Serialize;

use crate::{
    model::{Outer, Packet, topology::Topology},
    output::{
        PACKET_IDLE_NS,
        source::{Input, Recorded},
    },
    path::{
        correlate::Correlator,
        explain::{self, Fact, Role, Step},
        hop::{Direction, HopKind, Layer, PacketPath},
    },
    record::{ReadError, Replay},
};

/// One node's recording, correlated.
pub struct NodePaths {
    /// The node's name (from the recording, else the file's).
    pub node: String,
    /// Its swarm address, when the recording says.
    pub address: Option<IpAddr>,
    /// Its topology as it was last (names for its hops).
    pub topology: Topology,
    pub paths: Vec<PacketPath>,
    /// Its wall clock minus its monotonic clock.
    pub clock_offset_ns: i64,
    /// Where the recording was cut short, if it was.
    pub cut: Option<ReadError>,
}

/// Reads and correlates one node's recording, as its replay would.
pub fn read(path: &Path) -> Result<NodePaths> {
    let replay = Replay::open(path)?;
    let header = replay.header.clone();
    let name = path.display().to_string();
    let mut recorded = Recorded::new(replay, header.decoder.clone(), name);
    let mut correlator = Correlator::new(header.topology.clone()).one_node_of_several();
    let mut paths = Vec::new();
    while let Some(input) = recorded.next_recorded()? {
        match input {
            Input::Event(event) => correlator.push(event),
            Input::Trace(trace) => correlator.push_trace(trace),
            Input::Topology(topology) => correlator.set_topology(topology),
            Input::Tick(now_ns) => paths.extend(correlator.flush_idle(now_ns, PACKET_IDLE_NS)),
            // Only a live run has these.
            Input::NotShown { .. } | Input::LostBetween { .. } => {}
        }
    }
    paths.extend(correlator.finish());
    let file_stem = path.file_stem().map_or(path.display().to_string(), |s| {
        s.to_string_lossy().into_owned()
    });
    Ok(NodePaths {
        node: header.origin.node.clone().unwrap_or(file_stem),
        address: header.origin.node_address,
        topology: correlator.topology().clone(),
        paths,
        clock_offset_ns: header.origin.clock_offset_ns,
        cut: recorded.cut.take(),
    })
}

/// Where a packet went through a VXLAN port: its node and path, the VNI, the VXLAN packet
/// where the node's own interface was seen sending or receiving it, and when it left or
/// arrived (wall clock, not yet aligned).
#[derive(Clone, Copy)]
struct TunnelEnd {
    node: usize,
    path: usize,
    vni: u32,
    /// The UDP port the VXLAN port sends to (an exit's, where known).
    udp_port: Option<u16>,
    outer: Option<Outer>,
    wall_ns: i64,
}

/// A packet's way into or out of a tunnel on one node.
struct TunnelHop<'a> {
    vni: u32,
    udp_port: Option<u16>,
    /// The inner headers at the VXLAN port.
    packet: &'a Packet,
    /// When it left the node (or arrived): on the node's own interface where that was seen,
    /// else at the VXLAN port.
    ts_ns: u64,
    outer: Option<Outer>,
}

/// The inner headers VXLAN carries unchanged between nodes.
fn inner_key(p: &Packet) -> (IpAddr, IpAddr, Option<u16>, Option<u16>, u8, u16, u16) {
    (p.src, p.dst, p.sport, p.dport, p.protocol.0, p.ip_id, p.len)
}

/// The packet's exit into a tunnel (`exit`: its last bridge hop sends it to another node) or
/// its entry from one (its first bridge hop brings it from another node).
fn tunnel_hop(path: &PacketPath, exit: bool) -> Option<TunnelHop<'_>> {
    let mut bridged = path.hops.iter().filter(|h| h.layer == Layer::L2);
    let hop = if exit {
        bridged.next_back()?
    } else {
        bridged.next()?
    };
    let (vni, udp_port) = match (&hop.kind, exit) {
        (HopKind::ToTunnel { vni, udp_port, .. }, true) => (*vni, *udp_port),
        (HopKind::FromTunnel { vni, .. }, false) => (*vni, None),
        _ => return None,
    };
    // The VXLAN packet on the node's own interface: after the port on the way out, before it
    // on the way in.
    let underlay = path.hops.iter().find_map(|h| match (&h.kind, exit) {
        (HopKind::ToNode { outer, .. }, true) | (HopKind::FromNode { outer, .. }, false)
            if outer.vni == vni =>
        {
            Some((h.event.ts_ns, *outer))
        }
        _ => None,
    });
    Some(TunnelHop {
        vni,
        udp_port,
        packet: hop.event.packet.as_ref().unwrap_or(&path.packet),
        ts_ns: underlay.map_or(hop.event.ts_ns, |(ts, _)| ts),
        outer: underlay.map(|(_, outer)| outer),
    })
}

fn exit_of(path: &PacketPath) -> Option<TunnelHop<'_>> {
    tunnel_hop(path, true)
}

fn entry_of(path: &PacketPath) -> Option<TunnelHop<'_>> {
    tunnel_hop(path, false)
}

/// A packet that left one node's tunnel and came in through another's, with the delay
/// between (wall clocks as they are).
#[derive(Clone, Copy)]
struct Pair {
    exit: TunnelEnd,
    entry: TunnelEnd,
}

impl Pair {
    fn delay_ns(&self) -> i64 {
        self.entry.wall_ns - self.exit.wall_ns
    }
}

/// How far apart the wall clocks of two nodes may be, at most, for a pair to count.
const CLOCKS_APART_MAX_NS: i64 = 5_000_000_000;

/// Pairs each exit with the entry on another node that shows the same packet closest in time.
fn pairs(nodes: &[NodePaths]) -> Vec<Pair> {
    let wall = |node: &NodePaths, ts: u64| ts as i64 + node.clock_offset_ns;
    let ends = |of: fn(&PacketPath) -> Option<TunnelHop<'_>>| {
        let mut ends = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for (p, path) in node.paths.iter().enumerate() {
                if let Some(hop) = of(path) {
                    let end = TunnelEnd {
                        node: n,
                        path: p,
                        vni: hop.vni,
                        udp_port: hop.udp_port,
                        outer: hop.outer,
                        wall_ns: wall(node, hop.ts_ns),
                    };
                    ends.push((inner_key(hop.packet), end));
                }
            }
        }
        ends
    };
    let exits = ends(exit_of);
    let mut entries = ends(entry_of);
    let mut out = Vec::new();
    for (key, exit) in exits {
        let best = entries
            .iter()
            .enumerate()
            .filter(|(_, (k, e))| *k == key && e.vni == exit.vni && e.node != exit.node)
            .map(|(i, (_, e))| (i, (e.wall_ns - exit.wall_ns).abs()))
            .filter(|(_, apart)| *apart < CLOCKS_APART_MAX_NS)
            .min_by_key(|(_, apart)| *apart);
        if let Some((i, _)) = best {
            let (_, entry) = entries.swap_remove(i);
            out.push(Pair { exit, entry });
        }
    }
    out
}

fn median(values: &mut [i64]) -> Option<i64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

/// How the clocks were aligned, for each node after the first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alignment {
    /// Packets crossed both ways: the node's clock is `ahead_ns` ahead of the first node's.
    ByPackets { ahead_ns: i64, pairs: usize },
    /// Too few packets crossed (none back the other way): the wall clocks are taken as they
    /// are.
    WallClocks,
}

/// Each node's clock correction against the first node's (to subtract from its wall times).
fn align(nodes: &[NodePaths], pairs: &[Pair]) -> Vec<Alignment> {
    (0..nodes.len())
        .map(|n| {
            if n == 0 {
                return Alignment::ByPackets {
                    ahead_ns: 0,
                    pairs: 0,
                };
            }
            let mut there: Vec<i64> = pairs
                .iter()
                .filter(|p| p.exit.node == 0 && p.entry.node == n)
                .map(Pair::delay_ns)
                .collect();
            let mut back: Vec<i64> = pairs
                .iter()
                .filter(|p| p.exit.node == n && p.entry.node == 0)
                .map(Pair::delay_ns)
                .collect();
            let count = there.len() + back.len();
            match (median(&mut there), median(&mut back)) {
                (Some(d1), Some(d2)) => Alignment::ByPackets {
                    ahead_ns: (d1 - d2) / 2,
                    pairs: count,
                },
                _ => Alignment::WallClocks,
            }
        })
        .collect()
}

fn ahead_ns(alignment: &Alignment) -> i64 {
    match alignment {
        Alignment::ByPackets { ahead_ns, .. } => *ahead_ns,
        Alignment::WallClocks => 0,
    }
}

/// One packet on one node.
#[derive(Serialize)]
pub struct Leg<'a> {
    pub node: &'a str,
    /// The node's place in the merge (for its topology).
    #[serde(skip)]
    pub node_index: usize,
    #[serde(flatten)]
    pub path: &'a PacketPath,
}

/// One packet across the nodes it crossed, in the order it crossed them.
#[derive(Serialize)]
pub struct Merged<'a> {
    /// Headers as first seen.
    pub packet: &'a Packet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    pub legs: Vec<Leg<'a>>,
    /// Its steps on each node in turn, and the crossings between.
    pub steps: Vec<NodeStep<'a>>,
    /// Aligned wall time of its first hop.
    #[serde(skip)]
    pub first_wall_ns: i64,
}

/// A step of a merged packet's account, with the node it happened on (none for a crossing).
#[derive(Serialize)]
pub struct NodeStep<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<&'a str>,
    #[serde(flatten)]
    pub step: Step,
}

/// Everything merged: each packet once, the clocks' alignment per node.
pub struct Story<'a> {
    pub packets: Vec<Merged<'a>>,
    pub alignment: Vec<Alignment>,
}

/// Stitches the nodes' packets: a packet that crossed nodes becomes one, its legs in order;
/// the others stay as they were, with their node named.
pub fn stitch(nodes: &[NodePaths]) -> Story<'_> {
    let pairs = pairs(nodes);
    let alignment = align(nodes, &pairs);
    let next_of = |node: usize, path: usize| {
        pairs
            .iter()
            .find(|p| p.exit.node == node && p.exit.path == path)
    };
    let continues: std::collections::HashSet<(usize, usize)> =
        pairs.iter().map(|p| (p.entry.node, p.entry.path)).collect();
    let aligned =
        |node: usize, ts: u64| ts as i64 + nodes[node].clock_offset_ns - ahead_ns(&alignment[node]);
    let mut packets = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (p, first) in node.paths.iter().enumerate() {
            if continues.contains(&(n, p)) {
                continue;
            }
            let role = match first.direction {
                Some(Direction::Reply) => Role::Reply,
                _ => Role::Request,
            };
            let mut legs = vec![Leg {
                node: &node.node,
                node_index: n,
                path: first,
            }];
            let mut steps: Vec<NodeStep> = explain::steps_of(first, role)
                .into_iter()
                .map(|step| NodeStep {
                    node: Some(&node.node),
                    step,
                })
                .collect();
            let (mut at_node, mut at_path) = (n, p);
            while let Some(pair) = next_of(at_node, at_path) {
                let (from, to) = (&nodes[at_node], &nodes[pair.entry.node]);
                // The delay as the wall clocks say, less how far the receiver's is ahead.
                let gap_ns = pair.delay_ns()
                    - (ahead_ns(&alignment[pair.entry.node]) - ahead_ns(&alignment[at_node]));
                steps.push(NodeStep {
                    node: None,
                    step: explain::step(Fact::CrossesNodes {
                        role,
                        from: from.node.clone(),
                        to: to.node.clone(),
                        from_address: from.address.map(|a| a.to_string()),
                        to_address: to.address.map(|a| a.to_string()),
                        vni: pair.exit.vni,
                        udp_port: pair.exit.udp_port,
                        outer: pair.exit.outer.filter(|_| pair.entry.outer.is_some()),
                        gap_ns,
                    }),
                });
                let path = &to.paths[pair.entry.path];
                legs.push(Leg {
                    node: &to.node,
                    node_index: pair.entry.node,
                    path,
                });
                steps.extend(
                    explain::steps_of(path, role)
                        .into_iter()
                        .map(|step| NodeStep {
                            node: Some(&to.node),
                            step,
                        }),
                );
                (at_node, at_path) = (pair.entry.node, pair.entry.path);
            }
            let first_ts = first.hops.first().map_or(0, |h| h.event.ts_ns);
            packets.push(Merged {
                packet: &first.packet,
                direction: first.direction,
                legs,
                steps,
                first_wall_ns: aligned(n, first_ts),
            });
        }
    }
    packets.sort_by_key(|m| m.first_wall_ns);
    Story { packets, alignment }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Event, IpProto, ProbePoint,
        topology::{InterfaceNames, NamespaceBridge},
    };

    const OVERLAY_NS: u32 = 40;
    const VXLAN0: u32 = 3;
    const TASK_VETH: u32 = 4;
    /// The node's own interface, in the host's namespace (1).
    const UPLINK: u32 = 7;

    /// A node whose overlay bridge has a task's veth and the VXLAN device.
    fn topology() -> Topology {
        let mut names = InterfaceNames::new(1);
        names.add(OVERLAY_NS, VXLAN0, "overlay skein:vxlan0".into());
        names.add(OVERLAY_NS, TASK_VETH, "overlay skein:veth1".into());
        names.label_namespace(OVERLAY_NS, "overlay skein".into());
        names.add(1, UPLINK, "uplink0".into());
        Topology {
            names,
            namespace_bridges: vec![NamespaceBridge {
                netns: OVERLAY_NS,
                ifindex: 2,
                ports: vec![(VXLAN0, None), (TASK_VETH, None)],
                tunnels: vec![(VXLAN0, 4097, true)],
                // As made by `docker swarm init --data-path-port 7789`.
                vxlan_port: Some(7789),
            }],
            ..Topology::default()
        }
    }

    fn packet(src: &str, dst: &str, ip_id: u16) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: IpProto::UDP,
            sport: Some(40000),
            dport: Some(7500),
            ttl: 64,
            ip_id,
            len: 51,
            tcp_flags: None,
            arp: None,
        }
    }

    fn hop(ts_ns: u64, probe: ProbePoint, ifindex: u32, packet: &Packet) -> Event {
        Event {
            ts_ns,
            skb_id: None,
            probe,
            ifindex,
            netns: Some(OVERLAY_NS),
            packet: Some(packet.clone()),
            netfilter: None,
            conntrack: None,
            drop: None,
            capture: None,
            outer: None,
            sample: false,
        }
    }

    /// The VXLAN packet carrying `packet` on a node's own interface.
    fn on_uplink(ts_ns: u64, probe: ProbePoint, outer: Outer, packet: &Packet) -> Event {
        Event {
            netns: Some(1),
            outer: Some(Box::new(outer)),
            ..hop(ts_ns, probe, UPLINK, packet)
        }
    }

    /// A node's paths from its events: (ts, probe, ifindex, packet).
    fn node(name: &str, clock_offset_ns: i64, events: Vec<Event>) -> NodePaths {
        let mut correlator = Correlator::new(topology());
        for event in events {
            correlator.push(event);
        }
        NodePaths {
            node: name.into(),
            address: None,
            topology: topology(),
            paths: correlator.finish(),
            clock_offset_ns,
            cut: None,
        }
    }

    /// Node a sends `out` to node b at `at` (a's clock), which has it `wire` later; b answers
    /// with `back` `think` later, which a has `wire` after that. b's wall clock is `ahead`
    /// ahead of a's.
    fn exchange(ahead: i64, wire: u64) -> (NodePaths, NodePaths) {
        let (a, b) = exchange_events(wire);
        (node("node-a", 0, a), node("node-b", ahead, b))
    }

    /// [`exchange`]'s events on each node.
    fn exchange_events(wire: u64) -> (Vec<Event>, Vec<Event>) {
        let (out, back) = (
            packet("10.233.9.2", "10.233.9.3", 101),
            packet("10.233.9.3", "10.233.9.2", 202),
        );
        let at = 1_000_000_000u64;
        let think = 300_000u64;
        // Both monotonic clocks read `at` at the same instant; b's wall clock runs ahead.
        let a = vec![
            hop(at, ProbePoint::TcIngress, TASK_VETH, &out),
            hop(at + 10_000, ProbePoint::TcEgress, VXLAN0, &out),
            hop(
                at + 2 * wire + think + 10_000,
                ProbePoint::TcIngress,
                VXLAN0,
                &back,
            ),
            hop(
                at + 2 * wire + think + 20_000,
                ProbePoint::TcEgress,
                TASK_VETH,
                &back,
            ),
        ];
        let b = vec![
            hop(at + wire + 10_000, ProbePoint::TcIngress, VXLAN0, &out),
            hop(at + wire + 20_000, ProbePoint::TcEgress, TASK_VETH, &out),
            hop(at + wire + think, ProbePoint::TcIngress, TASK_VETH, &back),
            hop(
                at + wire + think + 10_000,
                ProbePoint::TcEgress,
                VXLAN0,
                &back,
            ),
        ];
        (a, b)
    }

    fn crossing_gaps(story: &Story) -> Vec<i64> {
        story
            .packets
            .iter()
            .flat_map(|m| &m.steps)
            .filter_map(|s| match s.step.fact {
                Fact::CrossesNodes { gap_ns, .. } => Some(gap_ns),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_packet_through_the_tunnel_is_one_packet_across_both_nodes() {
        let (a, b) = exchange(0, 200_000);
        let nodes = [a, b];
        let story = stitch(&nodes);
        assert_eq!(
            story.packets.len(),
            2,
            "the request and the reply, once each"
        );
        let routes: Vec<Vec<&str>> = story
            .packets
            .iter()
            .map(|m| m.legs.iter().map(|l| l.node).collect())
            .collect();
        assert_eq!(routes, [["node-a", "node-b"], ["node-b", "node-a"]]);
        assert_eq!(crossing_gaps(&story), [200_000, 200_000]);
    }

    #[test]
    fn the_clocks_are_aligned_by_the_packets_that_crossed_both_ways() {
        // b's wall clock is 3 ms ahead: as they are, the way there looks 3.2 ms long and the
        // way back negative.
        let (a, b) = exchange(3_000_000, 200_000);
        let nodes = [a, b];
        let story = stitch(&nodes);
        assert_eq!(
            story.alignment[1],
            Alignment::ByPackets {
                ahead_ns: 3_000_000,
                pairs: 2
            }
        );
        assert_eq!(crossing_gaps(&story), [200_000, 200_000]);
        // Told in the order it happened, on the aligned clock.
        assert_eq!(story.packets[0].legs[0].node, "node-a");
    }

    #[test]
    fn one_way_traffic_leaves_the_wall_clocks_as_they_are() {
        let (a, mut b) = exchange(0, 200_000);
        // Node b saw nothing come back through its tunnel... nor send: only the way there.
        b.paths.retain(|p| p.packet.ip_id == 101);
        let mut a = a;
        a.paths.retain(|p| p.packet.ip_id == 101);
        let nodes = [a, b];
        let story = stitch(&nodes);
        assert_eq!(story.alignment[1], Alignment::WallClocks);
        assert_eq!(story.packets.len(), 1);
    }

    #[test]
    fn packets_with_other_headers_or_another_vni_are_not_joined() {
        let (a, mut b) = exchange(0, 200_000);
        for path in &mut b.paths {
            for hop in &mut path.hops {
                if let HopKind::FromTunnel { vni, .. } | HopKind::ToTunnel { vni, .. } =
                    &mut hop.kind
                {
                    *vni = 4098;
                }
            }
        }
        let nodes = [a, b];
        let story = stitch(&nodes);
        assert_eq!(story.packets.len(), 4, "nothing joined across another VNI");
        assert!(story.packets.iter().all(|m| m.legs.len() == 1));
    }

    #[test]
    fn the_vxlan_packet_seen_leaving_one_node_and_reaching_the_other_is_the_crossing() {
        let (mut a, mut b) = exchange_events(200_000);
        let outer = Outer {
            src: "10.231.9.11".parse().unwrap(),
            sport: 40123,
            dst: "10.231.9.12".parse().unwrap(),
            dport: 4789,
            vni: 4097,
        };
        let back = Outer {
            src: outer.dst,
            dst: outer.src,
            ..outer
        };
        // Each way, the packet leaves the sender's uplink 5 us after its VXLAN port and
        // reaches the receiver's uplink 5 us before its VXLAN port has it.
        let (request, reply) = (a[0].packet.clone().unwrap(), b[2].packet.clone().unwrap());
        let uplinks_a = [
            on_uplink(
                a[1].ts_ns + 5_000,
                ProbePoint::TunnelEgress,
                outer,
                &request,
            ),
            on_uplink(a[2].ts_ns - 5_000, ProbePoint::TunnelIngress, back, &reply),
        ];
        let uplinks_b = [
            on_uplink(
                b[0].ts_ns - 5_000,
                ProbePoint::TunnelIngress,
                outer,
                &request,
            ),
            on_uplink(b[3].ts_ns + 5_000, ProbePoint::TunnelEgress, back, &reply),
        ];
        a.extend(uplinks_a);
        b.extend(uplinks_b);
        a.sort_by_key(|e| e.ts_ns);
        b.sort_by_key(|e| e.ts_ns);
        let nodes = [node("node-a", 0, a), node("node-b", 0, b)];
        let story = stitch(&nodes);
        let crossing = story.packets[0]
            .steps
            .iter()
            .find_map(|s| match &s.step.fact {
                Fact::CrossesNodes { outer, gap_ns, .. } => Some((*outer, *gap_ns)),
                _ => None,
            });
        assert_eq!(crossing, Some((Some(outer), 190_000)));
        let text = crate::render::merged::merged_block(
            1,
            &story.packets[0],
            &nodes,
            &crate::render::Style { color: false },
        );
        for words in [
            "vxlan out         uplink0",
            "~~ VXLAN UDP 10.231.9.11:40123 -> 10.231.9.12:4789 VNI 4097 (seen on both nodes)",
            "[node-a] The VXLAN packet carrying it leaves the node through uplink0: UDP 10.231.9.11:40123 -> 10.231.9.12:4789 VNI 4097.",
            "[node-b] It arrives on uplink0 inside a VXLAN packet",
            "[node-b] The kernel unwraps the frame (VNI 4097) and it enters the bridge through overlay skein:vxlan0 (L2).",
        ] {
            assert!(text.contains(words), "no {words:?} in:\n{text}");
        }
    }

    #[test]
    fn a_merged_packet_reads_node_by_node_with_the_crossing_between() {
        let (mut a, mut b) = exchange(0, 200_000);
        a.address = Some("10.231.9.11".parse().unwrap());
        b.address = Some("10.231.9.12".parse().unwrap());
        let nodes = [a, b];
        let story = stitch(&nodes);
        let text = crate::render::merged::merged_block(
            1,
            &story.packets[0],
            &nodes,
            &crate::render::Style { color: false },
        );
        let at = |what: &str| {
            text.find(what)
                .unwrap_or_else(|| panic!("no {what:?} in:\n{text}"))
        };
        assert!(at("across node-a -> node-b") < at("  on node-a:"));
        assert!(
            at("  on node-a:")
                < at("~~ VXLAN VNI 4097, 10.231.9.11 -> 10.231.9.12 UDP to port 7789")
        );
        assert!(at("~~ VXLAN VNI 4097") < at("  on node-b:"));
        assert!(at("[node-a] ") < at("It crosses from node node-a (10.231.9.11)"));
        at("a UDP packet to port 7789 between the two nodes' addresses");
        assert!(at("It crosses from node") < at("[node-b] "));
    }
}
