//! A dockflow process that xtask drives: started, waited for until it streams, stopped with
//! SIGINT, its status lines collected.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

pub struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// What dockflow said when it stopped.
pub struct Summary {
    pub status: ExitStatus,
    pub events: u64,
    pub lost: u64,
    /// Events the display skipped because it was behind (the recording has them).
    pub not_shown: u64,
}

impl Tracer {
    /// Starts `dockflow ARGS` with `stdout` and waits for it to stream; `echo` forwards its
    /// status lines (stderr) to ours.
    pub fn start(dockflow: &Path, args: &[&str], stdout: Stdio, echo: bool) -> Result<Self> {
        let mut child = Command::new(dockflow)
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting dockflow")?;
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("{line}");
                }
                let _ = tx.send(line);
            }
        });
        loop {
            match lines.recv_timeout(Duration::from_secs(30)) {
                Ok(line) if line.contains("streaming") => return Ok(Self { child, lines }),
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("dockflow did not start streaming within 30 s");
                }
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Stops it with SIGINT and reads its exit summary.
    pub fn stop(mut self) -> Result<Summary> {
        // SAFETY: kill takes plain integers; the pid is a child this code started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        let (mut events, mut lost, mut not_shown) = (0, 0, 0);
        // The reader thread ends with dockflow's stderr; collect everything it saw.
        for line in self.lines.iter() {
            // "dockflow: 2 packets, 34 events from container radius, 0 lost"
            if let Some(rest) = line
                .strip_prefix("dockflow: ")
                .filter(|r| r.contains(" events from "))
            {
                let numbers: Vec<u64> = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse().ok())
                    .collect();
                if let [_, e, .., l] = numbers[..] {
                    (events, lost) = (e, l);
                }
            }
            // "dockflow: 399437 events not shown: ..."
            if let Some(n) = line
                .strip_prefix("dockflow: ")
                .and_then(|r| r.split_once(" events not shown"))
                .and_then(|(n, _)| n.parse().ok())
            {
                not_shown = n;
            }
        }
        Ok(Summary {
            status,
            events,
            lost,
            not_shown,
        })
    }
}
