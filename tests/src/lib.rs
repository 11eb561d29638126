//! Helpers for the end-to-end tests: the binaries `cargo xtask test` built, a serialising lock
//! for tests that share the lab, and a running dockflow whose output the test reads.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, MutexGuard, mpsc},
    time::Duration,
};

/// Tests that bring the lab up or down must not overlap.
pub fn lab_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn binary(var: &str) -> PathBuf {
    PathBuf::from(std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: run the end-to-end tests through `cargo xtask test`")
    }))
}

/// The release `dockflow` binary.
pub fn dockflow_bin() -> PathBuf {
    binary("DOCKFLOW_BIN")
}

/// The static lab responder/client binary.
pub fn lab_bin() -> PathBuf {
    binary("DOCKFLOW_LAB_BIN")
}

/// A dockflow process that has started streaming.
pub struct Dockflow {
    child: Child,
    /// Its stderr lines up to and including "streaming".
    pub startup: Vec<String>,
}

impl Dockflow {
    /// Starts `dockflow ARGS` and waits until its probes are attached.
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(dockflow_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting dockflow");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut startup = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    let done = line.contains("streaming");
                    startup.push(line);
                    if done {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("dockflow did not start streaming: {startup:?}");
                }
            }
        }
        Self { child, startup }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal`, waits for exit, returns (success, stdout).
    pub fn stop_with(mut self, signal: i32) -> (bool, String) {
        unsafe { libc::kill(self.pid(), signal) };
        let mut stdout = String::new();
        self.child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
        let status = self.child.wait().unwrap();
        (status.success(), stdout)
    }
}

/// Names of loaded BPF programs that carry dockflow's prefix.
pub fn our_bpf_programs() -> Vec<String> {
    let out = Command::new("bpftool").args(["prog", "show"]).output().expect("running bpftool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "name").nth(1))
        .filter(|name| name.starts_with(dockflow_common_prefix()))
        .map(str::to_string)
        .collect()
}

fn dockflow_common_prefix() -> &'static str {
    "df_"
}

/// Parses dockflow --json output into objects.
pub fn json_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}"))).collect()
}
