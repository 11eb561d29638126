//! `cargo xtask bench soak --minutes N`: dockflow following a Docker network of its own
//! (`dfsoak`, not the lab's) for N minutes while its containers are created, restarted and
//! removed in a loop and UDP traffic runs to them from the host. Prints dockflow's resident
//! memory and open descriptors over time, the BPF links and maps of its own while it runs (the
//! last figures must equal the first: probes move with the containers, nothing accumulates),
//! the events lost, and what is left once it stopped (must be nothing).

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use dockflow_lab::{lab, shell::run};

use super::pipeline::status_kib;
use crate::tracer::Tracer;

const NETWORK: &str = "dfsoak";
const BRIDGE: &str = "dfsoak0";
const SUBNET: &str = "10.217.9.0/24";
const PORT: u16 = 7070;
/// Containers on the network at most; past it the oldest goes.
const MAX_CONTAINERS: usize = 4;
/// One step of the loop: a container created, traffic to every container, maybe a restart.
const STEP: Duration = Duration::from_secs(5);
/// Figures every this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

pub fn measure(dockflow: &Path, responder: &Path, minutes: f64) -> Result<()> {
    let _network = SoakNetwork::create()?;
    let mut containers: Vec<(String, String)> = Vec::new();
    let mut created = 0u32;
    for _ in 0..2 {
        containers.push(start_container(&mut created)?);
    }
    let tracer = Tracer::start(dockflow, &["--network", NETWORK], Stdio::null(), false)?;
    let pid = tracer.pid();
    std::thread::sleep(Duration::from_secs(2));
    // With two containers: the end is measured with two again.
    let first = Resources::of(pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(minutes * 60.0);
    let mut next_report = started;
    let mut step = 0u64;
    while Instant::now() < deadline {
        step += 1;
        containers.push(start_container(&mut created)?);
        if containers.len() > MAX_CONTAINERS {
            let (name, _) = containers.remove(0);
            run("docker", &["rm", "-f", &name])?;
        }
        if step.is_multiple_of(3) {
            run("docker", &["restart", "-t", "0", &containers[0].0])?;
        }
        for (_, address) in &containers {
            let to = format!("{address}:{PORT}");
            let flood = [
                "udp-flood",
                &to,
                "--seconds",
                "1",
                "--rate",
                "300",
                "--sockets",
                "4",
            ];
            Command::new(responder)
                .arg("client")
                .args(flood)
                .stdout(Stdio::null())
                .status()
                .context("running the flood client")?;
        }
        if Instant::now() >= next_report {
            let now = Resources::of(pid)?;
            println!(
                "soak, {:>6.1} min: rss {} KiB, {} fds, {} links, {} tc filters and {} maps of dockflow's, {} containers created so far",
                started.elapsed().as_secs_f64() / 60.0,
                now.rss_kib,
                now.fds,
                now.links,
                now.tc,
                now.maps,
                created
            );
            next_report += REPORT_EVERY;
        }
        std::thread::sleep(STEP.saturating_sub(Duration::from_secs(containers.len() as u64)));
    }
    // The network as it began: two containers, so the probes' count can be compared.
    while containers.len() > 2 {
        let (name, _) = containers.remove(0);
        run("docker", &["rm", "-f", &name])?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let end = Resources::of(pid)?;
    let summary = tracer.stop()?;
    println!(
        "soak, end ({created} containers created): rss {} KiB (first {}), {} fds (first {}), {} links (first {}), {} tc filters (first {}), {} maps (first {}); {} events, {} lost",
        end.rss_kib,
        first.rss_kib,
        end.fds,
        first.fds,
        end.links,
        first.links,
        end.tc,
        first.tc,
        end.maps,
        first.maps,
        summary.events,
        summary.lost
    );
    let left = Resources::left_behind()?;
    println!("soak, after exit: {left}");
    if !summary.status.success() {
        bail!("dockflow exited with {}", summary.status);
    }
    Ok(())
}

/// The soak's own network, removed with its containers when dropped.
struct SoakNetwork;

impl SoakNetwork {
    fn create() -> Result<Self> {
        let network = SoakNetwork;
        network.remove();
        let bridge = format!("com.docker.network.bridge.name={BRIDGE}");
        let label = format!("{}=1", lab::LABEL);
        run(
            "docker",
            &[
                "network", "create", "--subnet", SUBNET, "-o", &bridge, "--label", &label, NETWORK,
            ],
        )?;
        Ok(network)
    }

    fn remove(&self) {
        if let Ok(names) = run(
            "docker",
            &["ps", "-aq", "--filter", &format!("network={NETWORK}")],
        ) {
            for id in names.split_whitespace() {
                let _ = run("docker", &["rm", "-f", id]);
            }
        }
        let _ = run("docker", &["network", "rm", NETWORK]);
    }
}

impl Drop for SoakNetwork {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Starts the next container (`soak-N` at 10.217.9.(10 + N % 200)), echoing UDP on [`PORT`].
fn start_container(created: &mut u32) -> Result<(String, String)> {
    let name = format!("soak-{created}");
    let address = format!("10.217.9.{}", 10 + *created % 200);
    *created += 1;
    let port = PORT.to_string();
    run(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &format!("{}=1", lab::LABEL),
            "--network",
            NETWORK,
            "--ip",
            &address,
            lab::IMAGE,
            "serve",
            "udp-echo",
            "--port",
            &port,
        ],
    )?;
    Ok((name, address))
}

/// What dockflow holds.
struct Resources {
    rss_kib: u64,
    fds: usize,
    /// BPF links to its programs (netfilter, tracepoints), tc filters of its, and the maps its
    /// programs use.
    links: usize,
    tc: usize,
    maps: usize,
}

impl Resources {
    fn of(pid: i32) -> Result<Self> {
        let programs: Vec<serde_json::Value> = bpftool_json(&["prog", "show"])?
            .into_iter()
            .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("df_")))
            .collect();
        let ids: BTreeSet<u64> = programs.iter().filter_map(|p| p["id"].as_u64()).collect();
        let maps: BTreeSet<u64> = programs
            .iter()
            .filter_map(|p| p["map_ids"].as_array())
            .flatten()
            .filter_map(|m| m.as_u64())
            .collect();
        let links = bpftool_json(&["link", "show"])?
            .iter()
            .filter(|l| l["prog_id"].as_u64().is_some_and(|id| ids.contains(&id)))
            .count();
        Ok(Self {
            rss_kib: status_kib(pid, "VmRSS:")?,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
            links,
            tc: tc_filters()?,
            maps: maps.len(),
        })
    }

    /// dockflow's programs, tc filters and nft tables still there.
    fn left_behind() -> Result<String> {
        let programs = bpftool_json(&["prog", "show"])?
            .iter()
            .filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("df_")))
            .count();
        let tables = run("nft", &["list", "tables"])?
            .lines()
            .filter(|l| l.contains("dockflow_trace_"))
            .count();
        Ok(format!(
            "{programs} programs, {} tc filters, {tables} nft tables of dockflow's",
            tc_filters()?
        ))
    }
}

/// tc filters running dockflow's programs, on any interface.
fn tc_filters() -> Result<usize> {
    Ok(run("bpftool", &["net", "show"])?
        .lines()
        .filter(|l| l.contains("df_tc_"))
        .count())
}

fn bpftool_json(args: &[&str]) -> Result<Vec<serde_json::Value>> {
    let out = run("bpftool", &[&["-j"], args].concat())?;
    serde_json::from_str(&out).context("bpftool's JSON")
}
