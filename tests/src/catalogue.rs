//! The catalogue's own Docker networks and containers (names, addresses and ports other than
//! the lab's, so nothing is tuned to it), and the helpers its end-to-end tests share: tracing
//! a container while some traffic runs, and reading packets and explanation steps back.

use std::process::Command;

use dockflow_lab::{lab, shell::run};
use serde_json::Value;

use crate::{Dockflow, json_events, lab_bin};

pub const NETWORK: &str = "dfcat";
pub const BRIDGE: &str = "dfcat0";
pub const SUBNET: &str = "10.213.5.0/24";
pub const GATEWAY: &str = "10.213.5.1";
pub const LEDGER: &str = "10.213.5.10";
pub const BILLING: &str = "10.213.5.20";
pub const AUDITOR: &str = "10.213.5.30";
/// The same network's IPv6 side (Docker's `--ipv6`).
pub const SUBNET6: &str = "fd00:213:5::/64";
pub const LEDGER6: &str = "fd00:213:5::10";
pub const BILLING6: &str = "fd00:213:5::20";
pub const GATEWAY6: &str = "fd00:213:5::1";
/// Another Docker network, isolated from the first by Docker's rules.
pub const OTHER_NETWORK: &str = "dfiso";
pub const OTHER_SUBNET: &str = "10.214.6.0/24";
pub const OUTSIDER: &str = "10.214.6.5";
pub const PORT: u16 = 5353;
pub const PUBLISHED: u16 = 15353;

/// The catalogue's networks and containers, removed again when dropped (also when a test fails).
pub struct Catalogue;

impl Catalogue {
    pub fn up() -> Self {
        lab::up(&lab_bin()).unwrap();
        let catalogue = Catalogue;
        catalogue.remove();
        for (name, bridge, subnet, ipv6) in [
            (NETWORK, BRIDGE, SUBNET, Some(SUBNET6)),
            (OTHER_NETWORK, "dfiso0", OTHER_SUBNET, None),
        ] {
            create_network(name, bridge, subnet, ipv6);
        }
        let publish = format!("{PUBLISHED}:{PORT}/udp");
        for (name, network, address, address6, publish) in [
            (
                "ledger",
                NETWORK,
                LEDGER,
                Some(LEDGER6),
                Some(publish.as_str()),
            ),
            ("billing", NETWORK, BILLING, Some(BILLING6), None),
            ("auditor", NETWORK, AUDITOR, None, None),
            ("outsider", OTHER_NETWORK, OUTSIDER, None, None),
        ] {
            run_echo(name, network, address, address6, publish);
        }
        catalogue
    }

    pub fn remove(&self) {
        let _ = Command::new("docker")
            .args([
                "rm", "-f", "ledger", "billing", "auditor", "outsider", "clerk",
            ])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", NETWORK, OTHER_NETWORK])
            .output();
    }
}

/// A Docker network of the tests' own (labelled, so `lab down` finds it after a crash).
pub fn create_network(name: &str, bridge: &str, subnet: &str, ipv6: Option<&str>) {
    let v6 = match ipv6 {
        Some(subnet6) => vec!["--ipv6", "--subnet", subnet6],
        None => vec![],
    };
    let bridge = format!("com.docker.network.bridge.name={bridge}");
    let label = format!("{}=1", lab::LABEL);
    let args = [
        "network", "create", "--subnet", subnet, "-o", &bridge, "--label", &label,
    ];
    run("docker", &[&args[..], &v6, &[name]].concat()).unwrap();
}

/// A container `name` on `network` echoing UDP on [`PORT`], maybe published (`HOST:PORT/udp`).
pub fn run_echo(
    name: &str,
    network: &str,
    address: &str,
    address6: Option<&str>,
    publish: Option<&str>,
) {
    let port = PORT.to_string();
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "dockflow.lab=1",
        "--network",
        network,
        "--ip",
        address,
    ];
    if let Some(p) = publish {
        args.extend(["-p", p]);
    }
    if let Some(a) = address6 {
        args.extend(["--ip6", a]);
    }
    args.extend([lab::IMAGE, "serve", "udp-echo", "--port", &port]);
    run("docker", &args).unwrap();
}

impl Drop for Catalogue {
    fn drop(&mut self) {
        self.remove();
        let _ = lab::down();
    }
}

/// `client udp ADDR` from inside a container; returns whether an echo came back.
pub fn from_container(container: &str, to: &str) -> bool {
    Command::new("docker")
        .args(["exec", container, "/dockflow-lab", "client", "udp", to])
        .output()
        .unwrap()
        .status
        .success()
}

/// `dockflow-lab client ARGS` on the host; it must get its answer.
pub fn from_host(args: &[&str]) {
    let out = Command::new(lab_bin())
        .arg("client")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Follows `target` while `work` runs; the JSON lines it printed.
pub fn traced(target: &str, work: impl FnOnce()) -> Vec<Value> {
    traced_with(&["--container", target], work)
}

/// Follows every container on `network` while `work` runs; the JSON lines it printed.
pub fn traced_network(network: &str, work: impl FnOnce()) -> Vec<Value> {
    traced_with(&["--network", network], work)
}

/// [`traced_network`] for work whose packets come on the kernel's or Docker's own time (after
/// the command that caused them returned): waits until the lines shown satisfy `shown`.
pub fn traced_network_until(
    network: &str,
    work: impl FnOnce(),
    what: &str,
    shown: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let dockflow = Dockflow::start(&["--network", network, "--json"]);
    work();
    dockflow.wait_for_stdout(what, |stdout| {
        shown(
            &stdout
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>(),
        )
    });
    stop_json(dockflow)
}

/// Work that waits for its own answers (or its client's timeout): when it returns, the
/// kernel has emitted every event of it, and dockflow takes all of them at its stop.
fn traced_with(target: &[&str], work: impl FnOnce()) -> Vec<Value> {
    let dockflow = Dockflow::start(&[target, &["--json"]].concat());
    work();
    stop_json(dockflow)
}

/// Stops dockflow as a user does (Ctrl-C); the JSON lines it printed.
fn stop_json(dockflow: Dockflow) -> Vec<Value> {
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok, "dockflow failed");
    json_events(&stdout)
}

pub fn packet_to(lines: &[Value], dport: u16) -> &Value {
    lines
        .iter()
        .rfind(|l| l["type"] == "packet" && l["packet"]["dport"] == dport)
        .unwrap_or_else(|| panic!("no packet to port {dport}: {lines:#?}"))
}

pub fn reply_of<'a>(lines: &'a [Value], request: &Value) -> &'a Value {
    lines
        .iter()
        .find(|l| {
            l["type"] == "packet"
                && l["direction"] == "reply"
                && l["connection"] == request["connection"]
        })
        .unwrap_or_else(|| panic!("no reply: {lines:#?}"))
}

pub fn steps<'a>(lines: &'a [Value], packet: &Value) -> &'a Vec<Value> {
    lines
        .iter()
        .find(|l| l["type"] == "explanation" && l["connection"] == packet["connection"])
        .and_then(|e| e["steps"].as_array())
        .unwrap_or_else(|| panic!("no explanation: {lines:#?}"))
}

pub fn step_kinds(steps: &[Value], role: &str) -> Vec<String> {
    steps
        .iter()
        .filter(|s| s["role"] == role)
        .map(|s| s["kind"].as_str().unwrap().to_string())
        .collect()
}

pub fn outcome(steps: &[Value], role: &str) -> Option<String> {
    steps
        .iter()
        .find(|s| s["kind"] == "outcome" && s["role"] == role)
        .map(|s| s["outcome"].as_str().unwrap().to_string())
}

/// The steps of an exchange a host process started with a container: sent by the host (it
/// starts at IP output), the reply delivered to it (IP input).
pub fn assert_sent_by_host_and_answered(steps: &[Value]) {
    assert_eq!(steps[0]["origin"], "host_process", "{steps:#?}");
    assert_eq!(outcome(steps, "request").as_deref(), Some("sent_by_host"));
    assert_eq!(
        outcome(steps, "reply").as_deref(),
        Some("delivered_locally"),
        "{steps:#?}"
    );
}

pub fn nat_position(steps: &[Value], kind: &str) -> usize {
    steps
        .iter()
        .position(|s| s["kind"] == "nat" && s["nat"] == kind)
        .unwrap_or_else(|| panic!("no {kind} step: {steps:#?}"))
}

/// A UDP echo server in the lab's external namespace (outside the host, as far as NAT goes),
/// ended when dropped.
pub struct OutsideEcho {
    server: std::process::Child,
    pub port: u16,
    /// Where containers reach it: "10.199.0.2:PORT".
    pub address: String,
}

impl OutsideEcho {
    pub fn start(port: u16) -> Self {
        let server = lab::external_command(
            &lab_bin(),
            &["serve", "udp-echo", "--port", &port.to_string()],
        )
        .spawn()
        .unwrap();
        // Listening once its socket shows in the namespace's UDP table.
        crate::eventually("the outside echo server listens", || {
            std::process::Command::new("ip")
                .args(["netns", "exec", lab::EXTERNAL_NETNS, "ss", "-Hlun"])
                .output()
                .is_ok_and(|out| {
                    String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} "))
                })
        });
        Self {
            server,
            port,
            address: format!("{}:{port}", lab::EXTERNAL_ADDRESS),
        }
    }
}

impl Drop for OutsideEcho {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// The Docker engine's major version (20 for 20.10, 28 for 28.5).
pub fn engine_major() -> u32 {
    let version = run("docker", &["version", "--format", "{{.Server.Version}}"]).unwrap();
    version
        .trim()
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no engine version in {version:?}"))
}

/// The docker-proxy process listening on `host_ip:port` (a published port), if dockerd's userland proxy is on
/// (Docker's default; the seed's engine runs with it off).
pub fn userland_proxy_for(host_ip: &str, port: u16) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-a", "docker-proxy"])
        .output()
        .unwrap();
    let listen = format!("-host-ip {host_ip} -host-port {port} ");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        l.contains(&listen)
            .then(|| l.split_whitespace().next()?.parse().ok())
            .flatten()
    })
}

/// The explanation step of `kind` for `role`, which must be there.
pub fn step<'a>(steps: &'a [Value], role: &str, kind: &str) -> &'a Value {
    steps
        .iter()
        .find(|s| s["kind"] == kind && s["role"] == role)
        .unwrap_or_else(|| panic!("no {role} {kind} step: {steps:#?}"))
}

/// The first packet of the connection whose request went to `dport` from `src`.
pub fn request_from<'a>(lines: &'a [Value], src: &str, dport: u16) -> &'a Value {
    lines
        .iter()
        .find(|l| {
            l["type"] == "packet"
                && l["direction"] == "request"
                && l["packet"]["src"] == src
                && l["packet"]["dport"] == dport
        })
        .unwrap_or_else(|| panic!("no request {src} -> port {dport}: {lines:#?}"))
}

/// A proxied exchange's two legs: the client's connection to the proxy (to `listen_port`) and
/// the proxy's own from the bridge's `gateway` address to `backend`; asserts they are linked as
/// one group by the proxy `pid`, with the steps that say so, and that both were answered.
pub fn assert_proxied(
    lines: &[Value],
    client: &str,
    listen_port: u16,
    (gateway, backend, backend_port): (&str, &str, u16),
    pid: u32,
) {
    let front = request_from(lines, client, listen_port);
    let back = request_from(lines, gateway, backend_port);
    assert_eq!(back["packet"]["dst"], backend);
    let group = front["connection"].clone();
    for (packet, leg) in [(front, "front"), (back, "back")] {
        assert_eq!(packet["proxy"]["leg"], leg, "{packet}");
        assert_eq!(packet["proxy"]["pid"], pid, "{packet}");
        assert_eq!(packet["proxy"]["group"], group, "{packet}");
        reply_of(lines, packet);
    }
    let front_steps = steps(lines, front);
    assert_eq!(
        outcome(front_steps, "request").as_deref(),
        Some("delivered_locally")
    );
    let accepts = step(front_steps, "request", "proxy_accepts");
    let relays_to = if backend.contains(':') {
        format!("[{backend}]:{backend_port}")
    } else {
        format!("{backend}:{backend_port}")
    };
    assert_eq!(accepts["relays_to"], relays_to);
    let back_steps = steps(lines, back);
    assert_eq!(back_steps[0]["origin"], "host_process", "{back_steps:#?}");
    let opens = step(back_steps, "request", "proxy_opens");
    assert!(
        opens["text"]
            .as_str()
            .unwrap()
            .contains(&format!("to relay connection {group}")),
        "{opens}"
    );
}
