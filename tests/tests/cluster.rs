//! Several nodes simulated on this machine (`dockflow_lab::cluster`: one engine per network
//! namespace, joined into a swarm), one dockflow per node as on a real cluster: a task on one
//! node asks a task on the other over their overlay network. Each node's dockflow tells its own
//! side: the request leaving through the VXLAN device on the first node and coming in through
//! it on the second, the reply the other way; `dockflow merge` joins the two recordings into
//! one packet across both nodes.

use std::path::Path;

use dockflow_lab::{cluster, cluster::Node, lab};
use dockflow_tests::{
    Dockflow, catalogue::*, dockflow_bin, json_events, lab_bin, lab_lock, our_bpf_programs,
};
use serde_json::Value;

const OVERLAY: &str = "wicker";
const OVERLAY_SUBNET: &str = "10.233.10.0/24";
const SERVICE: &str = "curlew";
const PORT: u16 = 7500;

/// The lab (for its image) and a two-node cluster, taken down again when dropped.
struct ClusterLab(Vec<Node>);

impl ClusterLab {
    fn up() -> Self {
        lab::up(&lab_bin()).unwrap();
        let nodes = cluster::up(2).unwrap();
        ClusterLab(nodes)
    }
}

impl Drop for ClusterLab {
    fn drop(&mut self) {
        let cluster = cluster::down();
        let lab = lab::down();
        if !std::thread::panicking() {
            cluster.unwrap();
            lab.unwrap();
        }
    }
}

/// dockflow inside `node`'s namespace, on its engine, as a user runs one per node.
fn dockflow_on(node: &Node, args: &[&str]) -> Dockflow {
    let netns = format!("--net={}", node.netns_path().display());
    let binary = dockflow_bin().to_string_lossy().into_owned();
    let args = [&[netns.as_str(), binary.as_str()], args].concat();
    Dockflow::start_binary(
        Path::new("nsenter"),
        &args,
        &[("DOCKER_HOST", &node.docker_host())],
    )
}

fn stop(dockflow: Dockflow) -> Vec<Value> {
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "dockflow failed: {stderr:#?}");
    json_events(&stdout)
}

/// The bridge hops of `packet` as (kind, port), each once (tc and the device tracepoints
/// both see a port), e.g. [("from_port", ...), ("to_tunnel", ...)].
fn bridge_hops(packet: &Value) -> Vec<(String, String)> {
    let mut hops: Vec<(String, String)> = packet["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["layer"] == "l2")
        .map(|h| {
            let place = h["port"].as_str().unwrap_or("").to_string();
            (h["kind"].as_str().unwrap().to_string(), place)
        })
        .collect();
    hops.dedup();
    hops
}

#[test]
fn a_request_to_a_task_on_another_node_leaves_in_vxlan_there_and_is_told_on_both_nodes() {
    let _lock = lab_lock();
    let lab = ClusterLab::up();
    let (a, b) = (&lab.0[0], &lab.0[1]);
    a.docker(&[
        "network",
        "create",
        "--driver",
        "overlay",
        "--attachable",
        "--subnet",
        OVERLAY_SUBNET,
        OVERLAY,
    ])
    .unwrap();
    a.docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        SERVICE,
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--network",
        OVERLAY,
        "--endpoint-mode",
        "dnsrr",
        lab::IMAGE,
        "serve",
        "udp-echo",
        "--port",
        &PORT.to_string(),
    ])
    .unwrap();
    let task_on = |node: &Node| {
        eventually_some(|| {
            let names = node
                .docker(&[
                    "ps",
                    "--filter",
                    &format!("label=com.docker.swarm.service.name={SERVICE}"),
                    "--format",
                    "{{.Names}}",
                ])
                .ok()?;
            names.lines().next().map(str::to_string)
        })
    };
    let (asker, answerer) = (task_on(a), task_on(b));
    let address = |node: &Node, task: &str| {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{OVERLAY}\").IPAddress}}}}");
        node.docker(&["inspect", "--format", &format, task])
            .unwrap()
            .trim()
            .to_string()
    };
    let (from, to) = (address(a, &asker), address(b, &answerer));

    let dir = std::env::temp_dir();
    let recordings = [
        dir.join(format!("dockflow-node-a-{}.dfl", std::process::id())),
        dir.join(format!("dockflow-node-b-{}.dfl", std::process::id())),
    ];
    let on = |node: &Node, recording: &Path| {
        let recording = recording.to_string_lossy().into_owned();
        dockflow_on(
            node,
            &[
                "--service",
                SERVICE,
                "--json",
                "--node",
                &node.name,
                "--record",
                &recording,
            ],
        )
    };
    let on_a = on(a, &recordings[0]);
    let on_b = on(b, &recordings[1]);
    assert!(
        on_b.startup.iter().any(|l| l.contains("swarm worker")),
        "a worker says what it cannot know: {:#?}",
        on_b.startup
    );
    let asked = a
        .docker(&[
            "exec",
            &asker,
            "/dockflow-lab",
            "client",
            "udp",
            &format!("{to}:{PORT}"),
        ])
        .is_ok();
    let (lines_a, lines_b) = (stop(on_a), stop(on_b));
    assert!(asked, "the task on node-b answered over the overlay");

    let tunnel = format!("overlay {OVERLAY}:vxlan0");
    let task_port = |task: &str, port: &str| {
        port.starts_with(&format!("overlay {OVERLAY}:")) && port.ends_with(&format!("({task})"))
    };
    // Node A: the request from the asker's port into the tunnel, the reply out of it.
    let request_a = request_from(&lines_a, &from, PORT);
    let reply_a = reply_of(&lines_a, request_a);
    let hops = bridge_hops(request_a);
    assert_eq!(hops.len(), 2, "{hops:#?}");
    assert!(
        hops[0].0 == "from_port" && task_port(&asker, &hops[0].1),
        "{hops:#?}"
    );
    assert_eq!(hops[1], ("to_tunnel".to_string(), tunnel.clone()));
    let hops = bridge_hops(reply_a);
    assert_eq!(hops[0], ("from_tunnel".to_string(), tunnel.clone()));
    assert!(
        hops[1].0 == "to_port" && task_port(&asker, &hops[1].1),
        "{hops:#?}"
    );
    let steps_a = steps(&lines_a, request_a);
    assert_eq!(
        outcome(steps_a, "request").as_deref(),
        Some("to_other_node")
    );
    // Node B: the same request in through the tunnel to the answerer, its reply back out.
    let request_b = request_from(&lines_b, &from, PORT);
    let reply_b = reply_of(&lines_b, request_b);
    let hops = bridge_hops(request_b);
    assert_eq!(hops[0], ("from_tunnel".to_string(), tunnel.clone()));
    assert!(
        hops[1].0 == "to_port" && task_port(&answerer, &hops[1].1),
        "{hops:#?}"
    );
    let hops = bridge_hops(reply_b);
    assert_eq!(hops.last().unwrap(), &("to_tunnel".to_string(), tunnel));
    assert_eq!(
        outcome(steps(&lines_b, request_b), "reply").as_deref(),
        Some("to_other_node")
    );
    // One packet seen on two nodes: the same headers, IP id included (what stitches them).
    for (here, there) in [(request_a, request_b), (reply_a, reply_b)] {
        assert_eq!(here["packet"]["ip_id"], there["packet"]["ip_id"]);
    }
    drop(lab);
    assert!(our_bpf_programs().is_empty());

    // The two recordings merged: each packet once, across both nodes.
    let merged = std::process::Command::new(dockflow_bin())
        .arg("merge")
        .args(&recordings)
        .arg("--json")
        .output()
        .unwrap();
    for recording in &recordings {
        let _ = std::fs::remove_file(recording);
    }
    let stderr = String::from_utf8_lossy(&merged.stderr);
    assert!(merged.status.success(), "{stderr}");
    assert!(
        stderr.contains("node-b's clock is") && stderr.contains("ahead of node-a's"),
        "the clocks are aligned by the packets that crossed both ways: {stderr}"
    );
    let lines = json_events(&String::from_utf8_lossy(&merged.stdout));
    let across = |src: &str, dport: Option<u16>| {
        lines
            .iter()
            .find(|l| {
                l["packet"]["src"] == src
                    && dport.is_none_or(|p| l["packet"]["dport"] == p)
                    && l["packet"]["protocol"] == 17
            })
            .unwrap_or_else(|| panic!("no merged packet from {src}: {lines:#?}"))
    };
    for (packet, route) in [
        (across(&from, Some(PORT)), ["node-a", "node-b"]),
        (across(&to, None), ["node-b", "node-a"]),
    ] {
        assert_eq!(packet["type"], "merged_packet");
        let legs: Vec<&str> = packet["legs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["node"].as_str().unwrap())
            .collect();
        assert_eq!(legs, route, "{packet:#}");
        let crossing = packet["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "crosses_nodes")
            .unwrap_or_else(|| panic!("no crossing: {packet:#}"));
        assert_eq!(crossing["from"], route[0]);
        assert_eq!(crossing["to"], route[1]);
        assert!(crossing["vni"].as_u64().unwrap() >= 4096, "{crossing}");
        // Every other step names the node it happened on.
        assert!(
            packet["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["kind"] != "crosses_nodes")
                .all(|s| route.contains(&s["node"].as_str().unwrap_or(""))),
            "{packet:#}"
        );
    }
}

/// Polls `f` for up to 30 s until it gives a value (a swarm task being scheduled).
fn eventually_some<T>(f: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "nothing within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
