//! Paths whose story depends on the Docker engine and its settings, end to end on the
//! catalogue's networks: direct access to a container's address (routed by 20.10, dropped by
//! 28's raw-table rule), an IPv6 published port (NAT66 with ip6tables, docker-proxy from the
//! host), gateway modes `routed` and `nat-unprotected`, an `--internal` network, and Docker 28's
//! gratuitous ARP.
//! `cargo xtask test` runs them on each engine; each test asserts what that engine does.

use std::process::Command;

use dockflow_lab::{lab, shell::run};
use dockflow_tests::{catalogue::*, lab_bin, lab_lock};
use serde_json::Value;

/// `client udp ADDR` from the lab's external namespace; whether an echo came back.
fn from_outside(to: &str) -> bool {
    lab::external_command(&lab_bin(), &["client", "udp", to])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn direct_access_to_a_container_address_is_told_as_each_engine_handles_it() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let to = format!("{LEDGER}:{PORT}");
    let engine = engine_major();
    let lines = traced("ledger", || {
        // 28 protects container addresses from other hosts; 20.10 lets a published port in.
        assert_eq!(
            from_outside(&to),
            engine < 28,
            "answered on Docker {engine}"
        );
    });
    let request = request_from(&lines, &lab::EXTERNAL_ADDRESS.to_string(), PORT);
    let steps = steps(&lines, request);
    if engine >= 28 {
        let drop = step(steps, "request", "dropped");
        assert_eq!(drop["rule"]["table"], "raw", "{drop}");
        assert_eq!(drop["rule"]["chain"], "PREROUTING", "{drop}");
        let docker = step(steps, "request", "docker_rule");
        assert_eq!(docker["why"], "direct_access", "{docker}");
        assert_eq!(docker["container"], "ledger", "{docker}");
        let text = docker["text"].as_str().unwrap();
        assert!(
            text.contains("allow-direct-routing") && text.contains("routed"),
            "{text}"
        );
        assert!(!steps.iter().any(|s| s["kind"] == "no_reply"), "{steps:#?}");
    } else {
        assert_eq!(outcome(steps, "request").as_deref(), Some("routed"));
        assert!(
            !steps.iter().any(|s| s["kind"] == "nat"),
            "no NAT either way: {steps:#?}"
        );
    }
}

/// The lab's external link with IPv6 addresses too, removed again when dropped.
struct ExternalIpv6;

const HOST6: &str = "fd00:199::1";
const EXTERNAL6: &str = "fd00:199::2";

impl ExternalIpv6 {
    fn up() -> Self {
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{HOST6}/64"),
                "dev",
                lab::HOST_LINK,
                "nodad",
            ],
        )
        .unwrap();
        let netns = ["netns", "exec", lab::EXTERNAL_NETNS, "ip"];
        let ext = |args: &[&str]| run("ip", &[&netns[..], args].concat()).unwrap();
        ext(&[
            "addr",
            "add",
            &format!("{EXTERNAL6}/64"),
            "dev",
            lab::EXTERNAL_LINK,
            "nodad",
        ]);
        ext(&["-6", "route", "add", "default", "via", HOST6]);
        ExternalIpv6
    }
}

impl Drop for ExternalIpv6 {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", &format!("{HOST6}/64"), "dev", lab::HOST_LINK])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "exec", lab::EXTERNAL_NETNS, "ip", "addr", "del"])
            .args([&format!("{EXTERNAL6}/64"), "dev", lab::EXTERNAL_LINK])
            .status();
    }
}

#[test]
fn an_ipv6_published_port_is_nated_from_outside_and_proxied_from_the_host() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    // Docker 27 and later write IPv6 NAT rules by default; 20.10 only with ip6tables and
    // experimental on, which the seed's settings leave off.
    if engine_major() < 27 {
        // 20.10 with the seed's settings publishes no IPv6 port: nothing to tell.
        eprintln!(
            "engines: Docker {} has ip6tables off: no IPv6 published ports",
            engine_major()
        );
        return;
    }
    let _link = ExternalIpv6::up();
    let to = format!("[{HOST6}]:{PUBLISHED}");
    let lines = traced("ledger", || {
        assert!(from_outside(&to), "an answer over IPv6")
    });
    let request = request_from(&lines, EXTERNAL6, PUBLISHED);
    let steps = steps(&lines, request);
    let dnat = step(steps, "request", "nat");
    assert_eq!(dnat["nat"], "dnat", "{dnat}");
    assert_eq!(dnat["after"], format!("[{LEDGER6}]:{PORT}"));
    assert_eq!(dnat["at"]["family"], "ipv6");
    assert_eq!(outcome(steps, "request").as_deref(), Some("routed"));
    let undo = step(steps, "reply", "nat");
    assert_eq!(undo["nat"], "undo_dnat", "{undo}");
    assert_eq!(undo["after"], format!("[{HOST6}]:{PUBLISHED}"));
    // From the host's own loopback: docker-proxy on [::], relaying to ledger's IPv6 address.
    let proxy = userland_proxy_for("::", PUBLISHED);
    assert_eq!(
        proxy.is_some(),
        userland_proxy_for("0.0.0.0", PUBLISHED).is_some(),
        "with the userland proxy on, the port is proxied in both families"
    );
    if let Some(pid) = proxy {
        let lines = traced("ledger", || {
            from_host(&["udp", &format!("[::1]:{PUBLISHED}")])
        });
        assert_proxied(&lines, "::1", PUBLISHED, (GATEWAY6, LEDGER6, PORT), pid);
    }
}

const ROUTED_NETWORK: &str = "dfroute";
const ROUTED_SUBNET: &str = "10.217.9.0/24";
const COURIER: &str = "10.217.9.10";

#[test]
fn a_routed_network_sends_its_containers_address_out_unmasqueraded() {
    let _lock = lab_lock();
    if engine_major() < 28 {
        eprintln!("engines: gateway mode routed came with Docker 27");
        return;
    }
    let _catalogue = Catalogue::up();
    let _network = ExtraNetwork::create(
        ROUTED_NETWORK,
        ROUTED_SUBNET,
        &["-o", "com.docker.network.bridge.gateway_mode_ipv4=routed"],
        ("courier", COURIER),
    );
    let outside = OutsideEcho::start(5455);
    let lines = traced("courier", || {
        assert!(from_container("courier", &outside.address))
    });
    drop(outside);
    let request = request_from(&lines, COURIER, 5455);
    let steps = steps(&lines, request);
    assert_eq!(outcome(steps, "request").as_deref(), Some("routed"));
    assert!(
        !steps.iter().any(|s| s["kind"] == "nat"),
        "no masquerade either way: {steps:#?}"
    );
    let reply = reply_of(&lines, request);
    assert_eq!(
        reply["packet"]["dst"], COURIER,
        "the reply comes back to the container's own address"
    );
}

const UNPROTECTED_NETWORK: &str = "dfkiosk";
const UNPROTECTED_SUBNET: &str = "10.219.11.0/24";
const KIOSK: &str = "10.219.11.10";

#[test]
fn a_nat_unprotected_network_lets_outside_hosts_reach_an_unpublished_port() {
    let _lock = lab_lock();
    if engine_major() < 28 {
        eprintln!("engines: gateway mode nat-unprotected came with Docker 28");
        return;
    }
    let _catalogue = Catalogue::up();
    let _network = ExtraNetwork::create(
        UNPROTECTED_NETWORK,
        UNPROTECTED_SUBNET,
        &[
            "-o",
            "com.docker.network.bridge.gateway_mode_ipv4=nat-unprotected",
        ],
        ("kiosk", KIOSK),
    );
    let to = format!("{KIOSK}:{PORT}");
    // No port is published: in the default gateway mode (nat) this is dropped, as in the
    // direct-access test above.
    let lines = traced("kiosk", || {
        assert!(from_outside(&to), "an answer from kiosk")
    });
    let request = request_from(&lines, &lab::EXTERNAL_ADDRESS.to_string(), PORT);
    let steps = steps(&lines, request);
    assert_eq!(outcome(steps, "request").as_deref(), Some("routed"));
    for wrong in ["dropped", "docker_rule", "nat"] {
        assert!(!steps.iter().any(|s| s["kind"] == wrong), "{steps:#?}");
    }
    assert_eq!(reply_of(&lines, request)["packet"]["src"], KIOSK);
}

const INTERNAL_NETWORK: &str = "dfvault";
const INTERNAL_SUBNET: &str = "10.218.10.0/24";
const VAULT: &str = "10.218.10.10";

#[test]
fn an_internal_network_has_no_way_out_and_the_drop_says_so() {
    let _lock = lab_lock();
    let _catalogue = Catalogue::up();
    let _network = ExtraNetwork::create(
        INTERNAL_NETWORK,
        INTERNAL_SUBNET,
        &["--internal"],
        ("vault", VAULT),
    );
    // Docker 28 gives an internal network's containers no default route (20.10 does): give
    // vault one, as a container with NET_ADMIN could, so that its packet reaches the host's
    // rules.
    let pid = run("docker", &["inspect", "-f", "{{.State.Pid}}", "vault"]).unwrap();
    let gateway = INTERNAL_SUBNET.replace(".0/24", ".1");
    run(
        "nsenter",
        &[
            "-t",
            pid.trim(),
            "-n",
            "ip",
            "route",
            "replace",
            "default",
            "via",
            &gateway,
        ],
    )
    .unwrap();
    let outside = OutsideEcho::start(5456);
    let lines = traced("vault", || {
        assert!(!from_container("vault", &outside.address))
    });
    drop(outside);
    let request = request_from(&lines, VAULT, 5456);
    let steps = steps(&lines, request);
    let drop = step(steps, "request", "dropped");
    assert_eq!(drop["rule"]["verdict"], "drop", "{drop}");
    let docker = step(steps, "request", "docker_rule");
    assert_eq!(docker["why"], "internal_network", "{docker}");
}

#[test]
fn a_new_endpoint_announced_by_gratuitous_arp_is_told_as_an_announcement() {
    let _lock = lab_lock();
    if engine_major() < 28 {
        eprintln!(
            "engines: Docker {} sends no gratuitous ARP for new endpoints",
            engine_major()
        );
        return;
    }
    let _catalogue = Catalogue::up();
    let newcomer = "10.213.5.40";
    // The newcomer's own announcements may come before the trace follows it; the others'
    // (Docker repeats them for a while after an endpoint comes up) are the same story.
    let subnet = SUBNET.trim_end_matches(".0/24");
    let is_announcement = |l: &Value| {
        let p = &l["packet"];
        l["type"] == "packet"
            && p["arp"].is_string()
            && p["src"] == p["dst"]
            && p["src"].as_str().is_some_and(|a| a.starts_with(subnet))
    };
    let lines = traced_network_until(
        NETWORK,
        || run_echo("clerk", NETWORK, newcomer, None, None),
        "an announcement",
        |lines| lines.iter().any(is_announcement),
    );
    let announcement = lines
        .iter()
        .find(|l| is_announcement(l))
        .unwrap_or_else(|| panic!("no announcement on {NETWORK}: {lines:#?}"));
    let steps = steps(&lines, announcement);
    let announced = step(steps, "request", "arp_announced");
    assert_eq!(announced["address"], announcement["packet"]["src"]);
    assert!(
        !steps
            .iter()
            .any(|s| s["kind"] == "no_reply" || s["kind"] == "arp_asked"),
        "{steps:#?}"
    );
}

/// A Docker network of its own with one echo container, both removed when dropped.
struct ExtraNetwork(&'static str, &'static str);

impl ExtraNetwork {
    fn create(
        name: &'static str,
        subnet: &str,
        options: &[&str],
        (container, address): (&'static str, &str),
    ) -> Self {
        let _ = Command::new("docker")
            .args(["rm", "-f", container])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", name])
            .output();
        let label = format!("{}=1", lab::LABEL);
        let bridge = format!("com.docker.network.bridge.name={name}0");
        let args = [
            &[
                "network", "create", "--subnet", subnet, "-o", &bridge, "--label", &label,
            ][..],
            options,
            &[name],
        ]
        .concat();
        run("docker", &args).unwrap();
        let network = ExtraNetwork(name, container);
        run_echo(container, name, address, None, None);
        network
    }
}

impl Drop for ExtraNetwork {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", self.1]).output();
        let _ = Command::new("docker")
            .args(["network", "rm", self.0])
            .output();
    }
}
