//! The release tarball (`cargo xtask dist`) and the container image (`cargo xtask image`):
//! each follows the seed's RADIUS exchange on the lab exactly as the host build does.

use std::{path::Path, process::Command};

use dockflow_lab::lab;
use dockflow_tests::{
    Dockflow, dist_bin, dockflow_bin, hop_kinds, json_events, lab_bin, lab_lock, packets,
};

/// The hops of each RADIUS packet (to or from port 1812) while `command ARGS` (dockflow, or
/// `docker run` of its image) follows `radius` through one exchange from the external
/// namespace.
fn radius_hops(command: &Path, args: &[&str]) -> Vec<Vec<String>> {
    warm_up();
    let radius = lab::service("radius").unwrap();
    let args = [args, &["--container", "radius", "--json"]].concat();
    let dockflow = Dockflow::start_binary(command, &args, &[]);
    lab::client(&lab_bin(), radius, &[]).unwrap();
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok, "{} failed", command.display());
    let lines = json_events(&stdout);
    packets(&lines)
        .into_iter()
        .filter(|p| p["packet"]["dport"] == radius.port || p["packet"]["sport"] == radius.port)
        .map(hop_kinds)
        .collect()
}

/// One exchange first, so that both runs find the bridge and the neighbour table in the same
/// state (a first frame to an unlearned MAC is flooded).
fn warm_up() {
    lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
}

#[test]
fn the_release_binary_follows_the_seeds_exchange_as_the_host_build_does() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let host = radius_hops(&dockflow_bin(), &[]);
    let released = radius_hops(&dist_bin(), &[]);
    assert_eq!(host.len(), 2, "request and reply: {host:#?}");
    assert_eq!(released, host);
}

#[test]
fn the_image_follows_the_seeds_exchange_as_the_host_build_does() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let image =
        std::env::var("DOCKFLOW_IMAGE").expect("DOCKFLOW_IMAGE: run through cargo xtask test");
    let options = std::env::var("DOCKFLOW_IMAGE_RUN").expect("DOCKFLOW_IMAGE_RUN");
    let run: Vec<&str> = ["run", "--rm"]
        .into_iter()
        .chain(options.split_whitespace())
        .chain([image.as_str()])
        .collect();
    let host = radius_hops(&dockflow_bin(), &[]);
    let imaged = radius_hops(Path::new("docker"), &run);
    assert_eq!(host.len(), 2, "request and reply: {host:#?}");
    assert_eq!(imaged, host);
}

/// The package installed for one test, purged again when dropped (also when it fails).
struct Installed;

impl Installed {
    fn install(deb: &str) -> Self {
        let out = Command::new("dpkg").args(["-i", deb]).output().unwrap();
        assert!(
            out.status.success(),
            "dpkg -i {deb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Installed
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "dockflow"]).output();
    }
}

#[test]
fn the_debian_package_installs_the_binary_page_and_completions_and_purges_clean() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let deb = std::env::var("DOCKFLOW_DEB").expect("DOCKFLOW_DEB: run through cargo xtask test");
    let installed = Installed::install(&deb);
    let files = [
        "/usr/bin/dockflow",
        "/usr/share/man/man1/dockflow.1.gz",
        "/usr/share/bash-completion/completions/dockflow",
        "/usr/share/zsh/vendor-completions/_dockflow",
        "/usr/share/fish/vendor_completions.d/dockflow.fish",
    ];
    for file in files {
        assert!(Path::new(file).exists(), "{file} not installed");
    }
    let host = radius_hops(&dockflow_bin(), &[]);
    let packaged = radius_hops(Path::new("/usr/bin/dockflow"), &[]);
    assert_eq!(host.len(), 2, "request and reply: {host:#?}");
    assert_eq!(packaged, host);
    drop(installed);
    for file in files {
        assert!(!Path::new(file).exists(), "{file} left after purge");
    }
}

#[test]
fn with_only_the_documented_capabilities_it_follows_the_exchange_as_full_root_does() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let dockflow = dockflow_bin();
    let reduced = [
        "--inh-caps=-all",
        "--bounding-set=-all,+sys_admin,+net_admin,+bpf,+perfmon,+sys_ptrace,+syslog",
        dockflow.to_str().unwrap(),
    ];
    let host = radius_hops(&dockflow, &[]);
    let limited = radius_hops(Path::new("setpriv"), &reduced);
    assert_eq!(host.len(), 2, "request and reply: {host:#?}");
    assert_eq!(limited, host);
}
