//! Capture files Wireshark opens: the lab's RADIUS exchange written with --pcapng, read back
//! with tshark (Wireshark's own dissectors), and the same file made from a recording.

use std::{os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use dockflow_lab::lab;
use dockflow_tests::{Dockflow, dockflow_bin, json_events, lab_bin, lab_lock, packets};
use serde_json::Value;

/// `tshark -r FILE ARGS`, its standard output.
fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("running tshark (cargo xtask setup installs it)");
    assert!(out.status.success(), "tshark {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every frame as (interface name, IP destination, comment), from tshark's JSON.
fn frames(file: &Path) -> Vec<(String, String, String)> {
    let json: Value = serde_json::from_str(&tshark(
        file,
        &[
            "-T",
            "json",
            "-e",
            "frame.interface_name",
            "-e",
            "ip.dst",
            "-e",
            "frame.comment",
        ],
    ))
    .unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|frame| {
            let field = |name: &str| {
                frame["_source"]["layers"][name]
                    .as_array()
                    .and_then(|v| v.first())
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            (
                field("frame.interface_name"),
                field("ip.dst"),
                field("frame.comment"),
            )
        })
        .collect()
}

/// Width and height of the browser window the pictures are rendered in.
const WINDOW: (u32, u32) = (1200, 900);

/// Renders `file` with headless Chromium (Debian's, installed by setup) into a PNG and returns
/// its size and the share of its pixels that are not white-ish.
fn rendered(file: &Path) -> ((u32, u32), f64) {
    let png = file.with_extension("png");
    let profile = file.with_extension("chromium");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("running chromium (cargo xtask setup installs it)");
    assert!(out.status.success(), "{out:?}");
    let decoder = png::Decoder::new(std::fs::File::open(&png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let inked = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p.iter().take(3).any(|c| *c < 200))
        .count();
    let total = (info.width * info.height) as f64;
    ((info.width, info.height), inked as f64 / total)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_radius_exchange_opens_in_tshark_one_frame_per_hop_and_a_recording_converts_the_same() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let dir = std::env::temp_dir().join(format!("dockflow-pcapng-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (live, recording, converted, picture, page) = (
        dir.join("live.pcapng"),
        dir.join("run.dfl"),
        dir.join("converted.pcapng"),
        dir.join("paths.svg"),
        dir.join("paths.html"),
    );
    let dockflow = Dockflow::start(&[
        "--container",
        "radius",
        "--json",
        "--pcapng",
        live.to_str().unwrap(),
        "--record",
        recording.to_str().unwrap(),
        "--svg",
        picture.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    let answer = lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    assert!(answer.starts_with("Access-Accept"), "{answer}");
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok);
    // Packet bytes on disk: for their owner only.
    assert_eq!(mode(&live), 0o600);
    assert_eq!(mode(&recording), 0o600);

    // One frame per hop of every packet shown.
    let lines = json_events(&stdout);
    let hops: usize = packets(&lines)
        .iter()
        .map(|p| p["hops"].as_array().unwrap().len())
        .sum();
    let live_frames = frames(&live);
    assert_eq!(live_frames.len(), hops, "{live_frames:#?}");

    // Wireshark's RADIUS dissector reads the request and the answer from the bytes.
    let codes = tshark(
        &live,
        &["-Y", "radius", "-T", "fields", "-e", "radius.code"],
    );
    assert!(
        codes.lines().any(|c| c == "1") && codes.lines().any(|c| c == "2"),
        "Access-Request (1) and Access-Accept (2) expected: {codes}"
    );

    // The comments carry the hop lines; around the DNAT slot of prerouting the destination
    // changes from the host's published address to the container's.
    assert!(
        live_frames
            .iter()
            .all(|(_, _, comment)| comment.starts_with("dockflow packet ")),
        "{live_frames:#?}"
    );
    let at = |interface: &str| {
        live_frames
            .iter()
            .filter(|(name, _, comment)| name == interface && comment.contains("request"))
            .map(|(_, dst, _)| dst.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        at("ipv4 prerouting -101 (before nat)").contains(&lab::HOST_ADDRESS.to_string()),
        "{live_frames:#?}"
    );
    assert!(
        at("ipv4 prerouting -99 (after nat)").contains(&"172.20.0.2".to_string()),
        "{live_frames:#?}"
    );

    // On the bridge device, tc's interfaces say which way the frames cross.
    assert!(
        live_frames
            .iter()
            .any(|(name, _, _)| name == "tc ingress docker1 (passed up by the bridge)"),
        "{live_frames:#?}"
    );

    // The picture: the exchange's request and reply drawn, with the DNAT beside its hop.
    let svg = std::fs::read_to_string(&picture).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.contains("class=\"path request\"") && svg.contains("class=\"path reply\""));
    assert!(
        svg.contains(&format!(
            "[dst {}:1812 -&gt; 172.20.0.2:1812]",
            lab::HOST_ADDRESS
        )),
        "{svg}"
    );
    assert!(svg.matches("class=\"hop\"").count() >= hops / 2, "{svg}");
    // The page: the same diagrams, each beside its explanation.
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg ") && html.contains("<li>"));
    assert!(
        html.contains("nat chains are consulted only for a connection"),
        "{html}"
    );

    // As a browser shows them: the window's size, with the lanes and paths drawn on it.
    for file in [&picture, &page] {
        let (size, inked) = rendered(file);
        assert_eq!(size, WINDOW, "{}", file.display());
        assert!(
            inked > 0.01,
            "{}: only {:.4} of the pixels drawn",
            file.display(),
            inked
        );
    }

    // The recording converts to the same frames with the same comments.
    let out = Command::new(dockflow_bin())
        .args([
            "--replay",
            recording.to_str().unwrap(),
            "--quiet",
            "--pcapng",
        ])
        .arg(&converted)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(mode(&converted), 0o600);
    let sorted = |file: &Path| {
        let mut lines: Vec<String> = tshark(
            file,
            &[
                "-T",
                "fields",
                "-e",
                "frame.time_epoch",
                "-e",
                "frame.len",
                "-e",
                "frame.interface_name",
            ],
        )
        .lines()
        .map(str::to_string)
        .collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&converted), sorted(&live));
    let mut live_comments: Vec<_> = live_frames.into_iter().map(|f| f.2).collect();
    let mut converted_comments: Vec<_> = frames(&converted).into_iter().map(|f| f.2).collect();
    live_comments.sort();
    converted_comments.sort();
    assert_eq!(converted_comments, live_comments);
    std::fs::remove_dir_all(&dir).unwrap();
    lab::down().unwrap();
}
