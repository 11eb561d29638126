//! The `dockflow` command: parse the command line, run live or replay, and turn the outcome
//! into an exit status.

mod cli;
mod live;
mod merge;
mod replay;

use std::process::ExitCode;

use clap::Parser as _;

use self::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(generated) = cli.generate {
        return match generated.write(&mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dockflow: error: writing the {generated:?} output: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // A bad filter is a usage error, like clap's own: one line, exit status 2.
    let filter = match cli.filter() {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("dockflow: error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match (&cli.command, cli.replay.as_slice()) {
        (Some(cli::Subcommand::Merge { recordings }), _) => merge::run(&cli, recordings),
        (None, [one]) => replay::run(&cli, one, filter),
        (None, []) => live::run(&cli, filter),
        (None, several) => merge::run(&cli, several),
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
