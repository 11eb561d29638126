//! The routing-mesh guest (vm/mesh.sh): Debian's Docker engine in a one-node swarm on a kernel
//! with IPVS, a service publishing a UDP port in ingress mode, a client outside asking the
//! host's port. Judged: the request DNATed on the host into `ingress_sbox`, balanced there by
//! IPVS to the task (both rewrites told), the reply joined to the same connection and its
//! rewrites undone on the way back.

use std::time::Duration;

use anyhow::Result;
use dockflow_lab::stream;
use serde_json::Value;

use super::{Guest, read_console, report};

/// The guest's outside client and the service's published port (see vm/mesh.sh).
const CLIENT: &str = "10.199.0.2";
const PORT: u64 = 7300;
const SERVICE: &str = "kestrel";

pub(super) const GUEST: Guest = Guest {
    name: "mesh",
    init: "mesh.sh",
    // The bridge guest's, and what the engine's rules, overlays and IPVS need.
    modules: &[
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
    ],
    // Debian's engine, as the tests' first engine is.
    tools: &[
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
    ],
    directories: &["/usr/lib/x86_64-linux-gnu/xtables"],
    memory_mib: 3072,
    cpus: 2,
    timeout: Duration::from_secs(300),
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
