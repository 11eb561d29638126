//! `cargo xtask lab up | down | status | client SERVICE | swarm up|down`.

use anyhow::{Result, bail};
use clap::Subcommand;
use dockflow_lab::{cluster, lab};

use crate::{build, setup};

#[derive(Subcommand)]
pub enum LabCommand {
    /// Create the network, the four containers and the external namespace.
    Up,
    /// Remove everything the lab made (also after a crash).
    Down,
    /// Show which parts of the lab exist.
    Status,
    /// Send one request from the external namespace to the host's published port.
    Client {
        /// radius, syslog, dhcp or proxy.
        service: String,
        /// Extra client options, e.g. `-- --password wrong`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A swarm of several engines on this machine, each node in a namespace of its own.
    Swarm {
        #[command(subcommand)]
        command: SwarmCommand,
    },
}

#[derive(Subcommand)]
pub enum SwarmCommand {
    /// Start the nodes' engines (with the lab up, for its image) and join them into a swarm.
    Up {
        /// How many nodes (2 or 3).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
    },
    /// Stop the nodes' engines and remove their state and namespaces (also after a crash).
    Down,
}

pub fn run(command: LabCommand) -> Result<()> {
    match command {
        LabCommand::Up => {
            up()?;
            print_status();
            Ok(())
        }
        LabCommand::Down => lab::down(),
        LabCommand::Status => {
            print_status();
            Ok(())
        }
        LabCommand::Swarm {
            command: SwarmCommand::Up { nodes },
        } => {
            up()?;
            for node in cluster::up(nodes)? {
                println!(
                    "up       {} ({} in netns {}; DOCKER_HOST={})",
                    node.name,
                    node.address,
                    node.netns,
                    node.docker_host()
                );
            }
            Ok(())
        }
        LabCommand::Swarm {
            command: SwarmCommand::Down,
        } => cluster::down(),
        LabCommand::Client { service, args } => {
            let service = lab::service(&service)?;
            println!("{}", lab::client(&build::lab_responder()?, service, &args)?);
            Ok(())
        }
    }
}

pub fn up() -> Result<()> {
    if !setup::is_root() {
        bail!("the lab changes the host's network: run as root");
    }
    setup::run()?;
    lab::up(&build::lab_responder()?)
}

/// Brings the lab up, runs `work`, and takes the lab down again whatever `work` returned.
pub fn with_lab(work: impl FnOnce() -> Result<()>) -> Result<()> {
    up()?;
    let result = work();
    let down = lab::down();
    result.and(down)
}

fn print_status() {
    for (what, present) in lab::status() {
        println!("{:<8} {what}", if present { "up" } else { "absent" });
    }
}
