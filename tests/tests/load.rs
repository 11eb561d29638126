//! Under a flood: an overflowing run says exactly what it missed. Packets on their way while
//! events were lost are marked incomplete, the summary's loss counts are the kernel's, and what
//! the display skipped is still in the recording. A run whose recording cannot be written (a
//! full disk) ends at once with its one-line error and leaves nothing behind.

use std::process::Command;

use dockflow_lab::lab;
use dockflow_tests::{Dockflow, bpf_map_values, dockflow_bin, json_events, lab_bin, lab_lock};
use serde_json::Value;

/// Floods `syslog`'s published port from the external namespace (SECONDS at RATE requests a
/// second, one client socket) while `dockflow` follows it; then stops it and returns its JSON
/// lines and the stderr lines after startup.
fn flood_syslog(dockflow: Dockflow, seconds: &str, rate: &str) -> (Vec<Value>, Vec<String>) {
    send_flood(seconds, rate, false);
    stop(dockflow)
}

fn stop(dockflow: Dockflow) -> (Vec<Value>, Vec<String>) {
    let (ok, stdout, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
    assert!(ok, "{stderr:#?}");
    (json_events(&stdout), stderr)
}

/// The flood of [`flood_syslog`]. `echoed`: then wait until every echo is back (a slow flood
/// whose last exchanges the test counts), and check that all came.
fn send_flood(seconds: &str, rate: &str, echoed: bool) {
    let syslog = lab::service("syslog").unwrap();
    let to = format!("{}:{}", lab::HOST_ADDRESS, syslog.port);
    let mut args = vec![
        "client",
        "udp-flood",
        &to,
        "--seconds",
        seconds,
        "--rate",
        rate,
    ];
    if echoed {
        args.push("--await-echoes");
    }
    let flood = lab::external_command(&lab_bin(), &args).output().unwrap();
    assert!(flood.status.success());
    if echoed {
        let said = String::from_utf8_lossy(&flood.stdout);
        let counts: Vec<&str> = said.split_whitespace().step_by(2).collect();
        assert!(
            counts.len() == 2 && counts[0] == counts[1],
            "not every datagram was echoed: {said}"
        );
    }
}

/// The packets to or from `port` among --json lines.
fn packets_of_port(lines: &[Value], port: u16) -> Vec<&Value> {
    lines
        .iter()
        .filter(|l| {
            l["type"] == "packet" && (l["packet"]["dport"] == port || l["packet"]["sport"] == port)
        })
        .collect()
}

/// The first number in the summary line that contains `marker`, e.g. "events not shown".
fn number_before(lines: &[String], marker: &str) -> u64 {
    lines
        .iter()
        .find(|l| l.contains(marker))
        .and_then(|l| {
            l.trim_start_matches("dockflow: ")
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[test]
fn an_overflowing_run_marks_incomplete_packets_and_counts_what_it_lost() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let record = std::env::temp_dir().join(format!("dockflow-flood-{}.dfl", std::process::id()));
    // A 64 KiB ring buffer (about 330 events) cannot hold a 20,000 requests/s flood's bursts.
    // Every packet: the flood is one connection.
    let dockflow = Dockflow::start(&[
        "--container",
        "syslog",
        "--per-connection",
        "all",
        "--ring-size",
        "64K",
        "--json",
        "--record",
        record.to_str().unwrap(),
    ]);
    let (lines, stderr) = flood_syslog(dockflow, "2", "20000");

    // The summary: "N packets, M events from ..., L lost", then one line per probe point.
    let summary = stderr
        .iter()
        .find(|l| l.contains(" events from "))
        .unwrap_or_else(|| panic!("{stderr:#?}"));
    let lost: u64 = summary
        .rsplit(", ")
        .next()
        .and_then(|l| l.trim_end_matches(" lost").parse().ok())
        .unwrap();
    assert!(
        lost > 0,
        "the flood did not overflow a 64 KiB ring: {stderr:#?}"
    );
    let per_point: u64 = stderr
        .iter()
        .filter(|l| l.contains("(ring buffer full)"))
        .map(|l| {
            l.trim_start_matches("dockflow: lost ")
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(per_point, lost, "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .filter(|l| l.contains("(ring buffer full)"))
            .all(|l| !l.contains("Netif") && !l.contains("TcIngress")),
        "probe points are named as the startup names them: {stderr:#?}"
    );

    // Packets on their way while events were lost are marked, and counted.
    let packets: Vec<_> = lines.iter().filter(|l| l["type"] == "packet").collect();
    let marked = packets.iter().filter(|p| p["incomplete"] == true).count() as u64;
    assert!(marked > 0);
    assert_eq!(marked, number_before(&stderr, "packets marked incomplete"));
    // An explanation says it cannot be complete exactly when a packet it explains is marked.
    for explanation in lines.iter().filter(|l| l["type"] == "explanation") {
        let first = |direction: &str| {
            packets.iter().find(|p| {
                p["connection"] == explanation["connection"] && p["direction"] == direction
            })
        };
        let marked = [first("request"), first("reply")]
            .iter()
            .flatten()
            .any(|p| p["incomplete"] == true);
        let says = explanation["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "incomplete");
        assert_eq!(says, marked, "{explanation:#}");
    }

    // Shown plus skipped by the display is what the recording holds.
    let shown: u64 = summary
        .split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap();
    let not_shown = number_before(&stderr, "events not shown");
    let replay = Command::new(dockflow_bin())
        .args(["--replay", record.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&record);
    let replay_stderr = String::from_utf8_lossy(&replay.stderr);
    let recorded: u64 = replay_stderr
        .lines()
        .find_map(|l| {
            l.split(", ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{replay_stderr}"));
    assert_eq!(shown + not_shown, recorded, "{stderr:#?}");
    lab::down().unwrap();
}

#[test]
fn per_connection_shows_the_first_packets_and_the_kernel_holds_back_the_rest() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let syslog = lab::service("syslog").unwrap();
    let dockflow = Dockflow::start(&["--container", "syslog", "--per-connection", "3", "--json"]);
    // 20 datagrams from one socket, each echoed: 40 packets of one connection.
    send_flood("0.5", "40", true);
    let (lines, stderr) = stop(dockflow);
    let exchange = packets_of_port(&lines, syslog.port);
    assert_eq!(exchange.len(), 3, "{exchange:#?}");
    // 37 packets past the limit, about 10 events each, held back in the kernel.
    let held = number_before(&stderr, "held back in the kernel");
    assert!(held >= 100, "{stderr:#?}");
}

#[test]
fn past_the_limit_a_connection_shows_a_sample_a_second_and_its_tuples_name_its_entry() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let syslog = lab::service("syslog").unwrap();
    let dockflow = Dockflow::start(&["--container", "syslog", "--per-connection", "3", "--json"]);
    // 2.5 s of 20 datagrams a second from one socket, each echoed: 100 packets of one
    // connection, past its limit from about 0.1 s on.
    send_flood("2.5", "20", true);
    // Every form the connection's packets take (before and after DNAT, either way) names
    // the one conntrack entry whose count the kernel keeps.
    let hidden = bpf_map_values("HIDDEN_TUPLES");
    assert_eq!(hidden.len(), 4, "{hidden:x?}");
    assert!(
        hidden[0] != 0 && hidden.iter().all(|v| *v == hidden[0]),
        "{hidden:x?}"
    );
    assert!(bpf_map_values("REPLY_TUPLES").iter().all(|v| *v == 1));
    let (lines, stderr) = stop(dockflow);
    let exchange = packets_of_port(&lines, syslog.port);
    let (samples, first): (Vec<&Value>, Vec<&Value>) =
        exchange.iter().copied().partition(|p| p["sample"] == true);
    assert_eq!(first.len(), 3, "{exchange:#?}");
    // About one a second: at 1.1 s and 2.1 s after the limit, give or take the flood's end.
    assert!((1..=3).contains(&samples.len()), "{samples:#?}");
    for sample in &samples {
        // A sample is shown whole: every hop, as the first packets were.
        assert!(sample["hops"].as_array().unwrap().len() >= 3, "{sample:#}");
    }
    let times: Vec<u64> = samples
        .iter()
        .map(|p| p["hops"][0]["event"]["ts_ns"].as_u64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|t| t[1] - t[0] >= 1_000_000_000),
        "{times:?}"
    );
    let held = number_before(&stderr, "held back in the kernel");
    assert!(held >= 100, "{stderr:#?}");
}

/// A small file system of the test's own, mounted for as long as this lives.
struct SmallFs(std::path::PathBuf);

impl SmallFs {
    fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("dockflow-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs on {}", dir.display());
        Self(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_recording_that_cannot_be_written_ends_the_run_with_one_line_and_leaves_nothing() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let full = SmallFs::mount("256k");
    let record = full.0.join("flood.dfl");
    let dockflow = Dockflow::start(&[
        "--container",
        "syslog",
        "--per-connection",
        "all",
        "--quiet",
        "--record",
        record.to_str().unwrap(),
    ]);
    // A second of the flood is far more than 256 KiB of events: the disk fills, and the run
    // ends on its own, without a signal.
    send_flood("1", "2000", false);
    let (ok, _, stderr) = dockflow.stop_with_stderr(0);
    assert!(!ok, "a run whose recording failed exited 0: {stderr:#?}");
    let error = stderr
        .iter()
        .find(|l| l.contains("error"))
        .unwrap_or_else(|| panic!("no error line: {stderr:#?}"));
    assert!(
        error.contains("writing the recording") && error.contains("No space left on device"),
        "{error}"
    );
    dockflow_tests::eventually("no programs left after the failed run", || {
        dockflow_tests::our_bpf_programs().is_empty()
    });
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&tables.stdout).contains("dockflow_trace"),
        "{tables:?}"
    );
    drop(full);
    lab::down().unwrap();
}
