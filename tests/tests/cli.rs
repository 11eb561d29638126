//! dockflow's errors for bad targets: one line, non-zero exit, nothing attached.

use std::process::Command;

use dockflow_tests::{dockflow_bin, our_bpf_programs};

fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(dockflow_bin()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unknown_container_is_a_one_line_error() {
    let (ok, stderr) = run(&["--container", "no-such-container-dockflow"]);
    assert!(!ok);
    assert_eq!(stderr.trim(), "dockflow: error: no such container: no-such-container-dockflow");
    assert!(our_bpf_programs().is_empty());
}

#[test]
fn unknown_interface_is_a_one_line_error() {
    let (ok, stderr) = run(&["--iface", "nosuchif0"]);
    assert!(!ok);
    assert_eq!(stderr.trim(), "dockflow: error: no interface named nosuchif0 on this host");
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
    assert!(stderr.contains("cannot reach the Docker daemon at /nonexistent/docker.sock"), "{stderr}");
}
