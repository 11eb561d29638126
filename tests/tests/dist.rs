//! The release tarball (`cargo xtask dist`): its static binary follows the seed's RADIUS
//! exchange on the lab exactly as the host build does.

use std::path::Path;

use dockflow_lab::lab;
use dockflow_tests::{
    Dockflow, dist_bin, dockflow_bin, hop_kinds, json_events, lab_bin, lab_lock, packets,
};

/// The hops of each RADIUS packet (to or from port 1812) while `binary` follows `radius`
/// through one exchange from the external namespace.
fn radius_hops(binary: &Path) -> Vec<Vec<String>> {
    let radius = lab::service("radius").unwrap();
    let dockflow = Dockflow::start_binary(binary, &["--container", "radius", "--json"], &[]);
    lab::client(&lab_bin(), radius, &[]).unwrap();
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok, "{} failed", binary.display());
    let lines = json_events(&stdout);
    packets(&lines)
        .into_iter()
        .filter(|p| p["packet"]["dport"] == radius.port || p["packet"]["sport"] == radius.port)
        .map(hop_kinds)
        .collect()
}

#[test]
fn the_release_binary_follows_the_seeds_exchange_as_the_host_build_does() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let host = radius_hops(&dockflow_bin());
    let released = radius_hops(&dist_bin());
    assert_eq!(host.len(), 2, "request and reply: {host:#?}");
    assert_eq!(released, host);
}
