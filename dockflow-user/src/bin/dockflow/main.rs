//! The `dockflow` command: parse the command line, run live or replay, and turn the outcome
//! into an exit status.

mod cli;
mod live;
mod replay;

use std::process::ExitCode;

use clap::Parser as _;

use self::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.replay {
        Some(path) => replay::run(&cli, path),
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(live::run(&cli))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dockflow: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A reader that went away (`dockflow ... | head`) ends the run; it is not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
