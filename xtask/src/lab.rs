//! `cargo xtask lab up | down | status | client SERVICE`.

use anyhow::{Result, bail};
use clap::Subcommand;
use dockflow_lab::lab;

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
