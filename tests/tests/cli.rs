//! dockflow's errors for bad targets: one line, non-zero exit, nothing attached.

use std::process::Command;

use dockflow_tests::{dockflow_bin, our_bpf_programs};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(dockflow_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_container_is_a_one_line_error() {
    let (ok, stderr) = run(&["--container", "no-such-container-dockflow"]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "dockflow: error: no such container: no-such-container-dockflow"
    );
    assert!(our_bpf_programs().is_empty());
}

#[test]
fn unknown_interface_is_a_one_line_error() {
    let (ok, stderr) = run(&["--iface", "nosuchif0"]);
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        "dockflow: error: no interface named nosuchif0 on this host"
    );
}

#[test]
fn unreachable_docker_daemon_is_a_one_line_error() {
    let out = Command::new(dockflow_bin())
        .args(["--container", "radius"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach the Docker daemon at /nonexistent/docker.sock"),
        "{stderr}"
    );
}

#[test]
fn a_stopped_container_is_a_one_line_error() {
    let _lock = dockflow_tests::lab_lock();
    dockflow_lab::lab::up(&dockflow_tests::lab_bin()).unwrap();
    let name = "dockflow-stopped-test";
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    let created = Command::new("docker")
        .args([
            "create",
            "--name",
            name,
            "--label",
            "dockflow.lab=1",
            dockflow_lab::lab::IMAGE,
            "serve",
            "udp-echo",
            "--port",
            "9",
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let (ok, stderr) = run(&["--container", name]);
    let _ = Command::new("docker").args(["rm", "-f", name]).output();
    dockflow_lab::lab::down().unwrap();
    assert!(!ok);
    assert_eq!(
        stderr.trim(),
        format!("dockflow: error: container {name} is not running")
    );
}

#[test]
fn without_root_it_says_so_in_one_line() {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(dockflow_bin())
        .args(["--container", "radius"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "dockflow: error: dockflow must run as root (it loads eBPF programs and reads other network namespaces)"
    );
}

#[test]
fn root_without_cap_net_admin_is_told_which_capability_is_missing() {
    // Root, with every capability dockflow documents but CAP_NET_ADMIN.
    let out = Command::new("setpriv")
        .args([
            "--inh-caps=-all",
            "--bounding-set=-all,+sys_admin,+bpf,+perfmon,+sys_ptrace,+syslog",
        ])
        .arg(dockflow_bin())
        .args(["--container", "radius"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "dockflow: error: dockflow runs without CAP_NET_ADMIN (tc, netfilter links, nftables); it needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
    );
    assert!(our_bpf_programs().is_empty());
}

#[test]
fn no_target_is_a_one_line_error() {
    let (ok, stderr) = run(&[]);
    assert!(!ok);
    assert!(
        stderr
            .trim()
            .starts_with("dockflow: error: say what to watch"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}

#[test]
fn bad_numbers_are_refused_by_the_parser_before_anything_attaches() {
    for args in [
        ["--duration", "-1"],
        ["--duration", "nan"],
        ["--duration", "1e30"],
        ["--duration", "0"],
        ["--count", "0"],
        ["--count", "-3"],
        ["--ring-size", "3"],
        ["--max-open-packets", "0"],
        ["--max-connections", "-1"],
        ["--per-connection", "0"],
        ["--per-connection", "-2"],
        ["--per-connection", "every"],
    ] {
        let out = Command::new(dockflow_bin())
            .args(["--iface", "lo"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: invalid value"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(our_bpf_programs().is_empty());
    }
}

#[test]
fn a_filter_syntax_error_is_one_line_naming_the_word_exit_2() {
    let out = Command::new(dockflow_bin())
        .args(["--container", "radius", "udp", "prot", "1812"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "dockflow: error: bad filter at word 2 (`prot`): expected `port`, `portrange`, `and`, `or` or the end"
    );
    assert!(our_bpf_programs().is_empty());
}

#[test]
fn merging_needs_two_usable_recordings_and_says_which_is_not() {
    // One recording alone is no merge: a usage error, as clap gives them.
    let out = Command::new(dockflow_bin())
        .args(["merge", "/nonexistent-a.dfl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A corrupt one among them: one line, naming the file.
    let dir = std::env::temp_dir();
    let corrupt = dir.join(format!("dockflow-merge-corrupt-{}.dfl", std::process::id()));
    std::fs::write(&corrupt, b"DOCKFLOW\x01\x00\x00\x00\xff\xff\xff\x00garbage").unwrap();
    let missing = dir.join(format!("dockflow-merge-missing-{}.dfl", std::process::id()));
    let (ok, stderr) = run(&[
        "merge",
        missing.to_str().unwrap(),
        corrupt.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("dockflow: error: ") && stderr.contains(missing.to_str().unwrap()),
        "{stderr}"
    );
    let (ok, stderr) = run(&[
        "--replay",
        corrupt.to_str().unwrap(),
        corrupt.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&corrupt);
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("not a usable dockflow recording"),
        "{stderr}"
    );
}
