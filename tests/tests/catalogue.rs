//! The catalogue of single-host Docker paths, end to end on a network of the tests' own (names,
//! addresses and ports other than the lab's, so nothing is tuned to it). Each test asserts on
//! the structured path and on the explanation's typed steps (kind and fields), not on prose.

use std::{collections::BTreeSet, net::UdpSocket, path::Path, process::Command, time::Duration};

use dockflow_lab::{lab, shell::run};
use dockflow_tests::{
    Dockflow, bpf_map_values, catalogue::*, dockflow_bin, eventually, hop_kinds, json_events,
    lab_bin, lab_lock, packets,
};
use serde_json::Value;

#[test]
fn container_to_container_on_one_bridge_is_bridged_only() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let to = format!("{LEDGER}:{PORT}");
    let lines = traced("ledger", || assert!(from_container("billing", &to)));
    let request = packet_to(&lines, PORT);
    let reply = reply_of(&lines, request);
    for packet in [request, reply] {
        let k = hop_kinds(packet);
        assert!(
            !k.iter().any(|h| h.starts_with("l3:")),
            "never routed: {k:?}"
        );
    }
    // Both ends named by the container behind the port, not only the followed one.
    let ports: Vec<&str> = request["hops"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["port"].as_str())
        .collect();
    assert!(ports.iter().any(|p| p.ends_with("(billing)")), "{ports:?}");
    assert!(ports.iter().any(|p| p.ends_with("(ledger)")), "{ports:?}");
    let steps = steps(&lines, request);
    assert_eq!(outcome(steps, "request").as_deref(), Some("bridged_only"));
    assert_eq!(outcome(steps, "reply").as_deref(), Some("bridged_only"));
    let all: Vec<String> = [step_kinds(steps, "request"), step_kinds(steps, "reply")].concat();
    for wrong in ["passed_up", "routed_into_bridge", "dropped"] {
        assert!(!all.contains(&wrong.to_string()), "{all:?}");
    }
    assert!(!steps.iter().any(|s| s["kind"] == "crossing"), "{steps:#?}");
}

#[test]
fn hairpin_dnat_to_a_published_port_on_the_same_bridge_is_handed_back_not_routed() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let to = format!("{GATEWAY}:{PUBLISHED}");
    let lines = traced("ledger", || assert!(from_container("billing", &to)));
    // With the userland proxy on, Docker's nat rules skip traffic from the network's own
    // bridge: docker-proxy takes it on the host and opens its own connection to ledger.
    if let Some(pid) = userland_proxy_for("0.0.0.0", PUBLISHED) {
        assert_proxied(&lines, BILLING, PUBLISHED, (GATEWAY, LEDGER, PORT), pid);
        return;
    }
    let request = packet_to(&lines, PUBLISHED);
    let k = hop_kinds(request);
    assert!(!k.iter().any(|h| h == "l3:hook"), "{k:?}");
    let steps = steps(&lines, request);
    let dnat = nat_position(steps, "dnat");
    assert_eq!(steps[dnat]["after"], format!("{LEDGER}:{PORT}"));
    assert_eq!(steps[dnat]["at"]["hook"], "prerouting");
    let back = steps
        .iter()
        .position(|s| s["kind"] == "handed_back")
        .unwrap_or_else(|| panic!("{steps:#?}"));
    assert!(dnat < back);
    assert_eq!(
        outcome(steps, "request").as_deref(),
        Some("bridged_only"),
        "{:?} {steps:#?}",
        hop_kinds(request)
    );
    assert_eq!(outcome(steps, "reply").as_deref(), Some("bridged_only"));
    assert!(nat_position(steps, "undo_dnat") > back);
}

#[test]
fn a_host_process_to_a_published_port_is_sent_by_the_host_and_the_reply_delivered_to_it() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let proxy = userland_proxy_for("0.0.0.0", PUBLISHED);
    // Through loopback and through the host's own address on the catalogue's bridge.
    for host_address in ["127.0.0.1", GATEWAY] {
        let to = format!("{host_address}:{PUBLISHED}");
        let lines = traced("ledger", || {
            from_host(&["udp", &to]);
        });
        // With the userland proxy on (Docker's default), Docker's nat rules leave loopback
        // destinations to docker-proxy: two connections, one exchange.
        if let (Some(pid), "127.0.0.1") = (proxy, host_address) {
            assert_proxied(&lines, "127.0.0.1", PUBLISHED, (GATEWAY, LEDGER, PORT), pid);
            continue;
        }
        let request = packet_to(&lines, PUBLISHED);
        let steps = steps(&lines, request);
        assert_eq!(steps[0]["kind"], "start");
        assert_sent_by_host_and_answered(steps);
        // From loopback the source must change too (masquerade to the bridge's address); in
        // time order the masquerade is undone at prerouting, the DNAT at input.
        if host_address == "127.0.0.1" {
            assert!(nat_position(steps, "dnat") < nat_position(steps, "snat"));
            assert!(nat_position(steps, "undo_snat") < nat_position(steps, "undo_dnat"));
        } else {
            assert!(nat_position(steps, "dnat") < nat_position(steps, "undo_dnat"));
        }
        let crossing = steps
            .iter()
            .find(|s| s["kind"] == "crossing")
            .unwrap_or_else(|| panic!("{steps:#?}"));
        assert_eq!(crossing["request"], serde_json::json!(["l3", "l2"]));
        assert_eq!(crossing["reply"], serde_json::json!(["l2", "l3"]));
        assert!(
            !steps.iter().any(|s| s["outcome"] == "routed"),
            "{steps:#?}"
        );
    }
}

/// Follows `ledger` with a filter expression while the host asks its published port and
/// billing sends a datagram to another port of ledger; the packets shown, and the summary.
fn filtered(filter: &str, record: &Path) -> (Vec<Value>, Vec<String>) {
    let record = record.to_str().unwrap();
    let dockflow = Dockflow::start(&[
        "--container",
        "ledger",
        "--json",
        "--record",
        record,
        filter,
    ]);
    from_host(&["udp", &format!("{GATEWAY}:{PUBLISHED}")]);
    assert!(!from_container("billing", &format!("{LEDGER}:9999")));
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "dockflow failed: {stderr:?}");
    (json_events(&stdout), stderr)
}

/// The published port's exchange (request and reply) is shown, billing's datagram to 9999 not.
fn assert_exchange_only(filter: &str, shown: &[&Value]) {
    let directions: Vec<&str> = shown
        .iter()
        .filter_map(|p| p["direction"].as_str())
        .collect();
    assert!(
        directions.contains(&"request") && directions.contains(&"reply"),
        "{filter}: {shown:#?}"
    );
    assert!(
        shown.iter().all(|p| p["packet"]["protocol"] == 17
            && p["packet"]["dport"] != 9999
            && p["packet"]["sport"] != 9999),
        "{filter}: {shown:#?}"
    );
}

#[test]
fn a_filter_matches_a_nated_exchange_by_either_port_and_leaves_out_the_rest() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    // The container's port (after DNAT) and the published one (before it) select the same
    // exchange: request and reply each took both forms.
    for filter in [
        format!("udp port {PORT}"),
        format!("udp and port {PUBLISHED}"),
    ] {
        let record =
            std::env::temp_dir().join(format!("dockflow-filtered-{}.dfl", std::process::id()));
        let (lines, stderr) = filtered(&filter, &record);
        assert_exchange_only(&filter, &packets(&lines));
        assert!(
            stderr.iter().any(|l| l.contains("left out by the filter")),
            "{filter}: {stderr:?}"
        );
        // The recording carries its filter: replayed without one, it shows what the filter
        // matches, as the live run did, and says so.
        let replayed = Command::new(dockflow_bin())
            .args(["--replay", record.to_str().unwrap(), "--json"])
            .output()
            .unwrap();
        std::fs::remove_file(&record).unwrap();
        let replay_stderr = String::from_utf8_lossy(&replayed.stderr);
        assert!(replayed.status.success(), "{replay_stderr}");
        assert!(
            replay_stderr.contains(&format!("recorded with the filter `{filter}`")),
            "{replay_stderr}"
        );
        let replayed = json_events(&String::from_utf8_lossy(&replayed.stdout));
        assert_exchange_only(&filter, &packets(&replayed));
    }
}

/// Datagrams in [`burst`]: one connection of many packets.
const BURST: usize = 60;

/// From one socket of the host to ledger's published port, each echoed before the next.
fn burst() {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut echo = [0u8; 64];
    for _ in 0..BURST {
        socket
            .send_to(b"burst", format!("{GATEWAY}:{PUBLISHED}"))
            .unwrap();
        socket.recv(&mut echo).unwrap();
    }
}

/// dockflow on ledger during a burst: its --json lines, and the events it read from the
/// kernel with the number the kernel dropped by the filter's verdicts.
fn burst_traced(filter: &[&str]) -> (Vec<Value>, u64, u64) {
    let dockflow = Dockflow::start(&[&["--container", "ledger", "--json"], filter].concat());
    burst();
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "dockflow failed: {stderr:?}");
    let number_before = |words: &str| -> u64 {
        stderr
            .iter()
            .find_map(|l| {
                let at = l.find(words)?;
                l[..at].split_whitespace().last()?.parse().ok()
            })
            .unwrap_or(0)
    };
    let read = number_before(" events from");
    let dropped = number_before(" events left out by the filter in the kernel");
    (json_events(&stdout), read, dropped)
}

/// The hop sequences of the burst's packets, each direction's first two (ARP, a first
/// sighting) left aside.
fn burst_hops(lines: &[Value]) -> BTreeSet<(String, Vec<String>)> {
    let ports = [PORT, PUBLISHED].map(Value::from);
    let mut seen = std::collections::HashMap::new();
    packets(lines)
        .into_iter()
        .filter(|p| {
            p["packet"]["protocol"] == 17
                && (ports.contains(&p["packet"]["sport"]) || ports.contains(&p["packet"]["dport"]))
        })
        .filter_map(|p| {
            let direction = p["direction"].as_str().unwrap_or("").to_string();
            let n = seen.entry(direction.clone()).or_insert(0);
            *n += 1;
            (*n > 2).then(|| (direction, hop_kinds(p)))
        })
        .collect()
}

#[test]
fn the_kernel_drops_a_left_out_connection_and_keeps_every_hop_of_a_matching_one() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let (all, read_all, _) = burst_traced(&[]);
    let unfiltered = burst_hops(&all);
    assert!(
        unfiltered.iter().any(|(d, _)| d == "request")
            && unfiltered.iter().any(|(d, _)| d == "reply"),
        "{unfiltered:#?}"
    );
    // Only the published port names the connection: the hops where its packets show the
    // container's port (tc, the container's side) are kept by the verdict, not the headers.
    let (matching, _, dropped) = burst_traced(&[&format!("udp port {PUBLISHED}")]);
    assert_eq!(burst_hops(&matching), unfiltered);
    assert_eq!(dropped, 0);
    // A filter the burst does not match: after its first packets, the kernel drops its events.
    let (left_out, read_left_out, dropped) = burst_traced(&["tcp"]);
    assert!(burst_hops(&left_out).is_empty(), "{left_out:#?}");
    assert!(
        dropped as usize > BURST && read_left_out * 4 < read_all,
        "read {read_left_out} events (unfiltered {read_all}), {dropped} dropped in the kernel"
    );
}

#[test]
fn container_to_another_docker_network_is_dropped_by_docker_isolation() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let to = format!("{OUTSIDER}:{PORT}");
    let lines = traced("outsider", || assert!(!from_container("billing", &to)));
    let request = packet_to(&lines, PORT);
    let steps = steps(&lines, request);
    let drop = step(steps, "request", "dropped");
    assert_eq!(drop["reason"], "NETFILTER_DROP");
    // 20.10 isolates networks in its DOCKER-ISOLATION chains, 28 in raw PREROUTING.
    let (table, chain) = (
        drop["rule"]["table"].as_str(),
        drop["rule"]["chain"].as_str(),
    );
    if engine_major() >= 28 {
        assert_eq!((table, chain), (Some("raw"), Some("PREROUTING")), "{drop}");
    } else {
        assert!(chain.unwrap().starts_with("DOCKER-ISOLATION"), "{drop}");
    }
    assert_eq!(drop["rule"]["verdict"], "drop");
    let docker = step(steps, "request", "docker_rule");
    assert_eq!(docker["why"], "network_isolation", "{docker}");
    assert!(outcome(steps, "request").is_none());
}

#[test]
fn a_frame_to_an_unlearned_mac_is_flooded_and_still_reaches_its_container() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let to = format!("{LEDGER}:{PORT}");
    // One exchange first, so that billing knows ledger's MAC (no ARP in the way)...
    assert!(from_container("billing", &to));
    let mac = run(
        "docker",
        &[
            "inspect",
            "-f",
            &format!("{{{{(index .NetworkSettings.Networks \"{NETWORK}\").MacAddress}}}}"),
            "ledger",
        ],
    )
    .unwrap();
    let lines = traced("ledger", || {
        // ...then the bridge forgets it, and floods the next frame to ledger. Learning is off
        // on ledger's port first: a frame ledger sends in between (IPv6 neighbour discovery,
        // say) would teach the bridge its MAC again. The port goes with the container.
        let fdb = run("bridge", &["fdb", "show", "br", BRIDGE]).unwrap();
        for entry in fdb.lines().filter(|l| l.starts_with(mac.trim())) {
            let words: Vec<&str> = entry.split_whitespace().collect();
            if let Some(dev) = words.iter().position(|w| *w == "dev").map(|i| words[i + 1]) {
                let _ = run("bridge", &["link", "set", "dev", dev, "learning", "off"]);
                let _ = run("bridge", &["fdb", "del", mac.trim(), "dev", dev, "master"]);
            }
        }
        assert!(from_container("billing", &to));
    });
    let request = packet_to(&lines, PORT);
    let hops = request["hops"].as_array().unwrap();
    let to_ports = hops.iter().filter(|h| h["kind"] == "to_port").count();
    assert!(to_ports >= 2, "{:?}", hop_kinds(request));
    assert!(
        hops.iter()
            .filter(|h| h["kind"] == "dropped")
            .all(|h| h["flood_copy"] == true),
        "{:?}",
        hop_kinds(request)
    );
    let steps = steps(&lines, request);
    let flood = steps
        .iter()
        .find(|s| s["kind"] == "flooded")
        .unwrap_or_else(|| panic!("{steps:#?}"));
    assert!(flood["ports"].as_array().unwrap().len() >= 2);
    assert!(!steps.iter().any(|s| s["kind"] == "dropped"), "{steps:#?}");
    assert_eq!(outcome(steps, "request").as_deref(), Some("bridged_only"));
}

#[test]
fn a_masqueraded_reply_is_shown_from_its_arrival_on_the_hosts_link() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let outside = OutsideEcho::start(5454);
    let lines = traced("ledger", || {
        assert!(from_container("ledger", &outside.address))
    });
    drop(outside);
    let request = packet_to(&lines, 5454);
    let reply = reply_of(&lines, request);
    let hops = reply["hops"].as_array().unwrap();
    // First the host's external link receives it, then prerouting's first slot sees it before
    // conntrack has named the connection (no conntrack state there yet).
    assert_eq!(hops[0]["kind"], "receive", "{:?}", hop_kinds(reply));
    assert_eq!(hops[0]["interface"], lab::HOST_LINK);
    let first_slot = hops
        .iter()
        .position(|h| {
            h["kind"] == "hook" && h["hook"] == "prerouting" && h["priority"] == i32::MIN + 1
        })
        .unwrap_or_else(|| panic!("{:?}", hop_kinds(reply)));
    assert!(first_slot > 0);
    let steps = steps(&lines, request);
    assert_eq!(outcome(steps, "request").as_deref(), Some("routed"));
    let snat = nat_position(steps, "snat");
    assert_eq!(
        steps[snat]["after"].as_str().unwrap().split(':').next(),
        Some(lab::HOST_ADDRESS.to_string().as_str())
    );
    let undo = nat_position(steps, "undo_snat");
    assert_eq!(
        steps[undo]["after"].as_str().unwrap().split(':').next(),
        Some(LEDGER)
    );
    let reply_start = steps
        .iter()
        .find(|s| s["kind"] == "start" && s["role"] == "reply")
        .unwrap_or_else(|| panic!("{steps:#?}"));
    assert_eq!(reply_start["origin"], "host_interface", "{steps:#?}");
}

#[test]
fn a_learned_reply_tuple_is_forgotten_with_its_connection() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let outside = OutsideEcho::start(5455);
    let mut learned = Vec::new();
    traced("ledger", || {
        assert!(from_container("ledger", &outside.address));
        // The value the kernel wrote with it reads back as written.
        learned = bpf_map_values("REPLY_TUPLES");
        // The connection ends (as if it timed out): conntrack deletes it.
        run(
            "conntrack",
            &[
                "-D",
                "-p",
                "udp",
                "-s",
                LEDGER,
                "--dport",
                &outside.port.to_string(),
            ],
        )
        .unwrap();
        // Userspace asks conntrack about the tuples once a second.
        eventually("the reply tuple is forgotten", || {
            bpf_map_values("REPLY_TUPLES").is_empty()
        });
    });
    drop(outside);
    assert_eq!(learned, [1]);
}

#[test]
fn arp_is_a_bridged_frame_asked_by_the_container_and_answered_by_the_host() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let pid = run("docker", &["inspect", "-f", "{{.State.Pid}}", "ledger"]).unwrap();
    let lines = traced("ledger", || {
        // ledger forgets its gateway's MAC, so its next packet there asks for it first.
        run(
            "nsenter",
            &["-t", pid.trim(), "-n", "ip", "neigh", "flush", "all"],
        )
        .unwrap();
        assert!(from_container("ledger", &format!("{GATEWAY}:{PUBLISHED}")));
    });
    // ledger's question for its gateway (Docker 28's own announcements may come too).
    let question = lines
        .iter()
        .find(|l| {
            l["type"] == "packet"
                && l["packet"]["arp"] == "request"
                && l["packet"]["dst"] == GATEWAY
        })
        .unwrap_or_else(|| panic!("no ARP request: {lines:#?}"));
    assert_eq!(question["packet"]["src"], LEDGER);
    assert_eq!(question["packet"]["dst"], GATEWAY);
    let answer = reply_of(&lines, question);
    assert_eq!(answer["packet"]["arp"], "reply");
    for packet in [question, answer] {
        let k = hop_kinds(packet);
        assert!(!k.iter().any(|h| h.ends_with(":hook")), "no IP hook: {k:?}");
    }
    let steps = steps(&lines, question);
    let asked = steps
        .iter()
        .find(|s| s["kind"] == "arp_asked")
        .unwrap_or_else(|| panic!("{steps:#?}"));
    assert_eq!(asked["passed_up"], BRIDGE);
    assert_eq!(asked["delivery"], "broadcast");
    let ports = asked["ports"].as_array().unwrap();
    for name in ["(billing)", "(auditor)"] {
        assert!(
            ports.iter().any(|p| p.as_str().unwrap().ends_with(name)),
            "broadcast to every port: {ports:?}"
        );
    }
    let answered = steps
        .iter()
        .find(|s| s["kind"] == "arp_answered")
        .unwrap_or_else(|| panic!("{steps:#?}"));
    assert_eq!(answered["answered_by"], "host");
    assert_eq!(answered["place"], BRIDGE);
    assert_eq!(answered["ports"].as_array().unwrap().len(), 1);
    for wrong in ["outcome", "crossing", "dropped", "nat"] {
        assert!(!steps.iter().any(|s| s["kind"] == wrong), "{steps:#?}");
    }
}

#[test]
fn icmp_echo_from_the_host_to_a_container_and_back() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let lines = traced("ledger", || {
        from_host(&["ping", LEDGER]);
    });
    let request = lines
        .iter()
        .find(|l| {
            l["type"] == "packet" && l["packet"]["protocol"] == 1 && l["direction"] == "request"
        })
        .unwrap_or_else(|| panic!("no echo request: {lines:#?}"));
    assert_eq!(request["packet"]["dst"], LEDGER);
    let reply = reply_of(&lines, request);
    assert_eq!(reply["packet"]["src"], LEDGER);
    let steps = steps(&lines, request);
    // The ping's raw socket got the reply; the kernel's ICMP code then frees it (NO_SOCKET):
    // delivered, not dropped.
    assert_sent_by_host_and_answered(steps);
    assert!(!steps.iter().any(|s| s["kind"] == "dropped"), "{steps:#?}");
}

#[test]
fn ipv6_container_to_container_and_host_to_container_cross_the_same_hooks() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let to = format!("[{LEDGER6}]:{PORT}");
    // Container to container: bridged only, br_netfilter running the IPv6 hooks.
    let lines = traced("ledger", || assert!(from_container("billing", &to)));
    let request = packet_to(&lines, PORT);
    assert_eq!(request["packet"]["src"], BILLING6);
    let reply = reply_of(&lines, request);
    for packet in [request, reply] {
        let hooks: Vec<&Value> = packet["hops"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["kind"] == "hook")
            .collect();
        assert!(!hooks.is_empty(), "{:?}", hop_kinds(packet));
        for hook in hooks {
            assert_eq!(hook["family"], "ipv6", "{hook}");
            assert_eq!(hook["layer"], "l3_from_bridge", "{hook}");
        }
    }
    let bridged = steps(&lines, request);
    assert_eq!(outcome(bridged, "request").as_deref(), Some("bridged_only"));
    assert_eq!(outcome(bridged, "reply").as_deref(), Some("bridged_only"));
    // Host to container: sent by the host into the bridge, the reply delivered to it.
    let lines = traced("ledger", || {
        from_host(&["udp", &to]);
    });
    let request = packet_to(&lines, PORT);
    let steps = steps(&lines, request);
    assert_sent_by_host_and_answered(steps);
    let hooks: Vec<&Value> = steps
        .iter()
        .filter(|s| s["kind"] == "ip_stack_runs_hooks")
        .flat_map(|s| s["hooks"].as_array().unwrap())
        .collect();
    assert!(
        !hooks.is_empty() && hooks.iter().all(|h| h["family"] == "ipv6"),
        "{steps:#?}"
    );
}

/// A network with more containers than the kernel filter's arrays hold (8 addresses, 16
/// published port keys, 8 namespaces with the host's): its sets go to hash maps instead.
const WIDE_NETWORK: &str = "dfwide";
const WIDE_CONTAINERS: u16 = 9;

fn wide_address(n: u16) -> String {
    format!("10.216.8.{}", 10 + n)
}

fn wide_published(n: u16) -> u16 {
    16000 + n
}

/// `dfwide` and its containers `wide1`..`wide9`, each an echo on PORT published at 1600N.
struct Wide;

impl Wide {
    fn up() -> Self {
        lab::up(&lab_bin()).unwrap();
        let wide = Wide;
        wide.remove();
        create_network(WIDE_NETWORK, "dfwide0", "10.216.8.0/24", None);
        for n in 1..=WIDE_CONTAINERS {
            let publish = format!("{}:{PORT}/udp", wide_published(n));
            run_echo(
                &format!("wide{n}"),
                WIDE_NETWORK,
                &wide_address(n),
                None,
                Some(&publish),
            );
        }
        wide
    }

    fn remove(&self) {
        let names: Vec<String> = (1..=WIDE_CONTAINERS).map(|n| format!("wide{n}")).collect();
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&names)
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", WIDE_NETWORK])
            .output();
    }
}

impl Drop for Wide {
    fn drop(&mut self) {
        self.remove();
        let _ = lab::down();
    }
}

#[test]
fn a_network_larger_than_the_kernel_arrays_is_followed_whole() {
    let _lock = lab_lock();
    let _wide = Wide::up();
    let dockflow = Dockflow::start(&["--network", WIDE_NETWORK, "--json"]);
    assert!(
        dockflow.startup.iter().any(|l| l.contains(&format!(
            "watching network {WIDE_NETWORK} ({WIDE_CONTAINERS} containers"
        ))),
        "{:?}",
        dockflow.startup
    );
    // The last container to the first (their addresses and namespaces past the arrays), and
    // the host to the last one's published port (its port keys too).
    let last = format!("wide{WIDE_CONTAINERS}");
    assert!(from_container(
        &last,
        &format!("{}:{PORT}", wide_address(1))
    ));
    from_host(&[
        "udp",
        &format!("10.216.8.1:{}", wide_published(WIDE_CONTAINERS)),
    ]);
    // Only the addresses name this one (a port nobody publishes or listens on).
    assert!(!from_container(&last, &format!("{}:9999", wide_address(1))));
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "dockflow failed: {stderr:?}");
    let lines = json_events(&stdout);
    let request = |src: &str, dst: &str| {
        packets(&lines)
            .into_iter()
            .find(|p| {
                p["direction"] == "request"
                    && p["ends"]["src"].as_str().unwrap_or("-") == src
                    && p["ends"]["dst"] == dst
            })
            .unwrap_or_else(|| panic!("no request {src} -> {dst}: {lines:#?}"))
    };
    let bridged = request(&last, "wide1");
    // Its device hops in both containers' namespaces: sent from one, received in the other.
    let kinds = hop_kinds(bridged);
    assert!(
        kinds.contains(&"device:transmit".to_string())
            && kinds.contains(&"device:receive".to_string()),
        "{kinds:?}"
    );
    request("-", &last);
    let unpublished = packets(&lines)
        .into_iter()
        .find(|p| p["direction"] == "request" && p["packet"]["dport"] == 9999)
        .unwrap_or_else(|| panic!("no request to port 9999: {lines:#?}"));
    let kinds = hop_kinds(unpublished);
    assert!(kinds.contains(&"device:transmit".to_string()), "{kinds:?}");
}
