//! The release tarball (`cargo xtask dist`) and the container image (`cargo xtask image`):
//! each follows the seed's RADIUS exchange on the lab exactly as the host build does.

use std::path::Path;

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
