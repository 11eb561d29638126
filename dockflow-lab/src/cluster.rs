//! A swarm of several Docker engines on this one machine, standing for a cluster: each node a
//! network namespace of its own with its own `dockerd` (data root, exec root, socket), the
//! nodes wired together by a bridge inside a namespace of its own (the "physical network":
//! nothing of the host's firewall sees their traffic), the first node the manager, the others
//! joined as workers. Every address is the cluster's own; nothing leaves the machine.
//!
//! One dockflow per node runs as it would on a real cluster: inside the node's namespace,
//! talking to that node's engine (`DOCKER_HOST`).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::IMAGE,
    shell::{output, run, succeeds},
};

/// The namespace holding the wire between the nodes, and its bridge.
pub const WIRE_NETNS: &str = "dfwire";
const WIRE: &str = "wire0";
/// The nodes' subnet on the wire; node i has .11 + i.
const SUBNET_PREFIX: &str = "10.231.9";
/// Where the nodes' engines keep their state.
const STATE: &str = "/var/lib/dockflow-cluster";
/// The engines' exec roots, pidfiles and sockets: a node's SandboxKey files are under it.
pub const RUN: &str = "/run/dockflow-cluster";

/// One node of the cluster.
#[derive(Clone, Debug)]
pub struct Node {
    /// "node-a", "node-b", ...
    pub name: String,
    /// Its network namespace, under /run/netns.
    pub netns: String,
    /// Its address on the wire (what the swarm advertises).
    pub address: String,
}

impl Node {
    fn new(i: usize) -> Self {
        let letter = (b'a' + i as u8) as char;
        Self {
            name: format!("node-{letter}"),
            netns: format!("dfnode-{letter}"),
            address: format!("{SUBNET_PREFIX}.{}", 11 + i),
        }
    }

    /// The namespace's file (for nsenter --net).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// `unix:///run/dockflow-cluster/node-a.sock`: DOCKER_HOST for this node's engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{RUN}/{}.sock", self.name)
    }

    fn pidfile(&self) -> PathBuf {
        PathBuf::from(RUN).join(format!("{}.pid", self.name))
    }

    /// `docker ARGS` against this node's engine.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        output(
            Command::new("docker")
                .arg("-H")
                .arg(self.docker_host())
                .args(args),
        )
    }

    /// Starts this node's engine inside its namespace and waits until it answers.
    fn start_engine(&self) -> Result<()> {
        let root = PathBuf::from(STATE).join(&self.name);
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(RUN)?;
        let log = std::fs::File::create(format!("/var/log/dockflow-cluster-{}.log", self.name))?;
        // setsid --fork: the engine is no child of this process (which would have to reap it)
        // and outlives it; its pid is in its pidfile.
        Command::new("setsid")
            .arg("--fork")
            .arg("nsenter")
            .arg(format!("--net={}", self.netns_path().display()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(&root)
            .arg("--exec-root")
            .arg(PathBuf::from(RUN).join(&self.name))
            .arg("--pidfile")
            .arg(self.pidfile())
            .arg("-H")
            .arg(self.docker_host())
            .arg("--userland-proxy=false")
            // The lab's servers ignore SIGTERM (pid 1 without a handler): no long grace.
            .arg("--shutdown-timeout=2")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting dockerd")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.docker(&["version"]).is_err() {
            if Instant::now() > deadline {
                bail!("the engine of {} did not answer within 60 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// The pid of this node's engine, if the dockerd this module started still runs.
    fn engine_pid(&self) -> Option<String> {
        let pid = std::fs::read_to_string(self.pidfile()).ok()?;
        let pid = pid.trim().to_string();
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        (comm.trim() == "dockerd").then_some(pid)
    }
}

/// The UDP port the swarm's overlays send VXLAN to: not Docker's default 4789, so that nothing
/// of dockflow's takes that port for granted (the vmtest's guests use the default).
pub const DATA_PATH_PORT: u16 = 4790;

/// The nodes of a cluster of `count`.
pub fn nodes(count: usize) -> Vec<Node> {
    (0..count).map(Node::new).collect()
}

/// Brings up a swarm of `count` engines (2 or 3), each with the lab image (taken from the
/// host engine, where the lab put it). Idempotent only from nothing: an existing cluster is
/// taken down first.
pub fn up(count: usize) -> Result<Vec<Node>> {
    if !(2..=3).contains(&count) {
        bail!("a cluster has 2 or 3 nodes");
    }
    down()?;
    let nodes = nodes(count);
    wire(&nodes).context("wiring the nodes")?;
    let image = std::env::temp_dir().join(format!("dockflow-cluster-{}.tar", std::process::id()));
    run("docker", &["save", "-o", &image.to_string_lossy(), IMAGE])
        .context("saving the lab image (is the lab up?)")?;
    let started = (|| -> Result<()> {
        for node in &nodes {
            node.start_engine()?;
            node.docker(&["load", "-i", &image.to_string_lossy()])?;
        }
        let manager = &nodes[0];
        manager.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            &manager.address,
            "--data-path-port",
            &DATA_PATH_PORT.to_string(),
        ])?;
        let token = manager.docker(&["swarm", "join-token", "-q", "worker"])?;
        for node in &nodes[1..] {
            node.docker(&[
                "swarm",
                "join",
                "--token",
                token.trim(),
                &format!("{}:2377", manager.address),
            ])?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&image);
    started?;
    Ok(nodes)
}

/// The wire's namespace and bridge, and each node's namespace with its link to the wire.
fn wire(nodes: &[Node]) -> Result<()> {
    run("ip", &["netns", "add", WIRE_NETNS])?;
    let ip_wire = |args: &[&str]| run("ip", &[&["-n", WIRE_NETNS], args].concat());
    ip_wire(&["link", "add", WIRE, "type", "bridge"])?;
    ip_wire(&["link", "set", WIRE, "up"])?;
    for node in nodes {
        run("ip", &["netns", "add", &node.netns])?;
        let port = format!("dfw-{}", node.name.trim_start_matches("node-"));
        run(
            "ip",
            &[
                "link",
                "add",
                &port,
                "netns",
                WIRE_NETNS,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.netns,
            ],
        )?;
        ip_wire(&["link", "set", &port, "master", WIRE, "up"])?;
        let ip_node = |args: &[&str]| run("ip", &[&["-n", node.netns.as_str()], args].concat());
        ip_node(&[
            "addr",
            "add",
            &format!("{}/24", node.address),
            "dev",
            "eth0",
        ])?;
        ip_node(&["link", "set", "eth0", "up"])?;
        ip_node(&["link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Takes every node's engine down (its swarm, tasks and networks go with its state), removes
/// the engines' state and the namespaces. Idempotent, and works after a crash: everything is
/// found by its fixed name.
pub fn down() -> Result<()> {
    // Out of the swarm first, workers before the manager: a manager told to stop while its
    // swarm is still up can take minutes over it.
    for node in nodes(3).iter().rev().filter(|n| n.engine_pid().is_some()) {
        let _ = node.docker(&["swarm", "leave", "--force"]);
    }
    // All at once: each engine gives its containers time to stop.
    let running: Vec<(Node, String)> = nodes(3)
        .into_iter()
        .filter_map(|node| {
            let pid = node.engine_pid()?;
            Some((node, pid))
        })
        .collect();
    for (_, pid) in &running {
        run("kill", &["-TERM", pid])?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for (node, pid) in &running {
        while PathBuf::from(format!("/proc/{pid}")).exists() {
            if Instant::now() > deadline {
                bail!(
                    "dockerd of {} (pid {pid}) did not stop within 60 s",
                    node.name
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let mounted = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for mount in mounted
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(STATE) || m.starts_with(RUN))
    {
        let _ = run("umount", &["-l", mount]);
    }
    for dir in [STATE, RUN] {
        if std::path::Path::new(dir).exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {dir}"))?;
        }
    }
    for node in nodes(3) {
        if succeeds("ip", &["netns", "pids", &node.netns]) {
            run("ip", &["netns", "del", &node.netns])?;
        }
    }
    if succeeds("ip", &["netns", "pids", WIRE_NETNS]) {
        run("ip", &["netns", "del", WIRE_NETNS])?;
    }
    Ok(())
}
