//! Running the system tools the lab is made with (docker, ip, tar), with one-line errors.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

/// Runs `program args`, returning stdout; on failure the error names the command and the last
/// line it printed to stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    output(Command::new(program).args(args))
}

/// Runs `cmd` (stdin closed), returning stdout; on failure the error names the command and the
/// last line it printed to stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let line: Vec<String> = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no error output");
        bail!("`{}` failed: {}", line.join(" "), reason.trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `program args` succeeds, for probing state.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
