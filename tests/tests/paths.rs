//! The main job end to end on the lab, asserting on the structured path (layers, hop kinds,
//! rewrites, conntrack), not on prose: the seed's request and reply, container-to-container
//! traffic, recording and replay.

use std::process::Command;

use dockflow_lab::lab;
use dockflow_tests::{
    Dockflow, IptablesRule, assert_same_lines, dockflow_bin, eventually, hop_kinds, json_events,
    lab_bin, lab_lock, packets,
};
use serde_json::Value;

const RADIUS: &str = "172.20.0.2";

fn hooks<'a>(packet: &'a Value, layer: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    packet["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(move |h| h["kind"] == "hook" && h["layer"] == layer)
}

/// Runs `dockflow ARGS` (JSON output) over one RADIUS exchange from the external namespace;
/// returns its startup lines and output lines.
fn trace_radius_exchange(args: &[&str]) -> (Vec<String>, Vec<Value>) {
    let dockflow = Dockflow::start(args);
    let startup = dockflow.startup.clone();
    let answer = lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    assert!(answer.starts_with("Access-Accept"), "{answer}");
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok, "dockflow failed after SIGINT");
    (startup, json_events(&stdout))
}

/// The request and the reply packet of the exchange.
fn request_and_reply(lines: &[Value]) -> (&Value, &Value) {
    let client = lab::EXTERNAL_ADDRESS.to_string();
    let all = packets(lines);
    let request = *all
        .iter()
        .find(|p| p["packet"]["src"] == client && p["packet"]["dport"] == 1812)
        .expect("request packet");
    let reply = *all
        .iter()
        .find(|p| p["packet"]["dst"] == client && p["packet"]["sport"] == 1812)
        .expect("reply packet");
    (request, reply)
}

/// The interfaces of a packet's device hops (netif_receive_skb, net_dev_queue), as named in
/// the output ("radius:eth0" for one inside a namespace).
fn device_interfaces(packet: &Value) -> Vec<String> {
    packet["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "receive" || h["kind"] == "transmit")
        .map(|h| h["interface"].as_str().unwrap().to_string())
        .collect()
}

/// Index of the first hop matching, for order assertions.
fn position(packet: &Value, pred: impl Fn(&Value) -> bool) -> Option<usize> {
    packet["hops"].as_array().unwrap().iter().position(pred)
}

#[test]
fn the_seed_request_is_routed_then_bridged_and_its_reply_bridged_then_routed() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let record = std::env::temp_dir().join(format!("dockflow-test-{}.dfl", std::process::id()));
    let (_, lines) = trace_radius_exchange(&[
        "--container",
        "radius",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    let (request, reply) = request_and_reply(&lines);
    assert_eq!(request["direction"], "request");
    assert_eq!(reply["direction"], "reply");
    assert_eq!(
        request["connection"], reply["connection"],
        "request and reply are one connection"
    );
    // Device hops: the host's and the container's own, none in the client's namespace (the
    // kernel skips other namespaces' devices).
    let devices = [device_interfaces(request), device_interfaces(reply)].concat();
    assert!(devices.contains(&"radius:eth0".to_string()), "{devices:?}");
    assert!(devices.contains(&lab::HOST_LINK.to_string()), "{devices:?}");
    assert!(
        !devices
            .iter()
            .any(|d| d.starts_with(&format!("{}:", lab::EXTERNAL_NETNS))),
        "{devices:?}"
    );

    // Request: L3 prerouting with DNAT -> forward -> into the bridge -> L2 to the container's port.
    let k = hop_kinds(request);
    let dnat = position(request, |h| {
        h["kind"] == "hook"
            && h["hook"] == "prerouting"
            && h["rewrites"][0]["field"] == "destination"
    })
    .unwrap_or_else(|| panic!("no DNAT at prerouting: {k:?}"));
    let hop = &request["hops"][dnat];
    assert_eq!(hop["layer"], "l3");
    assert_eq!(
        hop["rewrites"][0]["before"],
        format!("{}:1812", lab::HOST_ADDRESS)
    );
    assert_eq!(hop["rewrites"][0]["after"], format!("{RADIUS}:1812"));
    let forward = position(request, |h| {
        h["kind"] == "hook" && h["hook"] == "forward" && h["layer"] == "l3"
    })
    .expect("forward");
    let into_bridge = position(request, |h| {
        h["kind"] == "into_bridge" && h["bridge"] == lab::BRIDGE
    })
    .expect("into bridge");
    let to_port =
        position(request, |h| h["kind"] == "to_port" && h["layer"] == "l2").expect("to port");
    assert!(
        dnat < forward && forward < into_bridge && into_bridge < to_port,
        "{k:?}"
    );
    assert!(
        to_port
            > position(request, |h| h["kind"] == "hook"
                && h["hook"] == "postrouting")
            .unwrap()
    );
    assert_eq!(
        hooks(request, "l3_from_bridge").count(),
        0,
        "the request is routed, not bridged: {k:?}"
    );

    // Reply: L2 in on the container's port -> passed up -> L3 forward -> out the external link.
    let k = hop_kinds(reply);
    let from_port = position(reply, |h| h["kind"] == "from_port" && h["layer"] == "l2")
        .unwrap_or_else(|| panic!("{k:?}"));
    let passed_up = position(reply, |h| {
        h["kind"] == "passed_up" && h["bridge"] == lab::BRIDGE
    })
    .unwrap_or_else(|| panic!("{k:?}"));
    let forward = position(reply, |h| {
        h["kind"] == "hook" && h["hook"] == "forward" && h["layer"] == "l3"
    })
    .unwrap_or_else(|| panic!("{k:?}"));
    let out = position(reply, |h| {
        h["kind"] == "transmit" && h["interface"] == lab::HOST_LINK
    })
    .unwrap_or_else(|| panic!("{k:?}"));
    assert!(
        from_port < passed_up && passed_up < forward && forward < out,
        "{k:?}"
    );
    // Its prerouting hook ran from inside the bridge, and it never reaches IP input.
    assert!(
        hooks(reply, "l3_from_bridge").all(|h| h["hook"] == "prerouting")
            && hooks(reply, "l3_from_bridge").count() > 0,
        "{k:?}"
    );
    assert!(
        !reply["hops"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["hook"] == "input"),
        "{k:?}"
    );
    // Reverse NAT by conntrack: the source goes back to the host's address, and at every NAT
    // priority the connection was already established (no nat chain is consulted).
    let reverse = reply["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["rewrites"][0]["field"] == "source")
        .expect("reverse NAT");
    assert_eq!(reverse["hook"], "postrouting");
    assert_eq!(
        reverse["rewrites"][0]["after"],
        format!("{}:1812", lab::HOST_ADDRESS)
    );
    assert!(
        hooks(reply, "l3")
            .chain(hooks(reply, "l3_from_bridge"))
            .filter(|h| h["event"]["conntrack"].is_object())
            .all(|h| h["event"]["conntrack"]["state"] == "established")
    );

    // An explanation for the connection, built from that path.
    let explanation = lines
        .iter()
        .find(|l| l["type"] == "explanation" && l["connection"] == request["connection"])
        .expect("explanation");
    let steps: Vec<&str> = explanation["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let kinds: Vec<&str> = explanation["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"passed_up") && kinds.contains(&"crossing"),
        "{kinds:?}"
    );
    assert!(steps.iter().any(|s| s.contains("DNAT")), "{steps:#?}");
    assert!(
        steps
            .iter()
            .any(|s| s.contains("undoes the request's DNAT")),
        "{steps:#?}"
    );
    assert!(
        steps.iter().any(|s| s.contains("passes the frame up")),
        "{steps:#?}"
    );

    // The recording replays to the same packets and explanation, without the kernel.
    let replayed = Command::new(dockflow_bin())
        .args(["--replay", record.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_same_lines(
        &json_events(&String::from_utf8_lossy(&replayed.stdout)),
        &lines,
    );
    let _ = std::fs::remove_file(&record);
    lab::down().unwrap();
}

#[test]
fn container_to_container_traffic_is_bridged_at_l2_only() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let dockflow = Dockflow::start(&["--container", "radius", "--json"]);
    // From the syslog container to radius, across infranet: no NAT, no routing.
    let out = Command::new("docker")
        .args([
            "exec",
            "syslog",
            "/dockflow-lab",
            "client",
            "radius",
            &format!("{RADIUS}:1812"),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Access-Accept"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok);
    let lines = json_events(&stdout);
    let syslog = lab::service("syslog").unwrap().address.to_string();
    let exchange: Vec<&Value> = packets(&lines)
        .into_iter()
        // The RADIUS exchange (an ARP exchange may come first).
        .filter(|p| p["packet"]["arp"].is_null())
        .filter(|p| p["packet"]["src"] == syslog || p["packet"]["dst"] == syslog)
        .collect();
    assert_eq!(exchange.len(), 2, "request and reply: {lines:#?}");
    for packet in exchange {
        let k = hop_kinds(packet);
        assert!(
            k.contains(&"l2:from_port".to_string()) && k.contains(&"l2:to_port".to_string()),
            "{k:?}"
        );
        assert!(
            !k.iter()
                .any(|h| h.ends_with(":passed_up") || h.ends_with(":into_bridge")),
            "never leaves the bridge: {k:?}"
        );
        assert!(
            !k.contains(&"l3:hook".to_string()),
            "no hook of the routed path: {k:?}"
        );
        // With bridge-nf-call-iptables=1 the IP hooks still see it, run from the bridge.
        let from_bridge: Vec<&str> = hooks(packet, "l3_from_bridge")
            .map(|h| h["hook"].as_str().unwrap())
            .collect();
        assert!(from_bridge.contains(&"forward"), "{k:?}");
    }
    lab::down().unwrap();
}

#[test]
fn a_killed_recording_keeps_all_but_its_last_second_and_a_cut_file_replays_what_is_whole() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let record = std::env::temp_dir().join(format!("dockflow-killed-{}.dfl", std::process::id()));
    // No nftables trace table: a SIGKILL leaves no chance to remove it (the next run would).
    let dockflow = Dockflow::start(&[
        "--container",
        "radius",
        "--probes",
        "tc,netfilter,drops,devices",
        "--record",
        record.to_str().unwrap(),
    ]);
    let answer = lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    assert!(answer.starts_with("Access-Accept"), "{answer}");
    let replay = |path: &std::path::Path| {
        let out = Command::new(dockflow_bin())
            .args(["--replay", path.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (json_events(&String::from_utf8_lossy(&out.stdout)), stderr)
    };
    // The recording is written once a second: the exchange is in it within a second or two.
    eventually("the running recording holds the exchange's reply", || {
        packets(&replay(&record).0)
            .iter()
            .any(|p| p["direction"] == "reply" && p["packet"]["sport"] == 1812)
    });
    dockflow.stop_with(libc::SIGKILL);
    let (lines, _) = replay(&record);
    let (request, reply) = request_and_reply(&lines);
    assert_eq!(request["connection"], reply["connection"]);
    // Cut in the middle of the last record: what precedes it replays, the cut is one line,
    // and the exit status is 0.
    let bytes = std::fs::read(&record).unwrap();
    std::fs::write(&record, &bytes[..bytes.len() - 50]).unwrap();
    let (cut_lines, stderr) = replay(&record);
    let _ = std::fs::remove_file(&record);
    assert!(!cut_lines.is_empty());
    let cut: Vec<&str> = stderr.lines().filter(|l| l.contains("cut short")).collect();
    assert_eq!(cut.len(), 1, "{stderr}");
    assert!(cut[0].contains("cut short in record"), "{stderr}");
    lab::down().unwrap();
}

#[test]
fn a_corrupt_recording_is_a_one_line_error() {
    let path = std::env::temp_dir().join(format!("dockflow-corrupt-{}.dfl", std::process::id()));
    std::fs::write(&path, b"DOCKFLOW\x01\x00\x00\x00\xff\xff\xff\x00garbage").unwrap();
    let out = Command::new(dockflow_bin())
        .args(["--replay", path.to_str().unwrap()])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("dockflow: error: ")
            && stderr.contains("not a usable dockflow recording"),
        "{stderr}"
    );
}

#[test]
fn a_network_namespace_outside_docker_can_be_the_target() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let (startup, lines) = trace_radius_exchange(&["--netns", lab::EXTERNAL_NETNS, "--json"]);
    assert!(
        startup
            .iter()
            .any(|l| l.contains(&format!("attached  tc ingress on {}", lab::HOST_LINK))),
        "{startup:?}"
    );
    let (request, _) = request_and_reply(&lines);
    assert!(
        position(request, |h| h["kind"] == "receive"
            && h["interface"] == lab::HOST_LINK)
        .is_some(),
        "{:?}",
        hop_kinds(request)
    );
    assert!(
        position(request, |h| h["rewrites"][0]["field"] == "destination").is_some(),
        "{:?}",
        hop_kinds(request)
    );
    // Here the namespace's own devices are the target's.
    let devices = device_interfaces(request);
    assert!(
        devices.contains(&format!("{}:{}", lab::EXTERNAL_NETNS, lab::EXTERNAL_LINK)),
        "{devices:?}"
    );
    assert!(
        packets(&lines)
            .iter()
            .any(|p| p["direction"] == "reply" && p["connection"] == request["connection"])
    );
    lab::down().unwrap();
}

#[test]
fn a_container_restarted_during_the_trace_is_followed_to_its_new_veth() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let recording =
        std::env::temp_dir().join(format!("dockflow-restart-{}.dfl", std::process::id()));
    let mut dockflow = Dockflow::start(&[
        "--container",
        "radius",
        "--json",
        "--record",
        recording.to_str().unwrap(),
    ]);
    let old = dockflow.veth();
    let restarted = Command::new("docker")
        .args(["restart", "radius"])
        .output()
        .unwrap();
    assert!(restarted.status.success());
    // dockflow re-resolves once a second, and says when it has moved its probes.
    dockflow.wait_for_stderr("radius moved: attached");
    lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok);
    let lines = json_events(&stdout);
    let request = packets(&lines)
        .into_iter()
        .find(|p| p["direction"] == "request" && p["packet"]["dport"] == 1812)
        .expect("request after restart");
    let port = request["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["kind"] == "to_port")
        .expect("to_port hop after restart");
    let new = port["port"].as_str().unwrap();
    assert!(
        new.starts_with("veth") && !new.starts_with(&old),
        "old {old}, new {new}"
    );
    // The recording carries the topology after the restart: replay names the new veth too.
    let replay = Command::new(dockflow_bin())
        .args(["--json", "--replay", recording.to_str().unwrap()])
        .output()
        .unwrap();
    std::fs::remove_file(&recording).unwrap();
    let replayed = json_events(&String::from_utf8_lossy(&replay.stdout));
    let replayed_request = packets(&replayed)
        .into_iter()
        .find(|p| p["direction"] == "request" && p["packet"]["dport"] == 1812)
        .expect("request in the replay");
    assert_eq!(replayed_request["hops"], request["hops"]);
    lab::down().unwrap();
}

/// Brings the lab down at the end of a test that changed a container, even when it fails.
struct LabDown;

impl Drop for LabDown {
    fn drop(&mut self) {
        let _ = lab::down();
    }
}

#[test]
fn a_container_given_a_new_address_is_marked_for_nftables_at_it() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let _down = LabDown;
    let dockflow = Dockflow::start(&["--container", "radius", "--json"]);
    let table = format!("dockflow_trace_{}", dockflow.pid());
    let moved = "172.20.0.77";
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(out.status.success(), "docker {args:?}: {out:?}");
    };
    docker(&["network", "disconnect", lab::NETWORK, "radius"]);
    docker(&["network", "connect", "--ip", moved, lab::NETWORK, "radius"]);
    // dockflow re-resolves once a second, and rewrites its table with the new address.
    let table_rules = || {
        let rules = Command::new("nft")
            .args(["list", "table", "inet", &table])
            .output()
            .unwrap();
        String::from_utf8_lossy(&rules.stdout).into_owned()
    };
    eventually("dockflow's table names the moved address", || {
        table_rules().contains(&format!("ip daddr {moved}"))
    });
    let rules = table_rules();
    assert!(
        rules.contains(&format!("ip daddr {moved}")) && !rules.contains("ip daddr 172.20.0.2 "),
        "{rules}"
    );
    // From the host straight to the new address: the request, marked by its destination,
    // carries nftables verdicts (nat OUTPUT and POSTROUTING see a connection's first packet).
    let answer = Command::new(lab_bin())
        .args(["client", "radius", &format!("{moved}:1812")])
        .output()
        .unwrap();
    assert!(answer.status.success(), "{answer:?}");
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok);
    let lines = json_events(&stdout);
    let request = packets(&lines)
        .into_iter()
        .find(|p| p["packet"]["dst"] == moved && p["packet"]["dport"] == 1812)
        .expect("the request to the new address");
    assert!(
        request["rules"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["hook"] == "output")),
        "no nftables verdicts: {request:#}"
    );
}

#[test]
fn nftables_verdicts_name_the_dnat_rule_and_no_nat_chain_sees_the_reply() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let (startup, lines) = trace_radius_exchange(&["--container", "radius", "--json"]);
    assert!(
        startup
            .iter()
            .any(|l| l.contains("attached  nftables trace")),
        "{startup:?}"
    );
    let (request, reply) = request_and_reply(&lines);
    let rules = |p: &Value| p["rules"].as_array().cloned().unwrap_or_default();
    // The request: Docker's DNAT rule in ip nat DOCKER, then accepted by ip filter DOCKER.
    let dnat = rules(request)
        .into_iter()
        .find(|r| r["table"] == "nat" && r["chain"] == "DOCKER" && r["verdict"] == "accept");
    let dnat = dnat.unwrap_or_else(|| panic!("no DNAT rule traced: {:#?}", rules(request)));
    assert!(
        dnat["rule"]
            .as_str()
            .unwrap()
            .contains(&format!("dnat to {RADIUS}:1812")),
        "{dnat}"
    );
    assert_eq!(dnat["hook"], "prerouting");
    assert!(
        rules(request).iter().any(|r| r["table"] == "filter"
            && r["chain"] == "DOCKER"
            && r["verdict"] == "accept"
            && r["hook"] == "forward"),
        "{:#?}",
        rules(request)
    );
    // The reply: filter FORWARD accepts it, and no nat chain evaluates it at all.
    assert!(
        rules(reply)
            .iter()
            .any(|r| r["table"] == "filter" && r["hook"] == "forward" && r["verdict"] == "accept"),
        "{:#?}",
        rules(reply)
    );
    assert!(!rules(reply).is_empty());
    assert!(
        rules(reply).iter().all(|r| r["table"] != "nat"),
        "a nat chain saw the reply: {:#?}",
        rules(reply)
    );
    assert!(
        rules(reply).iter().all(|r| r["hook"] != "input"),
        "{:#?}",
        rules(reply)
    );
    lab::down().unwrap();
    assert!(
        !String::from_utf8_lossy(
            &Command::new("nft")
                .args(["list", "tables"])
                .output()
                .unwrap()
                .stdout
        )
        .contains("dockflow")
    );
}

#[test]
fn a_drop_is_explained_with_the_rule_that_dropped_it() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let rule = [
        "DOCKER-USER",
        "-p",
        "udp",
        "-d",
        RADIUS,
        "--dport",
        "1812",
        "-j",
        "DROP",
    ];
    let drop_rule = IptablesRule::insert(rule[0], &rule[1..]);
    let dockflow = Dockflow::start(&["--container", "radius", "--json"]);
    let answer = lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]);
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    drop(drop_rule);
    assert!(answer.is_err() && ok);
    let lines = json_events(&stdout);
    let request = packets(&lines)
        .into_iter()
        .find(|p| p["packet"]["dport"] == 1812)
        .expect("request");
    let hops = request["hops"].as_array().unwrap();
    assert_eq!(
        hops.last().unwrap()["kind"],
        "dropped",
        "{:?}",
        hop_kinds(request)
    );
    assert!(
        !hops
            .iter()
            .any(|h| h["kind"] == "into_bridge" || h["kind"] == "to_port"),
        "{:?}",
        hop_kinds(request)
    );
    let steps: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == "explanation")
        .flat_map(|l| {
            l["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["text"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        steps.iter().any(|s| s
            .contains("dropped by nftables, ip filter chain DOCKER-USER at the forward hook")
            && s.contains("NETFILTER_DROP")),
        "{steps:#?}"
    );
    lab::down().unwrap();
}

#[test]
fn a_whole_network_is_followed_with_both_ends_named_and_a_table_of_its_connections() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let dockflow = Dockflow::start(&["--network", lab::NETWORK, "--json", "--summary"]);
    assert!(
        dockflow
            .startup
            .iter()
            .any(|l| l.contains("watching network infranet (4 containers")),
        "{:?}",
        dockflow.startup
    );
    lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    lab::client(&lab_bin(), lab::service("syslog").unwrap(), &[]).unwrap();
    // Container to container on the same bridge: proxy asks syslog.
    let syslog = lab::service("syslog").unwrap();
    let inside = Command::new("docker")
        .args(["exec", "proxy", "/dockflow-lab", "client", "udp"])
        .arg(format!("{}:{}", syslog.address, syslog.port))
        .output()
        .unwrap();
    assert!(inside.status.success(), "{inside:?}");
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "{stderr:?}");
    let lines = json_events(&stdout);
    let requests: Vec<&Value> = packets(&lines)
        .into_iter()
        .filter(|p| p["direction"] == "request" && p["packet"]["protocol"] == 17)
        .collect();
    let ends = |p: &Value| {
        (
            p["ends"]["src"].as_str().unwrap_or("-").to_string(),
            p["ends"]["dst"].as_str().unwrap_or("-").to_string(),
        )
    };
    let seen: Vec<(String, String)> = requests.iter().map(|p| ends(p)).collect();
    for expected in [("-", "radius"), ("-", "syslog"), ("proxy", "syslog")] {
        assert!(
            seen.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not in {seen:?}"
        );
    }
    // The table: each connection with its path kind.
    let table: Vec<&String> = stderr
        .iter()
        .skip_while(|l| !l.starts_with("connections seen:"))
        .collect();
    let row = |client: &str, server: &str| {
        table
            .iter()
            .find(|l| l.contains(client) && l.contains(server))
            .unwrap_or_else(|| panic!("no row {client} -> {server}: {table:#?}"))
            .to_string()
    };
    assert!(row("10.199.0.2", "radius (172.20.0.2:1812)").contains("routed with DNAT"));
    assert!(row("10.199.0.2", "syslog (172.20.0.3:514)").contains("routed with DNAT"));
    assert!(row("proxy (172.20.0.5", "syslog (172.20.0.3:514)").contains("bridged only"));
    // With --json the rows also close the stream, as typed lines.
    assert!(
        lines.iter().any(|l| l["type"] == "connection"
            && l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("proxy ("))
            && l["path"] == "bridged only"),
        "{lines:#?}"
    );
    lab::down().unwrap();
}
