//! The lab on the real Docker engine: it comes up from nothing, the seed's RADIUS exchange works
//! through the host's DNAT, and `lab down` leaves nothing.

use std::process::Command;

use dockflow_lab::lab;
use dockflow_tests::{eventually, lab_bin, lab_lock};

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_nothing_left() {
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &format!("label={}", lab::LABEL)]),
        "",
        "lab containers left"
    );
    assert_eq!(
        docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{}$", lab::NETWORK)
        ]),
        "",
        "network left"
    );
    assert_eq!(docker(&["image", "ls", "-q", lab::IMAGE]), "", "image left");
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&netns.stdout).contains(lab::EXTERNAL_NETNS),
        "namespace left"
    );
    // Links go with their namespace and network, which the kernel may finish a moment later.
    for (link, what) in [
        (lab::HOST_LINK, "host link left"),
        (lab::BRIDGE, "bridge left"),
    ] {
        eventually(what, || {
            !Command::new("ip")
                .args(["link", "show", link])
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap()
                .success()
        });
    }
}

#[test]
fn lab_comes_up_answers_through_dnat_and_goes_away() {
    let _lock = lab_lock();
    lab::down().unwrap();
    assert_nothing_left();

    lab::up(&lab_bin()).unwrap();
    assert!(
        lab::status().iter().all(|(_, up)| *up),
        "{:?}",
        lab::status()
    );
    // A second `up` is a no-op, not an error.
    lab::up(&lab_bin()).unwrap();

    let radius = lab::service("radius").unwrap();
    let accept = lab::client(&lab_bin(), radius, &[]).unwrap();
    // The reply comes back from the address the client sent to: the DNAT was undone for it.
    assert!(
        accept.starts_with(&format!("Access-Accept from {}:1812", lab::HOST_ADDRESS)),
        "{accept}"
    );
    let reject = lab::client(&lab_bin(), radius, &["--password".into(), "wrong".into()]).unwrap();
    assert!(reject.starts_with("Access-Reject"), "{reject}");
    // A wrong shared secret makes the reply fail verification.
    assert!(lab::client(&lab_bin(), radius, &["--secret".into(), "wrong".into()]).is_err());

    for name in ["syslog", "dhcp", "proxy"] {
        let answer = lab::client(
            &lab_bin(),
            lab::service(name).unwrap(),
            &["--message".into(), format!("ping {name}")],
        )
        .unwrap();
        assert!(
            answer.ends_with(&format!("ping {name}")),
            "{name}: {answer}"
        );
    }

    lab::down().unwrap();
    assert_nothing_left();
    // And a second `down` finds nothing to do.
    lab::down().unwrap();
}
