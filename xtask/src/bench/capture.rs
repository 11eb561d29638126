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
/// Live floods per snap length.
const ROUNDS: usize = 2;

pub fn measure(dockflow: &Path, responder: &Path) -> Result<()> {
    let syslog = lab::service("syslog")?;
    let to = format!("{}:{}", lab::HOST_ADDRESS, syslog.port);
    let dir = std::env::temp_dir().join(format!("dockflow-bench-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| -> Result<()> {
        // Rounds alternate the snap lengths, so that drift on a shared machine spreads over all.
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); SNAPLENS.len()];
        for round in 1..=ROUNDS {
            for (i, snaplen) in SNAPLENS.into_iter().enumerate() {
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
                let rate = kept as f64 / (live.drain_seconds + live.write_seconds).max(1e-9);
                rates[i].push(rate);
                let size = std::fs::metadata(&record)?.len();
                println!(
                    "capture, round {round}, --snaplen {snaplen}: {kept} events recorded ({:.0} events/s), {} lost in the kernel; drain and writing threads {rate:.0} events per CPU second; {:.0} bytes per event in the recording",
                    kept as f64 / SECONDS,
                    live.lost,
                    size as f64 / kept.max(1) as f64
                );
            }
        }
        let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
        for (i, snaplen) in SNAPLENS.into_iter().enumerate() {
            println!(
                "capture, --snaplen {snaplen}: drain {:.0} events per CPU second on average, {:.2} of --snaplen 0",
                mean(&rates[i]),
                mean(&rates[i]) / mean(&rates[0])
            );
        }
        // The other recordings go first, so that the capture file's page cache reuses their
        // pages (see the pipeline bench: on this VM memory touched for the first time costs a
        // host fault per page, which is not the conversion's cost).
        for snaplen in [0, 256] {
            std::fs::remove_file(dir.join(format!("snap{snaplen}.dfl")))?;
        }
        let recording = dir.join("snap128.dfl");
        let pcapng = dir.join("snap128.pcapng");
        let converted = replayed(
            dockflow,
            &recording,
            &["--quiet", "--pcapng", pcapng.to_str().unwrap()],
        )?;
        println!(
            "capture, --replay --pcapng (snaplen 128): {} events in {:.2} s = {:.0} events/s (target 500,000); pcapng {:.1} MiB",
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
