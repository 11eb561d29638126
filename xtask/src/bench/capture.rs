//! `cargo xtask bench capture`: what packet bytes cost (--snaplen) and how fast a recording
//! becomes a pcapng file, as figures from one run.
//!
//! The pipeline bench's flood (one flow at the `syslog` container) with `--record --quiet` at
//! --snaplen 0, 128 (the default) and 256: events kept and lost, the drain thread's events per
//! CPU second (the ring buffer to disk), and bytes per event in the recording. Then the 128
//! recording converted with `--replay --pcapng --quiet`: events per second.

use std::path::Path;

use anyhow::Result;
use dockflow_lab::lab;

use super::pipeline::{SECONDS, live_flood, replayed};

const SNAPLENS: [u32; 3] = [0, 128, 256];

pub fn measure(dockflow: &Path, responder: &Path) -> Result<()> {
    let syslog = lab::service("syslog")?;
    let to = format!("{}:{}", lab::HOST_ADDRESS, syslog.port);
    let dir = std::env::temp_dir().join(format!("dockflow-bench-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        let mut baseline = None;
        for snaplen in SNAPLENS {
            let record = dir.join(format!("snap{snaplen}.dfl"));
            let snap = snaplen.to_string();
            let args = [
                "--container",
                "syslog",
                "--record",
                record.to_str().unwrap(),
                "--quiet",
                "--snaplen",
                &snap,
            ];
            let live = live_flood(dockflow, responder, &args, &to, 1)?;
            let kept = live.events + live.not_shown;
            let rate = kept as f64 / live.drain_seconds.max(1e-9);
            let size = std::fs::metadata(&record)?.len();
            let ratio = rate / *baseline.get_or_insert(rate);
            println!(
                "capture, --snaplen {snaplen}: {kept} events recorded ({:.0} events/s), {} lost in the kernel; drain {rate:.0} events per CPU second ({ratio:.2} of --snaplen 0); {:.0} bytes per event in the recording",
                kept as f64 / SECONDS,
                live.lost,
                size as f64 / kept.max(1) as f64
            );
        }
        let recording = dir.join("snap128.dfl");
        let pcapng = dir.join("snap128.pcapng");
        let converted = replayed(
            dockflow,
            &recording,
            &["--quiet", "--pcapng", pcapng.to_str().unwrap()],
        )?;
        println!(
            "capture, --replay --pcapng (snaplen 128): {} events in {:.2} s = {:.0} events/s; pcapng {:.1} MiB",
            converted.events,
            converted.seconds,
            converted.events as f64 / converted.seconds,
            std::fs::metadata(&pcapng)?.len() as f64 / (1 << 20) as f64
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!("target: the default --snaplen 128 keeps at least half the drain rate of --snaplen 0");
    Ok(())
}
