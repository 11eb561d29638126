//! The routing-mesh guests, on a kernel with IPVS. vm/mesh.sh: Debian's Docker engine in a
//! one-node swarm, a service publishing a UDP port in ingress mode, a client outside asking the
//! host's port; judged: the request DNATed on the host into `ingress_sbox`, balanced there by
//! IPVS to the task (both rewrites told), the reply joined to the same connection and its
//! rewrites undone on the way back. vm/mesh-nodes.sh: two engines in namespaces of their own,
//! one swarm, the task on the node the client does not ask; one dockflow per node, merged;
//! judged: the request balanced on the first node and carried to the task on the second in
//! VXLAN, the reply back the same way.

use std::time::Duration;

use anyhow::Result;
use dockflow_lab::stream;
use serde_json::Value;

use super::{Guest, read_console, report};

/// The guest's outside client and the service's published port (see vm/mesh.sh).
const CLIENT: &str = "10.199.0.2";
const PORT: u64 = 7300;
const SERVICE: &str = "kestrel";

/// The bridge guest's modules, and what the engine's rules, overlays and IPVS need.
const MODULES: &[&[&str]] = &[
    super::MODULES,
    &[
        "dummy",
        "vxlan",
        "overlay",
        "nft_redir",
        "nft_counter",
        "nft_compat",
        "nft_fib_ipv4",
        "nft_reject_ipv4",
        "nf_conntrack_netlink",
        "xt_conntrack",
        "xt_addrtype",
        "xt_MASQUERADE",
        "xt_REDIRECT",
        "xt_nat",
        "xt_mark",
        "xt_tcpudp",
        "xt_multiport",
        "xt_comment",
        "xt_physdev",
        "xt_set",
        "ipt_REJECT",
        "ip_vs",
        "ip_vs_rr",
        "xt_ipvs",
    ],
];

/// Debian's engine, as the tests' first engine is.
const ENGINE: &[&str] = &[
    "/usr/sbin/dockerd",
    "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2",
    "/usr/sbin/runc",
    "/usr/bin/docker",
    "/usr/sbin/iptables",
    "/usr/sbin/iptables-save",
    "/usr/sbin/iptables-restore",
    "/usr/sbin/ip6tables",
    "/usr/sbin/ip6tables-save",
    "/usr/sbin/ip6tables-restore",
];

/// The iptables extensions the engine's rules load.
const ENGINE_DIRECTORIES: &[&str] = &["/usr/lib/x86_64-linux-gnu/xtables"];

pub(super) const GUEST: Guest = Guest {
    name: "mesh",
    init: "mesh.sh",
    modules: MODULES,
    tools: ENGINE,
    directories: ENGINE_DIRECTORIES,
    memory_mib: 3072,
    cpus: 2,
    timeout: Duration::from_secs(300),
};

pub(super) const ACROSS_NODES: Guest = Guest {
    name: "mesh-nodes",
    init: "mesh-nodes.sh",
    modules: MODULES,
    tools: ENGINE,
    directories: ENGINE_DIRECTORIES,
    memory_mib: 4096,
    cpus: 2,
    timeout: Duration::from_secs(420),
};

pub(super) fn judge(console: &str) -> Result<()> {
    let (stderr, lines) = read_console(console)?;
    let packets = stream::packets(&lines);
    let steps = |p: &Value| stream::explanation_steps(&lines, &p["connection"]);
    let step = |steps: &[Value], kind: &str, role: &str| -> Option<Value> {
        steps
            .iter()
            .find(|s| s["kind"] == kind && s["role"] == role)
            .cloned()
    };
    // The client may have asked more than once (until the mesh was ready): the answered one.
    let exchange = packets
        .iter()
        .copied()
        .filter(|p| {
            p["direction"] == "request"
                && p["packet"]["src"] == CLIENT
                && p["packet"]["dport"] == PORT
        })
        .find_map(|request| {
            let reply = packets
                .iter()
                .copied()
                .find(|r| r["direction"] == "reply" && r["connection"] == request["connection"])?;
            Some((request, reply))
        });
    let no_exchange = || {
        format!(
            "no request from {CLIENT} to port {PORT} with a reply in its connection among {} packets",
            packets.len()
        )
    };
    let ipvs_rewrites = |nat: &Option<Value>| -> Vec<String> {
        nat.as_ref()
            .and_then(|s| s["rewrites"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|r| r["field"].as_str().map(str::to_string))
            .collect()
    };
    let scenarios: Vec<(&str, Result<(), String>)> = vec![
        (
            "the service's task is followed into the ingress overlay's namespace",
            if stderr
                .iter()
                .any(|l| l.contains("attached  tc ingress on overlay ingress:"))
            {
                Ok(())
            } else {
                Err(format!("dockflow said: {stderr:#?}"))
            },
        ),
        (
            "routing mesh request: DNAT on the host into ingress_sbox, IPVS there to the task (destination and source rewritten), the task's port, outcome balanced_to_task",
            match exchange {
                None => Err(no_exchange()),
                Some((request, _)) => {
                    let steps = steps(request);
                    let host_dnat = steps.iter().any(|s| {
                        s["kind"] == "nat" && s["nat"] == "dnat" && s["role"] == "request"
                    });
                    let nat = step(&steps, "nat_in_namespace", "request")
                        .filter(|s| s["namespace"] == "ingress_sbox");
                    let backend = nat.as_ref().is_some_and(|s| {
                        s["backend"]
                            .as_str()
                            .is_some_and(|b| b.starts_with(&format!("{SERVICE}.")))
                    });
                    let rewrites = ipvs_rewrites(&nat);
                    let balanced = step(&steps, "outcome", "request")
                        .is_some_and(|s| s["outcome"] == "balanced_to_task");
                    let task_port = request["hops"].as_array().into_iter().flatten().any(|h| {
                        h["kind"] == "to_port"
                            && h["port"].as_str().is_some_and(|p| {
                                p.starts_with("overlay ingress:")
                                    && p.contains(&format!("({SERVICE}."))
                            })
                    });
                    let ok = host_dnat
                        && backend
                        && rewrites.contains(&"destination".to_string())
                        && rewrites.contains(&"source".to_string())
                        && balanced
                        && task_port;
                    if ok {
                        Ok(())
                    } else {
                        Err(format!(
                            "host DNAT {host_dnat}, IPVS rewrites {rewrites:?} to the task {backend}, balanced {balanced}, task's port {task_port}; hops {:?}; steps: {steps:#?}",
                            stream::hop_kinds(request)
                        ))
                    }
                }
            },
        ),
        (
            "routing mesh reply: the same connection, sent by the task (its own namespace), IPVS undoes both rewrites in ingress_sbox, passed up docker_gwbridge, routed back out to the client",
            match exchange {
                None => Err(no_exchange()),
                Some((_, reply)) => {
                    let steps = steps(reply);
                    let from_task =
                        step(&steps, "start", "reply").is_some_and(|s| s["origin"] == "container");
                    let nat = step(&steps, "nat_in_namespace", "reply")
                        .filter(|s| s["namespace"] == "ingress_sbox");
                    let rewrites = ipvs_rewrites(&nat);
                    let kinds = stream::hop_kinds(reply);
                    let out_to_client = reply["hops"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|h| h["kind"] == "transmit" && h["interface"] == "dfext0");
                    let ok = from_task
                        && rewrites.len() == 2
                        && kinds.iter().any(|k| k == "l2:passed_up")
                        && kinds.iter().any(|k| k == "l3:hook")
                        && out_to_client;
                    if ok {
                        Ok(())
                    } else {
                        Err(format!(
                            "from the task {from_task}, IPVS undone {rewrites:?}, out to the client {out_to_client}; hops {kinds:?}; steps: {steps:#?}"
                        ))
                    }
                }
            },
        ),
    ];
    report(&GUEST, &scenarios)
}

/// The two-node guest: the client asks node-a, the task runs on node-b.
pub(super) fn judge_across_nodes(console: &str) -> Result<()> {
    let (stderr, merged) = read_console(console)?;
    let packets: Vec<&Value> = merged
        .iter()
        .filter(|l| l["type"] == "merged_packet")
        .collect();
    let route = |p: &Value| -> Vec<String> {
        p["legs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["node"].as_str().map(str::to_string))
            .collect()
    };
    let step = |p: &Value, node: Option<&str>, kind: &str| -> Option<Value> {
        p["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["kind"] == kind && s["node"].as_str() == node)
            .cloned()
    };
    let across = |src: &str, route_wanted: [&str; 2]| {
        packets
            .iter()
            .copied()
            .find(|p| p["packet"]["src"] == src && route(p) == route_wanted)
    };
    let request = across(CLIENT, ["node-a", "node-b"]);
    let reply = packets.iter().copied().find(|p| {
        p["direction"] == "reply"
            && route(p) == ["node-b", "node-a"]
            && p["packet"]["protocol"] == 17
    });
    let outer_between = |p: &Value, from: &str, to: &str| {
        step(p, None, "crosses_nodes").is_some_and(|c| {
            c["outer"]["src"] == from && c["outer"]["dst"] == to && c["outer"]["dport"] == 4789
        })
    };
    let scenarios: Vec<(&str, Result<(), String>)> = vec![
        (
            "a node without the service's task follows its routing mesh",
            if stderr
                .iter()
                .any(|l| l.contains("has no task on this node"))
            {
                Ok(())
            } else {
                Err(format!("node-a's dockflow said: {stderr:#?}"))
            },
        ),
        (
            "across nodes: balanced by IPVS on node-a, carried in VXLAN (seen leaving node-a and reaching node-b) to the task on node-b",
            match request {
                None => Err(format!(
                    "no merged request from {CLIENT} across node-a -> node-b among {} merged packets",
                    packets.len()
                )),
                Some(p) => {
                    let ipvs = step(p, Some("node-a"), "nat_in_namespace")
                        .is_some_and(|s| s["namespace"] == "ingress_sbox");
                    let elsewhere = step(p, Some("node-a"), "outcome")
                        .is_some_and(|s| s["outcome"] == "balanced_to_other_node");
                    let carried = outer_between(p, "10.231.77.11", "10.231.77.12");
                    let to_task = p["legs"][1]["hops"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|h| {
                            h["kind"] == "to_port"
                                && h["port"]
                                    .as_str()
                                    .is_some_and(|port| port.contains("(heron."))
                        });
                    if ipvs && elsewhere && carried && to_task {
                        Ok(())
                    } else {
                        Err(format!(
                            "IPVS on node-a {ipvs}, told as sent to another node {elsewhere}, VXLAN observed {carried}, the task's port on node-b {to_task}: {p:#}"
                        ))
                    }
                }
            },
        ),
        (
            "the reply across nodes: node-b back to node-a in VXLAN, IPVS undone in node-a's ingress_sbox, out to the client",
            match reply {
                None => Err("no merged reply across node-b -> node-a".into()),
                Some(p) => {
                    let carried = outer_between(p, "10.231.77.12", "10.231.77.11");
                    let undone = step(p, Some("node-a"), "nat_in_namespace")
                        .is_some_and(|s| s["namespace"] == "ingress_sbox");
                    let out = p["legs"][1]["hops"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|h| h["kind"] == "transmit" && h["interface"] == "dfext0");
                    if carried && undone && out {
                        Ok(())
                    } else {
                        Err(format!(
                            "VXLAN observed {carried}, IPVS undone on node-a {undone}, out to the client {out}: {p:#}"
                        ))
                    }
                }
            },
        ),
    ];
    report(&ACROSS_NODES, &scenarios)
}
