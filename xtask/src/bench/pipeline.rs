//! `cargo xtask bench pipeline`: dockflow's own pipeline under load, from the ring buffer to
//! disk and to the screen, as figures from one run.
//!
//! A UDP flood at the `syslog` container's published port (it echoes, so every request has a
//! reply) while dockflow follows `syslog`:
//! 1. live, `--record F --quiet`: the ring buffer to disk without decoding; events kept, events
//!    lost (share), dockflow's CPU time, its drain thread's (the ring buffer to the recording)
//!    and the recording's writing thread's (to disk): events per CPU second of the two is the
//!    drain's capacity on one core; peak memory;
//! 2. live, `--record F --json` to /dev/null: the same plus decoding, correlation, explanation
//!    and rendering;
//! 3. replay of the recordings, one flow and many connections: packet mode (text and JSON) and
//!    raw JSON, events per second and peak memory. Replay needs no kernel, so these are the
//!    pipeline's own speed.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use dockflow_lab::lab;

use crate::tracer::Tracer;

/// The flood the issue measures: requests per second, for this long.
pub(super) const RATE: u64 = 20_000;
pub(super) const SECONDS: f64 = 5.0;
/// Client sockets for the many-connection flood.
const MANY: usize = 1_000;

pub fn measure(dockflow: &Path, responder: &Path) -> Result<()> {
    let syslog = lab::service("syslog")?;
    let to = format!("{}:{}", lab::HOST_ADDRESS, syslog.port);
    let dir = std::env::temp_dir().join(format!("dockflow-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        for (flow, sockets) in [("one flow", 1), ("many connections", MANY)] {
            let quiet = dir.join(format!("{sockets}-quiet.dfl"));
            let shown = dir.join(format!("{sockets}-shown.dfl"));
            for (label, record, extra) in [
                ("--record --quiet", &quiet, &["--quiet"][..]),
                ("--record --json (shown)", &shown, &["--json"][..]),
            ] {
                let args = [
                    &[
                        "--container",
                        "syslog",
                        "--record",
                        record.to_str().unwrap(),
                    ][..],
                    extra,
                ]
                .concat();
                let live = live_flood(dockflow, responder, &args, &to, sockets)?;
                // Everything the kernel handed over is in the recording; the display may have
                // skipped some of it.
                let kept = live.events + live.not_shown;
                println!(
                    "pipeline, live {flow}, {label}: {} requests sent, {kept} events recorded, {} lost in the kernel ({:.2}%), {} of them not shown (display behind), {:.0} events/s; dockflow used {:.2} CPU s, its drain thread (ring buffer to the recording) {:.2} CPU s (user {:.2}, system {:.2}) and the recording's writing thread (to disk) {:.2} = {:.0} events per CPU second of both; peak memory {:.1} MiB; recording {:.1} MiB",
                    live.sent,
                    live.lost,
                    100.0 * live.lost as f64 / (kept + live.lost).max(1) as f64,
                    live.not_shown,
                    kept as f64 / SECONDS,
                    live.cpu_seconds,
                    live.drain_seconds,
                    live.drain_split.0,
                    live.drain_split.1,
                    live.write_seconds,
                    kept as f64 / (live.drain_seconds + live.write_seconds).max(1e-9),
                    live.peak_kib as f64 / 1024.0,
                    std::fs::metadata(record)?.len() as f64 / (1 << 20) as f64
                );
            }
            for (label, args) in [
                ("packets as text", &[][..]),
                ("packets as JSON (--json)", &["--json"][..]),
                ("events as JSON (--raw --json)", &["--raw", "--json"][..]),
            ] {
                let replay = replayed(dockflow, &quiet, args)?;
                println!(
                    "pipeline, replay {flow}, {label}: {} events in {:.2} s = {:.0} events/s, peak memory {:.1} MiB",
                    replay.events,
                    replay.seconds,
                    replay.events as f64 / replay.seconds,
                    replay.peak_kib as f64 / 1024.0
                );
            }
            // Gone before the next flood, so that its recording's page cache reuses their
            // pages: on a VM, memory the guest has not touched since boot costs a host fault per
            // page at first touch (in the drain thread's write), which tripled the drain's
            // system time in this bench's second flood (and vanished once memory was touched).
            std::fs::remove_file(&quiet)?;
            std::fs::remove_file(&shown)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!(
        "targets: live --record without loss >= 2,000,000 events/s per core; packet mode >= 500,000 events/s; raw JSON >= 1,000,000 events/s; 0 lost in the flood"
    );
    Ok(())
}

pub(super) struct Live {
    pub(super) sent: u64,
    pub(super) events: u64,
    pub(super) lost: u64,
    pub(super) not_shown: u64,
    pub(super) cpu_seconds: f64,
    /// The drain thread's own CPU time: the ring buffer to disk.
    pub(super) drain_seconds: f64,
    /// The same as (user, system) CPU seconds: system time includes the kernel's own work
    /// done while the thread ran (writing the recording, softirqs it was interrupted by).
    pub(super) drain_split: (f64, f64),
    /// The recording's writing thread: the page cache's copy, the disk's stalls.
    pub(super) write_seconds: f64,
    pub(super) peak_kib: u64,
}

/// One flood while `dockflow ARGS` follows, every packet of it (`--per-connection all`: the
/// flood is one busy connection per socket); its figures, taken just before it is stopped.
pub(super) fn live_flood(
    dockflow: &Path,
    responder: &Path,
    args: &[&str],
    to: &str,
    sockets: usize,
) -> Result<Live> {
    let args = [args, &["--per-connection", "all"]].concat();
    let tracer = Tracer::start(dockflow, &args, Stdio::null(), false)?;
    let flood = [
        "client",
        "udp-flood",
        to,
        "--seconds",
        &SECONDS.to_string(),
        "--rate",
        &RATE.to_string(),
        "--sockets",
        &sockets.to_string(),
    ];
    let out = lab::external_command(responder, &flood)
        .output()
        .context("running the flood client")?;
    if !out.status.success() {
        bail!("flood client: {}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(500));
    let pid = tracer.pid();
    let cpu_seconds = cpu_split(&format!("/proc/{pid}/stat"))?;
    let cpu_seconds = cpu_seconds.0 + cpu_seconds.1;
    let drain_split = thread_cpu_split(pid, "dockflow-drain")?;
    let drain_seconds = drain_split.0 + drain_split.1;
    let write_split = thread_cpu_split(pid, "dockflow-write")?;
    let write_seconds = write_split.0 + write_split.1;
    let peak_kib = status_kib(pid, "VmHWM:")?;
    let summary = tracer.stop()?;
    Ok(Live {
        sent,
        events: summary.events,
        lost: summary.lost,
        not_shown: summary.not_shown,
        cpu_seconds,
        drain_seconds,
        drain_split,
        write_seconds,
        peak_kib,
    })
}

pub(super) struct Replayed {
    pub(super) events: u64,
    pub(super) seconds: f64,
    pub(super) peak_kib: u64,
}

/// `dockflow --replay FILE ARGS > /dev/null`, timed, with its peak memory.
pub(super) fn replayed(dockflow: &Path, file: &Path, args: &[&str]) -> Result<Replayed> {
    let started = Instant::now();
    let child = Command::new(dockflow)
        .args(["--replay", file.to_str().unwrap()])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting dockflow --replay")?;
    let pid = child.id() as i32;
    let (status, peak_kib) = wait_with_peak(pid)?;
    let seconds = started.elapsed().as_secs_f64();
    let stderr = {
        let mut text = String::new();
        use std::io::Read as _;
        child.stderr.unwrap().read_to_string(&mut text)?;
        text
    };
    if !status {
        bail!("replay failed: {stderr}");
    }
    // "dockflow: 12 packets, 345 events from container syslog"
    let events = stderr
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("dockflow: ")?;
            let (_, after) = rest.split_once(" packets, ")?;
            after.split_once(" events")?.0.parse().ok()
        })
        .context("no summary from the replay")?;
    Ok(Replayed {
        events,
        seconds,
        peak_kib,
    })
}

/// Waits for `pid` (our child) and returns (success, peak resident memory in KiB).
fn wait_with_peak(pid: i32) -> Result<(bool, u64)> {
    let mut status = 0;
    // SAFETY: a plain C struct of integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid, writable locals; the pid is our own child.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("waiting for dockflow: {}", std::io::Error::last_os_error());
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    Ok((ok, usage.ru_maxrss as u64))
}

/// The (user, system) CPU seconds of `pid`'s thread named `name`.
fn thread_cpu_split(pid: i32, name: &str) -> Result<(f64, f64)> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?.path();
        if std::fs::read_to_string(task.join("comm"))?.trim() == name {
            return cpu_split(&task.join("stat").to_string_lossy());
        }
    }
    bail!("dockflow has no thread named {name}")
}

/// User and system CPU seconds in a /proc stat file (fields 14 and 15).
fn cpu_split(stat_file: &str) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(stat_file)?;
    // The command name may hold spaces; the fields we want come after its closing paren.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("unexpected /proc/PID/stat")?
        .1
        .split_whitespace()
        .collect();
    // SAFETY: sysconf takes a constant and touches no memory.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let seconds = |i: usize| -> Result<f64> { Ok(fields[i].parse::<u64>()? as f64 / hz) };
    Ok((seconds(11)?, seconds(12)?))
}

/// A "Name: N kB" line of /proc/PID/status.
pub(super) fn status_kib(pid: i32, name: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}
