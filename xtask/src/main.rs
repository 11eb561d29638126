//! Project automation: `cargo xtask <command>`.

mod bench;
mod build;
mod demo;
mod dist;
mod engine;
mod image;
mod lab;
mod layers;
mod setup;
mod test;
mod tracer;
mod vmtest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "dockflow's build, lab and test automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what dockflow needs (Debian packages, pinned nightly, bpf-linker, dockerd); idempotent.
    Setup,
    /// Build the eBPF programs and the dockflow binary (release).
    Build,
    /// Build, then run `dockflow ARGS` as root.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A release tarball in target/dist: a static dockflow, its man page and completions.
    Dist,
    /// A container image (docker import, offline) of the release binary: `dockflow:VERSION`.
    Image,
    /// The seed's lab on the real Docker engine.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
    },
    /// Lab up, dockflow on `radius`, one RADIUS exchange from the external namespace, lab down.
    Demo {
        /// Also draw the exchange into docs/demo.svg (the README's picture).
        #[arg(long)]
        svg: bool,
    },
    /// Switch the Docker daemon setup started to another engine (it stays running).
    Engine {
        #[arg(value_enum)]
        engine: engine::Engine,
    },
    /// Figures: the pipeline under a flood, event drain rate, and bulk TCP throughput with
    /// dockflow attached vs not.
    Bench {
        #[arg(value_enum, default_value = "all")]
        part: bench::Part,
        /// How long the soak runs.
        #[arg(long, default_value = "30")]
        minutes: f64,
    },
    /// The stock-kernel probes (kprobes on the bridge functions) in a Debian kernel under qemu.
    Vmtest,
    /// Checks that no crate's modules import each other round a circle.
    Layers,
    /// Everything the README promises: setup, unit tests, and end-to-end tests on the lab.
    Test {
        /// The Docker engine to run the end-to-end tests on (default: a whole run tests both,
        /// a filtered one the engine running now).
        #[arg(long, value_enum)]
        engine: Option<engine::Engine>,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Build => build::dockflow().map(drop),
        Command::Dist => setup::run().and_then(|()| dist::run()),
        Command::Image => setup::run().and_then(|()| image::run()),
        Command::Run { args } => build::run_dockflow(&args),
        Command::Lab { command } => lab::run(command),
        Command::Demo { svg } => demo::run(svg),
        Command::Engine { engine } => setup::run().and_then(|()| engine::switch(engine)),
        Command::Bench { part, minutes } => bench::run(part, minutes),
        Command::Vmtest => vmtest::run(),
        Command::Layers => layers::run(),
        Command::Test { engine, args } => test::run(engine, &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
