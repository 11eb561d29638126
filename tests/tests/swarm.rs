//! Swarm on one node, on the real engine: tasks of a service talking over an overlay network
//! (through the overlay's bridge inside its own namespace), a port published on the node
//! (host mode, through docker_gwbridge), a task's way out (docker_gwbridge, masqueraded), and
//! the routing mesh told plainly where the kernel cannot run it. Names and addresses are the
//! tests' own, not the lab's.

use dockflow_lab::{lab, shell::run, swarm};
use dockflow_tests::{Dockflow, catalogue::*, json_events, lab_bin, lab_lock};
use serde_json::Value;

const OVERLAY: &str = "rookery";
const OVERLAY_SUBNET: &str = "10.233.8.0/24";
const SERVICE: &str = "heron";
const SERVICE_PORT: u16 = 7200;

/// The lab (for its image and external namespace) and a swarm of its own, taken down again
/// when dropped, also when a test fails.
struct SwarmLab;

impl SwarmLab {
    fn up() -> Self {
        lab::up(&lab_bin()).unwrap();
        let lab = SwarmLab;
        swarm::up().unwrap();
        swarm::overlay(OVERLAY, OVERLAY_SUBNET).unwrap();
        lab
    }
}

impl Drop for SwarmLab {
    fn drop(&mut self) {
        let swarm = swarm::down();
        let lab = lab::down();
        if !std::thread::panicking() {
            swarm.unwrap();
            lab.unwrap();
        }
    }
}

/// `dockflow-lab client udp TO` inside `task`: whether an echo came back.
fn from_task(task: &str, to: &str) -> bool {
    std::process::Command::new("docker")
        .args(["exec", task, "/dockflow-lab", "client", "udp", to])
        .output()
        .unwrap()
        .status
        .success()
}

/// Runs dockflow with `args` (and --json) while `work` runs; its startup lines and JSON lines.
fn traced_by(args: &[&str], work: impl FnOnce()) -> (Vec<String>, Vec<Value>) {
    let dockflow = Dockflow::start(&[args, &["--json"]].concat());
    let startup = dockflow.startup.clone();
    work();
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "dockflow failed: {stderr:#?}");
    (startup, json_events(&stdout))
}

/// The (layer, kind, place) of each hop of `packet`, place being its port, bridge or
/// interface as shown.
fn hops(packet: &Value) -> Vec<(String, String, String)> {
    packet["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let place = ["port", "bridge", "interface"]
                .iter()
                .find_map(|k| h[*k].as_str())
                .unwrap_or("")
                .to_string();
            (
                h["layer"].as_str().unwrap_or("").to_string(),
                h["kind"].as_str().unwrap_or("").to_string(),
                place,
            )
        })
        .collect()
}

#[test]
fn tasks_talk_through_their_overlays_bridge_in_the_overlays_own_namespace() {
    let _lock = lab_lock();
    let _lab = SwarmLab::up();
    let tasks = swarm::service(
        SERVICE,
        2,
        OVERLAY,
        &["--endpoint-mode", "dnsrr"],
        &["udp-echo", "--port", &SERVICE_PORT.to_string()],
    )
    .unwrap();
    let (asker, answerer) = (&tasks[1], &tasks[0]);
    let to = swarm::address(answerer, OVERLAY).unwrap();
    let from = swarm::address(asker, OVERLAY).unwrap();
    let (startup, lines) = traced_by(&["--service", SERVICE], || {
        assert!(from_task(asker, &format!("{to}:{SERVICE_PORT}")))
    });
    let label = format!("overlay {OVERLAY}:");
    for device in ["br0", "vxlan0"] {
        assert!(
            startup
                .iter()
                .any(|l| l.contains(&format!("attached  tc ingress on {label}{device}"))),
            "{startup:#?}"
        );
    }
    let request = request_from(&lines, &from, SERVICE_PORT);
    let reply = reply_of(&lines, request);
    for (packet, sender, receiver) in [(request, asker, answerer), (reply, answerer, asker)] {
        let hops = hops(packet);
        // Into the overlay's bridge from the sender's port, out of the receiver's: L2 only,
        // each port named in the overlay's namespace with the task behind it.
        let from_port = hops
            .iter()
            .find(|(_, kind, _)| kind == "from_port")
            .unwrap_or_else(|| panic!("no from_port: {hops:#?}"));
        let to_port = hops
            .iter()
            .find(|(_, kind, _)| kind == "to_port")
            .unwrap_or_else(|| panic!("no to_port: {hops:#?}"));
        assert_eq!(from_port.0, "l2", "{hops:#?}");
        assert_eq!(to_port.0, "l2", "{hops:#?}");
        assert!(
            from_port.2.starts_with(&label) && from_port.2.ends_with(&format!("({sender})")),
            "{hops:#?}"
        );
        assert!(
            to_port.2.starts_with(&label) && to_port.2.ends_with(&format!("({receiver})")),
            "{hops:#?}"
        );
        // Never the host's IP stack: no netfilter hook of the host on the way.
        assert!(
            !hops.iter().any(|(layer, _, _)| layer.starts_with("l3")),
            "{hops:#?}"
        );
    }
    // Both ways bridged inside the overlay, never routed.
    let steps = steps(&lines, request);
    for role in ["request", "reply"] {
        assert_eq!(
            outcome(steps, role).as_deref(),
            Some("bridged_only"),
            "{steps:#?}"
        );
    }

    // One task alone (--container) is followed into the overlay too.
    let (startup, _) = traced_by(&["--container", answerer], || {});
    assert!(
        startup
            .iter()
            .any(|l| l.contains(&format!("attached  tc egress on {label}br0"))),
        "{startup:#?}"
    );
}

#[test]
fn a_port_published_on_the_node_is_dnated_to_its_task_through_docker_gwbridge() {
    let _lock = lab_lock();
    let _lab = SwarmLab::up();
    let (published, target) = (30791u16, 7201u16);
    swarm::service(
        "plover",
        1,
        OVERLAY,
        &[
            "--publish",
            &format!("mode=host,published={published},target={target},protocol=udp"),
        ],
        &["udp-echo", "--port", &target.to_string()],
    )
    .unwrap();
    let to = format!("{}:{published}", lab::HOST_ADDRESS);
    let (_, lines) = traced_by(&["--service", "plover"], || {
        assert!(
            lab::external_command(&lab_bin(), &["client", "udp", &to])
                .output()
                .unwrap()
                .status
                .success()
        )
    });
    let request = request_from(&lines, &lab::EXTERNAL_ADDRESS.to_string(), published);
    let steps = steps(&lines, request);
    let dnat = step(steps, "request", "nat");
    assert_eq!(dnat["nat"], "dnat", "{dnat}");
    assert!(
        dnat["after"]
            .as_str()
            .is_some_and(|a| a.ends_with(&format!(":{target}"))),
        "{dnat}"
    );
    let into = step(steps, "request", "routed_into_bridge");
    assert_eq!(into["bridge"], "docker_gwbridge", "{into}");
    assert_eq!(step(steps, "reply", "nat")["nat"], "undo_dnat");
}

#[test]
fn a_task_reaches_outside_through_docker_gwbridge_masqueraded_on_the_way_out() {
    let _lock = lab_lock();
    let _lab = SwarmLab::up();
    let tasks = swarm::service(
        "sandpiper",
        1,
        OVERLAY,
        &[],
        &["udp-echo", "--port", "7203"],
    )
    .unwrap();
    let task = &tasks[0];
    let outside = OutsideEcho::start(5457);
    let (_, lines) = traced_by(&["--service", "sandpiper"], || {
        assert!(from_task(task, &outside.address))
    });
    drop(outside);
    let request = packet_to(&lines, 5457);
    let reply = reply_of(&lines, request);
    // Out of the task's docker_gwbridge port into the bridge (L2), up to the host's IP stack
    // and routed out: the overlay is for tasks, the way out is the node's own bridge.
    let hops_out = hops(request);
    let from_port = hops_out
        .iter()
        .find(|(_, kind, _)| kind == "from_port")
        .unwrap_or_else(|| panic!("no from_port: {hops_out:#?}"));
    assert_eq!(from_port.0, "l2", "{hops_out:#?}");
    assert!(from_port.2.ends_with(&format!("({task})")), "{hops_out:#?}");
    assert!(
        !from_port.2.starts_with("overlay "),
        "not the overlay's port: {hops_out:#?}"
    );
    let steps = steps(&lines, request);
    assert_eq!(
        outcome(steps, "request").as_deref(),
        Some("routed"),
        "{steps:#?}"
    );
    // Masqueraded to the host's address on the way out, undone on the reply's way in, which
    // goes back into docker_gwbridge.
    let snat = step(steps, "request", "nat");
    assert_eq!(snat["nat"], "snat", "{snat}");
    assert_eq!(
        snat["after"].as_str().and_then(|a| a.split(':').next()),
        Some(lab::HOST_ADDRESS.to_string().as_str()),
        "{snat}"
    );
    let undo = step(steps, "reply", "nat");
    assert_eq!(undo["nat"], "undo_snat", "{undo}");
    let into = step(steps, "reply", "routed_into_bridge");
    assert_eq!(into["bridge"], "docker_gwbridge", "{into}");
    let hops_back = hops(reply);
    assert!(
        hops_back.iter().any(|(layer, kind, place)| layer == "l2"
            && kind == "to_port"
            && place.ends_with(&format!("({task})"))),
        "{hops_back:#?}"
    );
}

#[test]
fn the_routing_mesh_is_said_to_need_ipvs_where_the_kernel_has_none() {
    let _lock = lab_lock();
    let _lab = SwarmLab::up();
    let has_ipvs = std::path::Path::new("/proc/net/ip_vs").exists()
        || std::path::Path::new("/sys/module/ip_vs").exists();
    swarm::service(
        "grebe",
        1,
        OVERLAY,
        &["--publish", "published=30792,target=7202,protocol=udp"],
        &["udp-echo", "--port", "7202"],
    )
    .unwrap();
    let (startup, _) = traced_by(&["--service", "grebe"], || {});
    let note = startup
        .iter()
        .find(|l| l.contains("routing mesh"))
        .map(String::as_str);
    if has_ipvs {
        assert_eq!(note, None, "IPVS is here: {startup:#?}");
    } else {
        let note = note.unwrap_or_else(|| panic!("no word of the mesh: {startup:#?}"));
        assert!(
            note.contains("30792/udp") && note.contains("needs IPVS"),
            "{note}"
        );
    }
}

#[test]
fn a_task_scheduled_while_dockflow_follows_its_service_is_followed_too() {
    let _lock = lab_lock();
    let _lab = SwarmLab::up();
    let first = swarm::service(
        "tern",
        1,
        OVERLAY,
        &["--endpoint-mode", "dnsrr"],
        &["udp-echo", "--port", "7210"],
    )
    .unwrap();
    let mut dockflow = Dockflow::start(&["--service", "tern", "--json"]);
    run("docker", &["service", "scale", "--detach", "tern=2"]).unwrap();
    // dockflow says it followed the service onto the new task's veths, in the overlay too.
    dockflow.wait_for_stderr(&format!("moved: attached tc ingress on overlay {OVERLAY}:"));
    let tasks = swarm::tasks("tern").unwrap();
    let newcomer = tasks
        .iter()
        .find(|t| !first.contains(t))
        .expect("a second task")
        .clone();
    let to = swarm::address(&first[0], OVERLAY).unwrap();
    let from = swarm::address(&newcomer, OVERLAY).unwrap();
    assert!(from_task(&newcomer, &format!("{to}:7210")));
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "{stderr:#?}");
    let lines = json_events(&stdout);
    let request = request_from(&lines, &from, 7210);
    let entered = hops(request)
        .into_iter()
        .find(|(_, kind, _)| kind == "from_port")
        .unwrap_or_else(|| panic!("{request:#}"));
    assert!(
        entered.2.ends_with(&format!("({newcomer})")),
        "the new task's port, named: {entered:?}"
    );
}
