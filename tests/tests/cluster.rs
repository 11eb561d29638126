//! Several nodes simulated on this machine (`dockflow_lab::cluster`: one engine per network
//! namespace, joined into a swarm), one dockflow per node as on a real cluster: a task on one
//! node asks a task on the other over their overlay network. Each node's dockflow tells its own
//! side: the request leaving through the VXLAN device on the first node and coming in through
//! it on the second, the reply the other way; `dockflow merge` joins the two recordings into
//! one packet across both nodes.

use std::path::Path;

use dockflow_lab::{cluster, cluster::Node, lab, swarm};
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

/// The service's two tasks over the overlay, one per node: (asker on node-a, answerer on
/// node-b, the asker's address, the answerer's).
struct Tasks {
    asker: String,
    answerer: String,
    from: String,
    to: String,
}

fn overlay_service(a: &Node, b: &Node) -> Tasks {
    a.docker(&swarm::overlay_args(OVERLAY, OVERLAY_SUBNET))
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
    Tasks {
        from: address(a, &asker),
        to: address(b, &answerer),
        asker,
        answerer,
    }
}

/// The asker's one request to the answerer over the overlay; whether the echo came back.
fn ask(a: &Node, tasks: &Tasks) -> bool {
    a.docker(&[
        "exec",
        &tasks.asker,
        "/dockflow-lab",
        "client",
        "udp",
        &format!("{}:{PORT}", tasks.to),
    ])
    .is_ok()
}

/// The merged packet from `src` (to PORT when given), which must be there.
fn merged_from<'a>(lines: &'a [Value], src: &str, dport: Option<u16>) -> &'a Value {
    lines
        .iter()
        .find(|l| {
            l["packet"]["src"] == src
                && dport.is_none_or(|p| l["packet"]["dport"] == p)
                && l["packet"]["protocol"] == 17
        })
        .unwrap_or_else(|| panic!("no merged packet from {src}: {lines:#?}"))
}

/// `packet`'s hop of `kind` ("to_node", "from_node"), which must be there.
fn vxlan_hop<'a>(packet: &'a Value, kind: &str) -> &'a Value {
    packet["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} hop: {packet:#}"))
}

/// The nodes a merged packet crossed, in order, checked against its crossing step.
fn route(packet: &Value) -> Vec<String> {
    let legs: Vec<String> = packet["legs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["node"].as_str().unwrap().to_string())
        .collect();
    if legs.len() == 2 {
        let crossing = packet["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == "crosses_nodes")
            .unwrap_or_else(|| panic!("no crossing: {packet:#}"));
        assert_eq!(crossing["from"], legs[0].as_str());
        assert_eq!(crossing["to"], legs[1].as_str());
        assert!(crossing["vni"].as_u64().unwrap() >= 4096, "{crossing}");
        // Observed on both nodes, not inferred from their addresses.
        assert_eq!(crossing["outer"]["vni"], crossing["vni"], "{crossing}");
    }
    legs
}

/// `dockflow merge RECORDINGS --json`: its stderr and JSON lines.
fn merge(recordings: &[std::path::PathBuf]) -> (String, Vec<Value>) {
    let merged = std::process::Command::new(dockflow_bin())
        .arg("merge")
        .args(recordings)
        .arg("--json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&merged.stderr).into_owned();
    assert!(merged.status.success(), "{stderr}");
    (
        stderr,
        json_events(&String::from_utf8_lossy(&merged.stdout)),
    )
}

#[test]
fn a_request_to_a_task_on_another_node_leaves_in_vxlan_there_and_is_told_on_both_nodes() {
    let _lock = lab_lock();
    let lab = ClusterLab::up();
    let (a, b) = (&lab.0[0], &lab.0[1]);
    let tasks = overlay_service(a, b);
    let Tasks {
        asker,
        answerer,
        from,
        to,
    } = &tasks;

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
    let asked = ask(a, &tasks);
    let (lines_a, lines_b) = (stop(on_a), stop(on_b));
    assert!(asked, "the task on node-b answered over the overlay");

    let tunnel = format!("overlay {OVERLAY}:vxlan0");
    let task_port = |task: &str, port: &str| {
        port.starts_with(&format!("overlay {OVERLAY}:")) && port.ends_with(&format!("({task})"))
    };
    // Node A: the request from the asker's port into the tunnel, the reply out of it.
    let request_a = request_from(&lines_a, from, PORT);
    let reply_a = reply_of(&lines_a, request_a);
    let hops = bridge_hops(request_a);
    assert_eq!(hops.len(), 2, "{hops:#?}");
    assert!(
        hops[0].0 == "from_port" && task_port(asker, &hops[0].1),
        "{hops:#?}"
    );
    assert_eq!(hops[1], ("to_tunnel".to_string(), tunnel.clone()));
    let hops = bridge_hops(reply_a);
    assert_eq!(hops[0], ("from_tunnel".to_string(), tunnel.clone()));
    assert!(
        hops[1].0 == "to_port" && task_port(asker, &hops[1].1),
        "{hops:#?}"
    );
    let steps_a = steps(&lines_a, request_a);
    assert_eq!(
        outcome(steps_a, "request").as_deref(),
        Some("to_other_node")
    );
    // Node B: the same request in through the tunnel to the answerer, its reply back out.
    let request_b = request_from(&lines_b, from, PORT);
    let reply_b = reply_of(&lines_b, request_b);
    let hops = bridge_hops(request_b);
    assert_eq!(hops[0], ("from_tunnel".to_string(), tunnel.clone()));
    assert!(
        hops[1].0 == "to_port" && task_port(answerer, &hops[1].1),
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
    // The VXLAN packet itself, seen on each node's own interface: from the sender's swarm
    // address to the receiver's, to the data path port, with the overlay's VNI.
    for (packet, kind, from, to) in [
        (request_a, "to_node", a, b),
        (request_b, "from_node", a, b),
        (reply_b, "to_node", b, a),
        (reply_a, "from_node", b, a),
    ] {
        let outer = &vxlan_hop(packet, kind)["outer"];
        assert_eq!(outer["src"], from.address.as_str(), "{outer}");
        assert_eq!(outer["dst"], to.address.as_str(), "{outer}");
        assert_eq!(outer["dport"], cluster::DATA_PATH_PORT, "{outer}");
        assert!(outer["vni"].as_u64().unwrap() >= 4096, "{outer}");
    }
    // Wrapped after the bridge sent the frame to its VXLAN port; unwrapped before it.
    let at = |packet: &Value, kind: &str| {
        packet["hops"]
            .as_array()
            .unwrap()
            .iter()
            .position(|h| h["kind"] == kind)
            .unwrap()
    };
    assert!(at(request_a, "to_tunnel") < at(request_a, "to_node"));
    // The VXLAN port's UDP port, from the device (the swarm's --data-path-port), in the hop and
    // in what is said of it.
    for packet in [request_a, reply_b] {
        let to_tunnel = vxlan_hop(packet, "to_tunnel");
        assert_eq!(
            to_tunnel["udp_port"],
            cluster::DATA_PATH_PORT,
            "{to_tunnel}"
        );
    }
    let said = steps_a
        .iter()
        .find(|s| s["kind"] == "to_tunnel")
        .unwrap_or_else(|| panic!("{steps_a:#?}"));
    assert_eq!(said["udp_port"], cluster::DATA_PATH_PORT, "{said}");
    let port_words = format!("a UDP packet to port {} ", cluster::DATA_PATH_PORT);
    assert!(
        said["text"].as_str().unwrap().contains(&port_words),
        "{said}"
    );
    assert!(at(request_b, "from_node") < at(request_b, "from_tunnel"));
    drop(lab);
    assert!(our_bpf_programs().is_empty());

    // The two recordings merged: each packet once, across both nodes.
    let (stderr, lines) = merge(&recordings);
    for recording in &recordings {
        let _ = std::fs::remove_file(recording);
    }
    assert!(
        stderr.contains("node-b's clock is") && stderr.contains("ahead of node-a's"),
        "the clocks are aligned by the packets that crossed both ways: {stderr}"
    );
    for (packet, expected) in [
        (merged_from(&lines, from, Some(PORT)), ["node-a", "node-b"]),
        (merged_from(&lines, to, None), ["node-b", "node-a"]),
    ] {
        assert_eq!(packet["type"], "merged_packet");
        assert_eq!(route(packet), expected, "{packet:#}");
        // Every other step names the node it happened on.
        assert!(
            packet["steps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["kind"] != "crosses_nodes")
                .all(|s| expected.contains(&s["node"].as_str().unwrap_or(""))),
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

#[test]
fn dockflow_runs_as_a_global_service_and_records_every_node() {
    let _lock = lab_lock();
    let lab = ClusterLab::up();
    let (a, b) = (&lab.0[0], &lab.0[1]);
    let tasks = overlay_service(a, b);
    // The dockflow image (`cargo xtask image`) on every node, as a registry would put it there.
    let image =
        std::env::var("DOCKFLOW_IMAGE").expect("DOCKFLOW_IMAGE: run through cargo xtask test");
    let saved = std::env::temp_dir().join(format!("dockflow-image-{}.tar", std::process::id()));
    let save = std::process::Command::new("docker")
        .args(["save", "-o"])
        .arg(&saved)
        .arg(&image)
        .status()
        .unwrap();
    assert!(save.success());
    for node in [a, b] {
        node.docker(&["load", "-i", &saved.to_string_lossy()])
            .unwrap();
    }
    let _ = std::fs::remove_file(&saved);
    // Each node's engine socket and recording directory under its node id: what a service's
    // mounts and environment can name ({{.Node.ID}}).
    let run = Path::new(cluster::RUN);
    let mut recordings = Vec::new();
    for node in [a, b] {
        let id = node
            .docker(&["info", "--format", "{{.Swarm.NodeID}}"])
            .unwrap()
            .trim()
            .to_string();
        std::fs::create_dir_all(run.join("by-id")).unwrap();
        std::os::unix::fs::symlink(
            node.docker_host().trim_start_matches("unix://"),
            run.join("by-id").join(format!("{id}.sock")),
        )
        .unwrap();
        std::fs::create_dir_all(run.join("rec").join(&id)).unwrap();
        recordings.push(run.join("rec").join(&id).join("node.dfl"));
    }
    // As documented for a real cluster: host network, the capabilities, Docker's socket and
    // its sandboxes (here the nodes' own, under the cluster's run directory), a place to record.
    a.docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        "dfwatch",
        "--mode",
        "global",
        "--network",
        "host",
        "--cap-add",
        "SYS_ADMIN",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "SYSLOG",
        "--mount",
        &format!("type=bind,src={0},dst={0}", cluster::RUN),
        "--mount",
        &format!(
            "type=bind,src={}/rec/{{{{.Node.ID}}}},dst=/rec",
            cluster::RUN
        ),
        "--env",
        &format!(
            "DOCKER_HOST=unix://{}/by-id/{{{{.Node.ID}}}}.sock",
            cluster::RUN
        ),
        &image,
        "--service",
        SERVICE,
        "--quiet",
        "--record",
        "/rec/node.dfl",
    ])
    .unwrap();
    let watcher = |node: &Node, all: bool| {
        let listing = node
            .docker(&[
                "ps",
                if all { "-aq" } else { "-q" },
                "--filter",
                "label=com.docker.swarm.service.name=dfwatch",
            ])
            .unwrap_or_default();
        listing.lines().next().map(str::to_string)
    };
    for node in [a, b] {
        eventually_some(|| {
            let id = watcher(node, false)?;
            let logs = std::process::Command::new("docker")
                .args(["-H", &node.docker_host(), "logs", &id])
                .output()
                .ok()?;
            String::from_utf8_lossy(&logs.stderr)
                .contains("streaming")
                .then_some(())
        });
    }
    assert!(
        ask(a, &tasks),
        "the task on node-b answered over the overlay"
    );
    // Removing the service stops each dockflow as `docker stop` does (SIGTERM): it finishes its
    // recording and exits.
    a.docker(&["service", "rm", "dfwatch"]).unwrap();
    for node in [a, b] {
        eventually_some(|| watcher(node, true).is_none().then_some(()));
    }
    let (_, lines) = merge(&recordings);
    // Each recording names its node by the engine's name and swarm address.
    let on = |leg: &String, node: &Node| leg.ends_with(&node.address);
    let request = route(merged_from(&lines, &tasks.from, Some(PORT)));
    assert!(
        request.len() == 2 && on(&request[0], a) && on(&request[1], b),
        "the request from node-a to node-b: {request:?}"
    );
    let reply = route(merged_from(&lines, &tasks.to, None));
    assert!(
        reply.len() == 2 && on(&reply[0], b) && on(&reply[1], a),
        "the reply from node-b to node-a: {reply:?}"
    );
}
