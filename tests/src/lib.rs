//! Helpers for the end-to-end tests: the binaries `cargo xtask test` built, a serialising lock
//! for tests that share the lab, and a running dockflow whose output the test reads.

pub mod catalogue;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::{Path, PathBuf},
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

/// The static `dockflow` of the release tarball (`cargo xtask dist`, unpacked).
pub fn dist_bin() -> PathBuf {
    binary("DOCKFLOW_DIST_BIN")
}

/// The static lab responder/client binary.
pub fn lab_bin() -> PathBuf {
    binary("DOCKFLOW_LAB_BIN")
}

/// A dockflow process that has started streaming.
pub struct Dockflow {
    /// Taken when the test stops it; one still here when the test panics is ended by Drop.
    child: Option<Child>,
    /// Collects stdout as it comes, so a chatty run never blocks on a full pipe.
    stdout: Option<std::thread::JoinHandle<String>>,
    /// What stdout has said so far (for [`Dockflow::wait_for_stdout`]).
    stdout_so_far: std::sync::Arc<std::sync::Mutex<String>>,
    /// Its stderr lines up to and including "streaming".
    pub startup: Vec<String>,
    /// The stderr lines after those.
    rest: mpsc::Receiver<String>,
    /// Lines of `rest` already read by [`Dockflow::wait_for_stderr`].
    seen: Vec<String>,
}

impl Dockflow {
    /// Starts `dockflow ARGS` and waits until its probes are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// [`Dockflow::start`] with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_binary(&dockflow_bin(), args, env)
    }

    /// [`Dockflow::start_with_env`] with another build of dockflow (the release tarball's).
    pub fn start_binary(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
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
        let mut out = child.stdout.take().unwrap();
        let stdout_so_far = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let so_far = stdout_so_far.clone();
        let stdout = std::thread::spawn(move || {
            let mut chunk = [0u8; 65536];
            let mut bytes = Vec::new();
            while let Ok(n @ 1..) = out.read(&mut chunk) {
                bytes.extend_from_slice(&chunk[..n]);
                // Whole lines only: a condition never sees half of one.
                if let Some(end) = bytes.iter().rposition(|b| *b == b'\n') {
                    let lines: Vec<u8> = bytes.drain(..=end).collect();
                    so_far
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&lines));
                }
            }
            let mut text = std::mem::take(&mut *so_far.lock().unwrap());
            text.push_str(&String::from_utf8_lossy(&bytes));
            text
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
        Self {
            child: Some(child),
            stdout: Some(stdout),
            stdout_so_far,
            startup,
            rest: rx,
            seen: Vec::new(),
        }
    }

    /// The container's host-side veth, from the startup lines.
    pub fn veth(&self) -> String {
        self.startup
            .iter()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("attached  tc ingress on veth")
                    .map(|r| format!("veth{r}"))
            })
            .expect("no tc ingress on a veth in the startup lines")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Sends `signal` (0: none, it was already sent), waits for exit, returns (success, stdout).
    pub fn stop_with(self, signal: i32) -> (bool, String) {
        let (ok, stdout, _) = self.stop_with_stderr(signal);
        (ok, stdout)
    }

    /// [`Dockflow::stop_with`], also returning the stderr lines after startup (the summary).
    pub fn stop_with_stderr(mut self, signal: i32) -> (bool, String, Vec<String>) {
        if signal != 0 {
            // SAFETY: kill takes plain integers; the pid is a child this code started.
            unsafe { libc::kill(self.pid(), signal) };
        }
        let mut child = self.child.take().unwrap();
        // A run that does not end after its signal is a bug (a hang at exit), not a wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("dockflow did not exit within 30 s of signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = self.stdout.take().unwrap().join().unwrap();
        // The reader thread ends with the process's stderr.
        let mut stderr = std::mem::take(&mut self.seen);
        stderr.extend(self.rest.iter());
        (status.success(), stdout, stderr)
    }

    /// Waits up to 10 s until what dockflow printed on stdout so far satisfies `condition`
    /// (something the kernel or Docker does on its own time has been shown); panics naming
    /// `what` with the output if it never does.
    pub fn wait_for_stdout(&self, what: &str, condition: impl Fn(&str) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !condition(&self.stdout_so_far.lock().unwrap()) {
            if std::time::Instant::now() > deadline {
                panic!(
                    "dockflow never showed {what}: {}",
                    self.stdout_so_far.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to 10 s for a stderr line containing `what` (dockflow says when it has
    /// followed a change), and returns it; panics with the lines seen if none comes.
    pub fn wait_for_stderr(&mut self, what: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rest.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(what) {
                        return line;
                    }
                }
                Err(_) => panic!("dockflow never said {what:?}: {:?}", self.seen),
            }
        }
    }
}

/// A test that panicked left its dockflow running: end it as a user would (SIGTERM, so it
/// detaches and removes its tables), so the next test does not find the hooks taken.
impl Drop for Dockflow {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill takes plain integers; the pid is a child this code started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Inserts a rule and removes it again when dropped, even if the test fails in between.
pub struct IptablesRule(Vec<String>);

impl IptablesRule {
    pub fn insert(chain: &str, rule: &[&str]) -> Self {
        let spec: Vec<String> = std::iter::once(chain.to_string())
            .chain(rule.iter().map(|s| s.to_string()))
            .collect();
        let status = Command::new("iptables")
            .arg("-I")
            .args(&spec)
            .status()
            .unwrap();
        assert!(status.success(), "iptables -I {spec:?}");
        Self(spec)
    }
}

impl Drop for IptablesRule {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.0).status();
    }
}

/// Names of loaded BPF programs that carry dockflow's prefix.
pub fn our_bpf_programs() -> Vec<String> {
    // The kernel frees a program after an RCU grace period once its last fd closed: a run that
    // just exited may be listed for a few milliseconds more, never for a second.
    let mut left = loaded_programs();
    for _ in 0..10 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = loaded_programs();
    }
    left
}

/// `bpftool ARGS`'s output. A bpftool that fails prints nothing: that must not read as "nothing
/// there", so it fails the test.
fn bpftool(args: &[&str]) -> Vec<u8> {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn loaded_programs() -> Vec<String> {
    String::from_utf8_lossy(&bpftool(&["prog", "show"]))
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "name").nth(1))
        .filter(|name| name.starts_with("df_"))
        .map(str::to_string)
        .collect()
}

/// The values of a BPF map of ours, by name, read as little-endian u64s (bpftool).
pub fn bpf_map_values(name: &str) -> Vec<u64> {
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&bpftool(&["-j", "map", "dump", "name", name]))
            .expect("bpftool's JSON");
    entries
        .iter()
        .map(|entry| {
            let bytes: Vec<u8> = entry["value"]
                .as_array()
                .unwrap_or_else(|| panic!("no value in {entry}"))
                .iter()
                .map(|b| {
                    let hex = b.as_str().unwrap().trim_start_matches("0x");
                    u8::from_str_radix(hex, 16).unwrap()
                })
                .collect();
            u64::from_le_bytes(bytes.try_into().expect("an 8-byte value"))
        })
        .collect()
}

pub use dockflow_lab::stream::{hop_kinds, packets};

/// Parses dockflow --json output into objects.
pub fn json_events(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Asserts that a replay printed the live run's lines, naming the first line that differs.
pub fn assert_same_lines(replayed: &[serde_json::Value], live: &[serde_json::Value]) {
    let first = replayed.iter().zip(live).position(|(r, l)| r != l);
    if let Some(i) = first {
        panic!(
            "replay line {i} differs from the live run's:\nreplayed: {}\nlive:     {}",
            replayed[i], live[i]
        );
    }
    assert_eq!(
        replayed.len(),
        live.len(),
        "replay printed another number of lines"
    );
}

/// Waits up to 5 s for `condition` (something the kernel or Docker finishes after the command
/// that asked for it returned), polling; panics naming `what` if it never holds.
pub fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
