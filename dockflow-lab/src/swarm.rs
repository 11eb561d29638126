//! A one-node Docker swarm of the lab's own: the engine made a swarm manager, advertised on a
//! veth pair the lab creates (no physical interface, no address beyond this host), with
//! overlay networks and services from the lab image, all labelled, and everything undone by
//! [`down`] (also after a crash: it finds what to remove by the labels and the link's name).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::{
    lab::{IMAGE, LABEL},
    shell::{run, succeeds},
};

/// The host end of the veth pair the swarm is advertised on; its presence marks the swarm as
/// the lab's.
pub const LINK: &str = "dfswarm0";
const PEER: &str = "dfswarm1";
/// The address the swarm advertises (on [`LINK`]).
pub const ADDRESS: &str = "10.231.7.1";

/// Whether the engine is in a swarm now.
fn swarm_state() -> Result<String> {
    Ok(
        run("docker", &["info", "--format", "{{.Swarm.LocalNodeState}}"])?
            .trim()
            .to_string(),
    )
}

/// Makes this engine a one-node swarm manager of the lab's (a swarm of its own already there
/// is left as it is; another one is refused: it is not the lab's to change).
pub fn up() -> Result<()> {
    let ours = succeeds("ip", &["link", "show", LINK]);
    match swarm_state()?.as_str() {
        "active" if ours => return Ok(()),
        "active" | "pending" => {
            bail!("this Docker engine is already in a swarm; the lab needs one of its own")
        }
        _ => {}
    }
    if !ours {
        run(
            "ip",
            &["link", "add", LINK, "type", "veth", "peer", "name", PEER],
        )?;
        run(
            "ip",
            &["addr", "add", &format!("{ADDRESS}/24"), "dev", LINK],
        )?;
        run("ip", &["link", "set", LINK, "up"])?;
        run("ip", &["link", "set", PEER, "up"])?;
    }
    run(
        "docker",
        &[
            "swarm",
            "init",
            "--advertise-addr",
            ADDRESS,
            "--listen-addr",
            &format!("{ADDRESS}:2377"),
        ],
    )
    .context("making the engine a swarm manager")?;
    Ok(())
}

/// `docker` arguments creating an attachable overlay network labelled as the lab's (for any
/// engine of a swarm: this one, or a node of the cluster).
pub fn overlay_args<'a>(name: &'a str, subnet: &'a str) -> [&'a str; 10] {
    [
        "network",
        "create",
        "--driver",
        "overlay",
        "--attachable",
        "--subnet",
        subnet,
        "--label",
        LABEL,
        name,
    ]
}

/// An attachable overlay network of the lab's.
pub fn overlay(name: &str, subnet: &str) -> Result<()> {
    run("docker", &overlay_args(name, subnet))?;
    Ok(())
}

/// A service of `replicas` tasks from the lab image serving `server` (the responder's
/// arguments after `serve`), on `network`, with `extra` options (`--publish ...`, say); waits
/// until its tasks run.
pub fn service(
    name: &str,
    replicas: u32,
    network: &str,
    extra: &[&str],
    server: &[&str],
) -> Result<Vec<String>> {
    let want = replicas as usize;
    let replicas = replicas.to_string();
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--label",
        LABEL,
        "--replicas",
        &replicas,
        "--network",
        network,
    ];
    args.extend_from_slice(extra);
    args.extend([IMAGE, "serve"]);
    args.extend_from_slice(server);
    run("docker", &args)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = tasks(name)?;
        if tasks.len() == want {
            return Ok(tasks);
        }
        if Instant::now() > deadline {
            bail!(
                "service {name}: {} of {want} tasks running after 60 s",
                tasks.len()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The names of the running task containers of service `name`, sorted.
pub fn tasks(name: &str) -> Result<Vec<String>> {
    let out = run(
        "docker",
        &[
            "ps",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
            "--format",
            "{{.Names}}",
        ],
    )?;
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    Ok(names)
}

/// A task's address on `network`.
pub fn address(task: &str, network: &str) -> Result<String> {
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    Ok(run("docker", &["inspect", "--format", &format, task])?
        .trim()
        .to_string())
}

/// Undoes [`up`] and everything made on it: the lab's services and networks, the swarm, the
/// `docker_gwbridge` network the swarm left, the veth pair. Does nothing to a swarm that is
/// not the lab's.
pub fn down() -> Result<()> {
    if !succeeds("ip", &["link", "show", LINK]) {
        return Ok(());
    }
    if swarm_state()? == "active" {
        let label = format!("label={LABEL}");
        let services = run("docker", &["service", "ls", "-q", "--filter", &label])?;
        for id in services.lines() {
            run("docker", &["service", "rm", id])?;
        }
        run("docker", &["swarm", "leave", "--force"])?;
    }
    // Task containers and the overlay networks go with the swarm, a little after it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(
        "docker",
        &[
            "ps",
            "-aq",
            "--filter",
            "label=com.docker.swarm.service.name",
        ],
    )?
    .trim()
    .is_empty()
    {
        if Instant::now() > deadline {
            bail!("the swarm's task containers were not removed within 30 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if succeeds("docker", &["network", "inspect", "docker_gwbridge"]) {
        run("docker", &["network", "rm", "docker_gwbridge"])?;
    }
    run("ip", &["link", "del", LINK])?;
    Ok(())
}
