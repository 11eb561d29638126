//! Bringing the lab up, down, reporting it, and talking to it from the external namespace.
//!
//! Everything the lab makes is discoverable from the system itself (Docker labels, fixed names),
//! so `down` works after a crash without any state file.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::shell::{run, succeeds};

pub const NETWORK: &str = "infranet";
pub const BRIDGE: &str = "docker1";
pub const SUBNET: &str = "172.20.0.0/16";
pub const IMAGE: &str = "dockflow-lab:latest";
/// Docker label on everything the lab creates.
pub const LABEL: &str = "dockflow.lab";
pub const EXTERNAL_NETNS: &str = "dockflow-ext";
/// Host end of the external link.
pub const HOST_LINK: &str = "dfext0";
/// External namespace's end of the link.
pub const EXTERNAL_LINK: &str = "dfext1";
pub const HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 1);
pub const EXTERNAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
const LINK_PREFIX: u8 = 24;

pub const RADIUS_SECRET: &str = "testing123";
pub const RADIUS_USER: &str = "dockflow";
pub const RADIUS_PASSWORD: &str = "radius-demo";

/// Path of the responder binary inside the image.
const IMAGE_BINARY: &str = "/dockflow-lab";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Udp,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

/// One of the seed's containers.
#[derive(Clone, Copy, Debug)]
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub protocol: Protocol,
    pub address: Ipv4Addr,
    /// Arguments to the responder binary after `serve`.
    server: &'static [&'static str],
}

pub const SERVICES: [Service; 4] = [
    Service {
        name: "radius",
        port: 1812,
        protocol: Protocol::Udp,
        address: Ipv4Addr::new(172, 20, 0, 2),
        server: &["radius", "--port", "1812"],
    },
    Service {
        name: "syslog",
        port: 514,
        protocol: Protocol::Udp,
        address: Ipv4Addr::new(172, 20, 0, 3),
        server: &["udp-echo", "--port", "514"],
    },
    Service {
        name: "dhcp",
        port: 67,
        protocol: Protocol::Udp,
        address: Ipv4Addr::new(172, 20, 0, 4),
        server: &["udp-echo", "--port", "67"],
    },
    Service {
        name: "proxy",
        port: 8080,
        protocol: Protocol::Tcp,
        address: Ipv4Addr::new(172, 20, 0, 5),
        server: &["tcp-echo", "--port", "8080"],
    },
];

pub fn service(name: &str) -> Result<&'static Service> {
    SERVICES.iter().find(|s| s.name == name).with_context(|| {
        let names: Vec<_> = SERVICES.iter().map(|s| s.name).collect();
        format!(
            "no lab service named {name} (the lab has {})",
            names.join(", ")
        )
    })
}

/// Brings the whole lab up; idempotent. `responder` is the statically linked dockflow-lab binary.
pub fn up(responder: &Path) -> Result<()> {
    ensure_docker()?;
    build_image(responder).context("building the lab image")?;
    ensure_network().context("creating the infranet network")?;
    for service in &SERVICES {
        ensure_container(service)
            .with_context(|| format!("starting container {}", service.name))?;
    }
    ensure_external_namespace().context("creating the external namespace")?;
    Ok(())
}

/// Removes everything the lab made, found by label and name; idempotent.
pub fn down() -> Result<()> {
    if docker_reachable() {
        // The swarm's tasks carry the image's label too: the swarm goes first, or it would
        // start them again.
        crate::swarm::down().context("taking the lab's swarm down")?;
        crate::cluster::down().context("taking the lab's cluster down")?;
        let ids = run(
            "docker",
            &["ps", "-aq", "--filter", &format!("label={LABEL}")],
        )?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            run("docker", &[&["rm", "-f"], ids.as_slice()].concat())?;
        }
        if network_is_ours() {
            run("docker", &["network", "rm", NETWORK])?;
        }
        if succeeds("docker", &["image", "inspect", IMAGE]) {
            run("docker", &["image", "rm", "-f", IMAGE])?;
        }
    }
    remove_external_namespace()
}

/// Removes the external namespace and its link to the host. The link first: deleting it is
/// synchronous and takes its peer along, whereas a deleted namespace releases its veth later,
/// from a kernel work queue, which would race with a delete or re-create of our own.
fn remove_external_namespace() -> Result<()> {
    if succeeds("ip", &["link", "show", HOST_LINK]) && !succeeds("ip", &["link", "del", HOST_LINK])
    {
        ensure!(
            !succeeds("ip", &["link", "show", HOST_LINK]),
            "`ip link del {HOST_LINK}` failed"
        );
    }
    if namespace_exists() {
        run("ip", &["netns", "del", EXTERNAL_NETNS])?;
    }
    Ok(())
}

/// One line per lab component: present or absent.
pub fn status() -> Vec<(String, bool)> {
    let docker = docker_reachable();
    let mut lines = vec![("dockerd reachable".to_string(), docker)];
    lines.push((
        format!("image {IMAGE}"),
        docker && succeeds("docker", &["image", "inspect", IMAGE]),
    ));
    lines.push((
        format!("network {NETWORK} (bridge {BRIDGE}, {SUBNET})"),
        docker && network_is_ours(),
    ));
    for s in &SERVICES {
        lines.push((
            format!(
                "container {} ({}:{}/{})",
                s.name,
                s.address,
                s.port,
                s.protocol.as_str()
            ),
            docker && container_running(s.name),
        ));
    }
    lines.push((
        format!("namespace {EXTERNAL_NETNS} ({EXTERNAL_ADDRESS} via {HOST_LINK} {HOST_ADDRESS})"),
        namespace_exists(),
    ));
    lines
}

/// The argv that sends one request to `service` from the external namespace, as an external
/// host would: to the host's address on the external link, where Docker DNATs it.
pub fn client_command(responder: &Path, service: &Service, extra: &[String]) -> Command {
    let server = SocketAddr::from((HOST_ADDRESS, service.port)).to_string();
    let kind = match (service.name, service.protocol) {
        ("radius", _) => "radius",
        (_, Protocol::Udp) => "udp",
        (_, Protocol::Tcp) => "tcp",
    };
    let mut cmd = external_command(responder, &["client", kind, &server]);
    cmd.args(extra);
    cmd
}

/// `responder ARGS` run inside the external namespace.
pub fn external_command(responder: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", EXTERNAL_NETNS])
        .arg(responder)
        .args(args);
    cmd
}

/// Runs [`client_command`] and returns its one-line answer.
pub fn client(responder: &Path, service: &Service, extra: &[String]) -> Result<String> {
    if !namespace_exists() {
        bail!("the lab is not up (no namespace {EXTERNAL_NETNS}); run `cargo xtask lab up`");
    }
    let output = client_command(responder, service, extra)
        .output()
        .context("running the lab client")?;
    if !output.status.success() {
        bail!(
            "{} client failed: {}",
            service.name,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

fn docker_reachable() -> bool {
    succeeds("docker", &["version", "--format", "{{.Server.Version}}"])
}

fn ensure_docker() -> Result<()> {
    if !docker_reachable() {
        bail!("the Docker daemon is not reachable; run `cargo xtask setup` (it starts dockerd)");
    }
    Ok(())
}

/// `docker import` of the folder `root` as the image `name`, with Dockerfile-style `changes`.
pub fn import_image(root: &Path, changes: &[&str], name: &str) -> Result<()> {
    let tar = Command::new("tar")
        .arg("-C")
        .arg(root)
        .args(["-c", "."])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running tar")?;
    let status = Command::new("docker")
        .arg("import")
        .args(changes.iter().flat_map(|change| ["--change", change]))
        .args(["-", name])
        .stdin(tar.stdout.context("tar's output")?)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running docker import")?;
    if !status.success() {
        bail!("docker import of {name} failed");
    }
    Ok(())
}

fn build_image(responder: &Path) -> Result<()> {
    let staging = std::env::temp_dir().join(format!("dockflow-lab-image-{}", std::process::id()));
    std::fs::create_dir_all(&staging)?;
    let result = (|| {
        let dest = staging.join(IMAGE_BINARY.trim_start_matches('/'));
        std::fs::copy(responder, &dest)
            .with_context(|| format!("copying {}", responder.display()))?;
        // `docker import` takes a root filesystem tarball: here, one static binary.
        import_image(
            &staging,
            &[
                &format!("ENTRYPOINT [\"{IMAGE_BINARY}\"]"),
                &format!("LABEL {LABEL}=1"),
            ],
            IMAGE,
        )?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn network_is_ours() -> bool {
    run(
        "docker",
        &[
            "network",
            "inspect",
            NETWORK,
            "--format",
            &format!("{{{{index .Labels \"{LABEL}\"}}}}"),
        ],
    )
    .is_ok_and(|label| label.trim() == "1")
}

fn ensure_network() -> Result<()> {
    if network_is_ours() {
        return Ok(());
    }
    if succeeds("docker", &["network", "inspect", NETWORK]) {
        bail!(
            "a Docker network named {NETWORK} exists but was not made by the lab; remove it or rename it"
        );
    }
    run(
        "docker",
        &[
            "network",
            "create",
            "--driver",
            "bridge",
            "--subnet",
            SUBNET,
            "-o",
            &format!("com.docker.network.bridge.name={BRIDGE}"),
            "--label",
            &format!("{LABEL}=1"),
            NETWORK,
        ],
    )?;
    Ok(())
}

fn container_running(name: &str) -> bool {
    run(
        "docker",
        &["inspect", "--format", "{{.State.Running}}", name],
    )
    .is_ok_and(|s| s.trim() == "true")
}

fn ensure_container(service: &Service) -> Result<()> {
    let label = run(
        "docker",
        &[
            "inspect",
            "--format",
            &format!("{{{{index .Config.Labels \"{LABEL}\"}}}}"),
            service.name,
        ],
    );
    match label {
        Ok(label) if label.trim() == "1" && runs_current_image(service.name) => {
            if !container_running(service.name) {
                run("docker", &["start", service.name])?;
            }
            return Ok(());
        }
        // Ours, from an older build of the responder: replace it.
        Ok(label) if label.trim() == "1" => {
            run("docker", &["rm", "-f", service.name])?;
        }
        Ok(_) => bail!(
            "a container named {} exists but was not made by the lab",
            service.name
        ),
        Err(_) => {}
    }
    let publish = format!("{0}:{0}/{1}", service.port, service.protocol.as_str());
    let address = service.address.to_string();
    let mut args = vec![
        "run",
        "-d",
        "--name",
        service.name,
        "--hostname",
        service.name,
        "--label",
        "dockflow.lab=1",
        "--network",
        NETWORK,
        "--ip",
        &address,
        "-p",
        &publish,
        "--restart",
        "no",
        IMAGE,
        "serve",
    ];
    args.extend_from_slice(service.server);
    run("docker", &args)?;
    Ok(())
}

fn runs_current_image(container: &str) -> bool {
    let image = run(
        "docker",
        &["image", "inspect", "--format", "{{.Id}}", IMAGE],
    );
    let used = run("docker", &["inspect", "--format", "{{.Image}}", container]);
    matches!((image, used), (Ok(a), Ok(b)) if a.trim() == b.trim())
}

fn namespace_exists() -> bool {
    run("ip", &["netns", "list"]).is_ok_and(|list| {
        list.lines()
            .any(|l| l.split_whitespace().next() == Some(EXTERNAL_NETNS))
    })
}

fn ensure_external_namespace() -> Result<()> {
    if namespace_exists() && succeeds("ip", &["link", "show", HOST_LINK]) {
        return Ok(());
    }
    // A half-made namespace from a crash: start over.
    remove_external_namespace()?;
    let host_cidr = format!("{HOST_ADDRESS}/{LINK_PREFIX}");
    let external_cidr = format!("{EXTERNAL_ADDRESS}/{LINK_PREFIX}");
    let host_address = HOST_ADDRESS.to_string();
    let ns = EXTERNAL_NETNS;
    let steps: [&[&str]; 8] = [
        &["netns", "add", ns],
        &[
            "link",
            "add",
            HOST_LINK,
            "type",
            "veth",
            "peer",
            "name",
            EXTERNAL_LINK,
            "netns",
            ns,
        ],
        &["addr", "add", &host_cidr, "dev", HOST_LINK],
        &["link", "set", HOST_LINK, "up"],
        &["-n", ns, "link", "set", "lo", "up"],
        &[
            "-n",
            ns,
            "addr",
            "add",
            &external_cidr,
            "dev",
            EXTERNAL_LINK,
        ],
        &["-n", ns, "link", "set", EXTERNAL_LINK, "up"],
        &["-n", ns, "route", "add", "default", "via", &host_address],
    ];
    for step in steps {
        run("ip", step)?;
    }
    // Docker enables forwarding itself unless dockerd runs with --ip-forward=false.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling IPv4 forwarding")?;
    Ok(())
}
