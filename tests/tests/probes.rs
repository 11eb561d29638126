//! The kernel probes on the real kernel and the real lab: tc on the radius container's veth and
//! on docker1, BPF netfilter programs around the NAT priorities, skb:kfree_skb, and nothing left
//! attached after any kind of exit.

use std::process::Command;

use dockflow_lab::lab;
use dockflow_tests::{
    Dockflow, IptablesRule, eventually, json_events, lab_bin, lab_lock, our_bpf_programs,
};
use serde_json::Value;

const CONTAINER: &str = "172.20.0.2";

fn client() -> String {
    lab::EXTERNAL_ADDRESS.to_string()
}

/// Runs one RADIUS exchange under `dockflow --container radius --json` and returns its events
/// and the host-side veth name.
fn trace_one_exchange() -> (Vec<Value>, String) {
    let dockflow = Dockflow::start(&["--container", "radius", "--json", "--raw"]);
    let veth = dockflow
        .startup
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("attached  tc ingress on veth")
                .map(|rest| format!("veth{rest}"))
        })
        .unwrap_or_else(|| panic!("no veth attachment reported: {:?}", dockflow.startup));
    for family in ["ipv4", "ipv6"] {
        assert!(
            dockflow.startup.iter().any(|l| l
                .contains(&format!("attached  netfilter {family} (all 5 hooks"))
                && l.contains("18 links")),
            "{:?}",
            dockflow.startup
        );
    }
    let answer = lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    assert!(answer.starts_with("Access-Accept"), "{answer}");
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok, "dockflow failed after SIGINT");
    (json_events(&stdout), veth)
}

fn is_request(e: &Value) -> bool {
    e["packet"]["src"] == client() && e["packet"]["dport"] == 1812
}

fn is_reply(e: &Value) -> bool {
    e["packet"]["dst"] == client() && e["packet"]["sport"] == 1812
}

fn nf<'a>(
    events: &'a [Value],
    hook: &str,
    pred: impl Fn(&Value) -> bool + 'a,
) -> impl Iterator<Item = &'a Value> + 'a {
    let hook = hook.to_string();
    events.iter().filter(move |e| {
        e["probe"] == "netfilter"
            && e["netfilter"]["hook"] == hook
            && e["netfilter"]["family"] == "ipv4"
            && pred(e)
    })
}

#[test]
fn request_and_reply_cross_tc_and_netfilter_with_dnat_and_its_reversal() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let (events, veth) = trace_one_exchange();
    let tc = |probe: &str, iface: &str, pred: fn(&Value) -> bool| {
        events
            .iter()
            .any(|e| e["probe"] == probe && e["interface"] == iface && pred(e))
    };

    // Request, L3: before the dstnat priority it is addressed to the host, after it to the container.
    let host = lab::HOST_ADDRESS.to_string();
    let pre: Vec<&Value> = nf(&events, "prerouting", is_request).collect();
    assert!(
        pre.iter()
            .any(|e| e["netfilter"]["priority"].as_i64().unwrap() < -100
                && e["packet"]["dst"] == host),
        "{pre:#?}"
    );
    assert!(
        pre.iter()
            .any(|e| e["netfilter"]["priority"].as_i64().unwrap() > -100
                && e["packet"]["dst"] == CONTAINER),
        "{pre:#?}"
    );
    let after_dnat = pre
        .iter()
        .find(|e| e["netfilter"]["priority"] == -99)
        .expect("request after dstnat");
    assert_eq!(after_dnat["conntrack"]["state"], "new");
    assert_eq!(after_dnat["conntrack"]["direction"], "original");
    assert!(
        after_dnat["conntrack"]["status"]
            .as_array()
            .unwrap()
            .contains(&"dst_nat".into()),
        "{after_dnat}"
    );
    assert_eq!(after_dnat["conntrack"]["original"]["dst"], host);
    assert_eq!(after_dnat["conntrack"]["reply"]["src"], CONTAINER);
    assert!(
        nf(&events, "forward", is_request).any(|e| e["packet"]["dst"] == CONTAINER),
        "request not forwarded"
    );
    assert!(
        nf(&events, "postrouting", is_request).count() >= 2,
        "request not seen in postrouting"
    );
    assert_eq!(
        nf(&events, "input", is_request).count(),
        0,
        "the request is forwarded, never delivered locally"
    );
    // Request, L2: the IP stack sends it into the bridge, which hands it to the container's port.
    assert!(
        tc("tc_egress", "docker1", |e| is_request(e)
            && e["packet"]["dst"] == CONTAINER),
        "{events:#?}"
    );
    assert!(
        tc("tc_egress", &veth, |e| is_request(e)
            && e["packet"]["dst"] == CONTAINER),
        "{events:#?}"
    );

    // Reply, L2: it leaves the container's port and the bridge passes it up (docker1 ingress).
    assert!(
        tc("tc_ingress", &veth, |e| is_reply(e)
            && e["packet"]["src"] == CONTAINER),
        "{events:#?}"
    );
    assert!(
        tc("tc_ingress", "docker1", |e| is_reply(e)
            && e["packet"]["src"] == CONTAINER),
        "{events:#?}"
    );
    // Reply, L3: conntrack knows it as the reply direction; it is forwarded, never input.
    let reply_fwd: Vec<&Value> = nf(&events, "forward", is_reply).collect();
    assert!(!reply_fwd.is_empty(), "reply not forwarded: {events:#?}");
    assert!(
        reply_fwd
            .iter()
            .all(|e| e["conntrack"]["direction"] == "reply"),
        "{reply_fwd:#?}"
    );
    assert_eq!(
        nf(&events, "input", is_reply).count(),
        0,
        "the reply never reaches IP input"
    );
    // Its prerouting is run by br_netfilter from inside the bridge.
    assert!(
        nf(&events, "prerouting", is_reply).all(|e| e["netfilter"]["from_bridge"] == true),
        "{events:#?}"
    );
    // The DNAT is undone for the reply at srcnat: from the container before, from the host after.
    let post: Vec<&Value> = nf(&events, "postrouting", is_reply).collect();
    assert!(
        post.iter()
            .any(|e| e["netfilter"]["priority"] == 99 && e["packet"]["src"] == CONTAINER),
        "{post:#?}"
    );
    assert!(
        post.iter()
            .any(|e| e["netfilter"]["priority"] == 101 && e["packet"]["src"] == host),
        "{post:#?}"
    );

    // Every netfilter event of the exchange carries the packet identity (skb->head).
    assert!(
        events
            .iter()
            .filter(|e| e["probe"] == "netfilter")
            .all(|e| e["skb_id"].is_u64())
    );
    assert_eq!(
        our_bpf_programs(),
        Vec::<String>::new(),
        "programs left loaded after exit"
    );
    lab::down().unwrap();
}

#[test]
fn a_packet_dropped_in_docker_user_yields_a_drop_event_with_its_reason() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let dockflow = Dockflow::start(&["--container", "radius", "--json", "--raw"]);
    let stdout = {
        let _rule = IptablesRule::insert(
            "DOCKER-USER",
            &[
                "-p", "udp", "-d", CONTAINER, "--dport", "1812", "-j", "DROP",
            ],
        );
        let answer = lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]);
        assert!(
            answer.is_err(),
            "the request should have been dropped: {answer:?}"
        );
        let (ok, stdout) = dockflow.stop_with(libc::SIGTERM);
        assert!(ok, "dockflow failed after SIGTERM");
        stdout
    };
    let events = json_events(&stdout);
    let drops: Vec<&Value> = events
        .iter()
        .filter(|e| e["probe"] == "kfree_skb")
        .collect();
    assert!(
        drops.iter().any(|e| e["drop"]["reason"] == "NETFILTER_DROP"
            && e["packet"]["dst"] == CONTAINER
            && e["packet"]["dport"] == 1812),
        "no NETFILTER_DROP event for the request: {events:#?}"
    );
    // nftables names the rule that dropped it.
    assert!(
        events.iter().any(|e| e["table"] == "filter"
            && e["chain"] == "DOCKER-USER"
            && e["verdict"] == "drop"
            && e["rule"]
                .as_str()
                .is_some_and(|r| r.contains("1812") && r.ends_with("drop"))),
        "no nft verdict for the drop: {events:#?}"
    );
    // The drop came after the forward hook's first priority saw it, and it never reached the bridge.
    assert!(nf(&events, "forward", is_request).next().is_some());
    assert!(
        !events
            .iter()
            .any(|e| e["probe"] == "tc_egress" && is_request(e))
    );
    lab::down().unwrap();
}

#[test]
fn debug_kernel_says_why_the_filter_kept_or_skipped_each_frame_and_is_silent_without_it() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let exchange = |args: &[&str]| {
        let dockflow = Dockflow::start(args);
        // radius is the target; syslog shares its bridge (docker1), where tc sees it too.
        lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
        lab::client(&lab_bin(), lab::service("syslog").unwrap(), &[]).unwrap();
        let (ok, _, stderr) = dockflow.stop_with_stderr(libc::SIGINT);
        assert!(ok);
        stderr
            .into_iter()
            .filter(|l| l.starts_with("dockflow: kernel: "))
            .collect::<Vec<_>>()
    };
    let told = exchange(&["--container", "radius", "--json", "--debug-kernel"]);
    assert!(
        told.iter()
            .any(|l| l.contains("tc ingress") && l.contains("kept: to or from a target address")),
        "{told:#?}"
    );
    assert!(
        told.iter().any(|l| l.contains("skipped: neither")),
        "{told:#?}"
    );
    assert_eq!(
        exchange(&["--container", "radius", "--json"]),
        Vec::<String>::new()
    );
    lab::down().unwrap();
}

fn tc_filters(iface: &str) -> String {
    ["ingress", "egress"]
        .iter()
        .map(|dir| {
            String::from_utf8_lossy(
                &Command::new("tc")
                    .args(["filter", "show", "dev", iface, dir])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .into_owned()
        })
        .collect()
}

fn nft_tables() -> String {
    String::from_utf8_lossy(
        &Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned()
}

#[test]
fn nothing_survives_sigkill_and_a_restart_removes_legacy_tc_leftovers() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();

    // tcx and netfilter links are owned by file descriptors: SIGKILL leaves nothing.
    let dockflow = Dockflow::start(&["--container", "radius"]);
    let veth = dockflow.veth();
    // SAFETY: kill takes plain integers; the pid is a child this code started.
    unsafe { libc::kill(dockflow.pid(), libc::SIGKILL) };
    let _ = dockflow.stop_with(0);
    // The kernel releases a dead process's links and programs shortly after it is reaped.
    eventually("no programs left after SIGKILL", || {
        our_bpf_programs().is_empty()
    });

    // Our nft table is not owned by a file descriptor: SIGKILL leaves it, the next start removes it.
    assert!(
        nft_tables().contains("dockflow_trace"),
        "expected the crash to leave the nft table: {}",
        nft_tables()
    );

    // Pre-tcx kernels use clsact filters, which outlive the process; force that path.
    let legacy = Dockflow::start_with_env(
        &["--container", "radius"],
        &[("DOCKFLOW_TC_ATTACH", "netlink")],
    );
    assert!(
        legacy
            .startup
            .iter()
            .any(|l| l.contains("removed nftables tables")),
        "{:?}",
        legacy.startup
    );
    assert!(
        tc_filters(&veth).contains("df_tc_ingress"),
        "netlink filters not attached: {}",
        tc_filters(&veth)
    );
    // SAFETY: kill takes plain integers; the pid is a child this code started.
    unsafe { libc::kill(legacy.pid(), libc::SIGKILL) };
    let _ = legacy.stop_with(0);
    assert!(
        tc_filters(&veth).contains("df_tc_ingress"),
        "expected the crash to leave a filter behind"
    );

    // The next start finds and removes them; its own clean exit leaves nothing either.
    let next = Dockflow::start(&["--container", "radius"]);
    assert!(
        next.startup
            .iter()
            .any(|l| l.contains("removed") && l.contains("left by an earlier run")),
        "{:?}",
        next.startup
    );
    let (ok, _) = next.stop_with(libc::SIGINT);
    assert!(ok);
    assert!(
        !tc_filters(&veth).contains("df_"),
        "filters left: {}",
        tc_filters(&veth)
    );
    let qdiscs = String::from_utf8_lossy(
        &Command::new("tc")
            .args(["qdisc", "show", "dev", &veth])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!qdiscs.contains("clsact"), "clsact qdisc left: {qdiscs}");
    assert!(
        !nft_tables().contains("dockflow"),
        "nft tables left: {}",
        nft_tables()
    );
    assert_eq!(our_bpf_programs(), Vec::<String>::new());
    lab::down().unwrap();
}

#[test]
fn the_in_kernel_filter_keeps_other_containers_traffic_out() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let dockflow = Dockflow::start(&["--container", "radius", "--json", "--raw"]);
    let syslog = lab::service("syslog").unwrap();
    lab::client(&lab_bin(), syslog, &[]).unwrap();
    lab::client(&lab_bin(), lab::service("radius").unwrap(), &[]).unwrap();
    let (ok, stdout) = dockflow.stop_with(libc::SIGINT);
    assert!(ok);
    let events = json_events(&stdout);
    assert!(
        events.iter().any(is_request),
        "the radius exchange must still be seen"
    );
    let other = syslog.address.to_string();
    let leaked: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["packet"]["dport"] == 514
                || e["packet"]["sport"] == 514
                || e["packet"]["src"] == other
                || e["packet"]["dst"] == other
        })
        .collect();
    assert!(
        leaked.is_empty(),
        "syslog traffic reached userspace: {leaked:#?}"
    );
    lab::down().unwrap();
}

#[test]
fn two_runs_side_by_side_keep_their_own_nft_tables_and_say_who_has_the_hooks() {
    let _lock = lab_lock();
    lab::up(&lab_bin()).unwrap();
    let first = Dockflow::start(&["--container", "radius"]);
    let second = Dockflow::start(&["--container", "radius"]);
    let table_of = |run: &Dockflow| format!("dockflow_trace_{}", run.pid());

    // The kernel allows one BPF netfilter program per hook and priority: the second run says
    // why it has no netfilter hooks, and leaves the first run's table alone.
    assert!(
        second
            .startup
            .iter()
            .any(|l| l.contains("refused   netfilter") && l.contains("taken by another")),
        "{:?}",
        second.startup
    );
    assert!(
        !second
            .startup
            .iter()
            .any(|l| l.contains("removed nftables tables")),
        "{:?}",
        second.startup
    );
    let tables = nft_tables();
    assert!(
        tables.contains(&table_of(&first)) && tables.contains(&table_of(&second)),
        "{tables}"
    );

    let first_table = table_of(&first);
    assert!(second.stop_with(libc::SIGINT).0);
    assert!(
        nft_tables().contains(&first_table),
        "the second run removed the first's table"
    );
    assert!(first.stop_with(libc::SIGINT).0);
    assert!(!nft_tables().contains("dockflow_trace"), "{}", nft_tables());
    assert_eq!(our_bpf_programs(), Vec::<String>::new());
    lab::down().unwrap();
}
