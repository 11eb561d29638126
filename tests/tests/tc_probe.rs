//! The first probe on the real kernel: tc on the radius container's veth and on docker1 sees
//! the RADIUS request (after DNAT) and its reply, and leaves nothing attached after exit.

use dockflow_lab::lab;
use dockflow_tests::{Dockflow, json_events, lab_bin, lab_lock, our_bpf_programs};
use serde_json::Value;

fn matches(e: &Value, probe: &str, iface: &str, src: &str, sport: u64, dst: &str, dport: u64) -> bool {
    e["probe"] == probe
        && e["interface"] == iface
        && e["packet"]["src"] == src
        && e["packet"]["sport"] == sport
        && e["packet"]["dst"] == dst
        && e["packet"]["dport"] == dport
}

#[test]
fn tc_sees_the_radius_request_and_reply_on_veth_and_bridge() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();

    let dockflow = Dockflow::start(&["--container", "radius", "--json"]);
    let veth = dockflow
        .startup
        .iter()
        .find_map(|l| l.trim().strip_prefix("attached  tc ingress on veth").map(|rest| format!("veth{rest}")))
        .unwrap_or_else(|| panic!("no veth attachment reported: {:?}", dockflow.startup));
    assert!(dockflow.startup.iter().any(|l| l.contains("attached  tc ingress on docker1")), "{:?}", dockflow.startup);

    let answer = lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    assert!(answer.starts_with("Access-Accept"), "{answer}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok, "dockflow failed after SIGINT");
    let events = json_events(&stdout);

    let client = lab::EXTERNAL_ADDRESS.to_string();
    let container = "172.20.0.2";
    let request = |probe, iface: &str| {
        events.iter().any(|e| e["packet"]["sport"] != 1812 && matches(e, probe, iface, &client, e["packet"]["sport"].as_u64().unwrap_or(0), container, 1812))
    };
    let reply = |probe, iface: &str| {
        events.iter().any(|e| matches(e, probe, iface, container, 1812, &client, e["packet"]["dport"].as_u64().unwrap_or(0)))
    };
    // Request: the IP stack sends it into the bridge (docker1 egress), already DNATed, and the
    // bridge hands it to the container's port (veth egress).
    assert!(request("tc_egress", "docker1"), "request not seen leaving the IP stack into docker1: {events:#?}");
    assert!(request("tc_egress", &veth), "request not seen entering the container: {events:#?}");
    // Reply: leaves the container (veth ingress) and is passed up by the bridge (docker1 ingress).
    assert!(reply("tc_ingress", &veth), "reply not seen leaving the container: {events:#?}");
    assert!(reply("tc_ingress", "docker1"), "reply not seen passed up by docker1: {events:#?}");

    assert_eq!(our_bpf_programs(), Vec::<String>::new(), "programs left loaded after exit");
    lab::down().unwrap();
}
