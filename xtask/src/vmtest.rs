//! `cargo xtask vmtest`: the probes a stock distribution kernel allows (kprobes on the bridge
//! functions and nf_hook_slow) tested for real, in a Debian cloud kernel under qemu (TCG; this
//! machine kind's KVM does not work nested).
//!
//! Two guests. The first has no Docker: its /init (vm/init.sh) builds the same shape by hand (a
//! bridge with veth ports into namespaces, an external namespace, Docker-like nft DNAT and
//! masquerade). The second (vm/mesh.sh, judged in mesh.rs) runs Debian's Docker engine in a
//! one-node swarm, for the routing mesh, which needs the IPVS this machine's kernel lacks. Each
//! runs a static dockflow and prints what it saw between markers. The host judges: qemu's exit
//! status says nothing about the guest.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use dockflow_lab::stream;
use serde_json::Value;

use crate::{
    build,
    setup::{self, output, quiet},
};

mod mesh;

/// Modules the guest loads, dependencies first (computed from modinfo on the host).
/// The guest has no modprobe to autoload with, so everything is listed: sch_ingress and cls_bpf
/// for tc on a pre-tcx kernel, nft_meta_bridge for `meta nftrace` in a bridge table.
const MODULES: &[&str] = &[
    "bridge",
    "br_netfilter",
    "veth",
    "sch_ingress",
    "cls_bpf",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nf_conntrack",
    "nft_meta_bridge",
];
/// Userspace the guest needs besides busybox: copied with their shared libraries.
const GUEST_TOOLS: &[&str] = &["/usr/sbin/ip", "/usr/sbin/nft"];
const BOOT_TIMEOUT: Duration = Duration::from_secs(170);

/// One guest: its /init, what it loads and runs, and what it is given.
struct Guest {
    name: &'static str,
    /// Its /init, in xtask/vm.
    init: &'static str,
    /// Module lists, each with its dependencies (resolved on the host).
    modules: &'static [&'static [&'static str]],
    /// Besides [`GUEST_TOOLS`].
    tools: &'static [&'static str],
    /// Directories copied whole (plugins the tools load by name).
    directories: &'static [&'static str],
    memory_mib: u32,
    cpus: u32,
    timeout: Duration,
}

const BRIDGE_GUEST: Guest = Guest {
    name: "bridge",
    init: "init.sh",
    modules: &[MODULES],
    tools: &[],
    directories: &[],
    memory_mib: 1024,
    cpus: 1,
    timeout: BOOT_TIMEOUT,
};

pub fn run() -> Result<()> {
    let started = Instant::now();
    setup::run()?;
    setup::ensure_packages(&["qemu-system-x86", "busybox-static", "kmod", "cpio"])?;
    let dockflow = build::dockflow_static()?;
    let responder = build::lab_responder()?;
    let kernel = Kernel::fetch()?;
    eprintln!("vmtest: kernel {} ({})", kernel.release, kernel.package);
    let mut failed = Vec::new();
    for (guest, judge) in [
        (&BRIDGE_GUEST, judge as fn(&str) -> Result<()>),
        (&mesh::GUEST, mesh::judge),
        (&mesh::ACROSS_NODES, mesh::judge_across_nodes),
    ] {
        let initramfs = build_initramfs(guest, &kernel, &dockflow, &responder)?;
        let boot = Instant::now();
        let console = boot_guest(guest, &kernel.vmlinuz, &initramfs)?;
        eprintln!(
            "vmtest: {} guest ran {:.0} s (whole vmtest so far {:.0} s)",
            guest.name,
            boot.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        if let Err(error) = judge(&console) {
            eprintln!("vmtest: {error:#}");
            failed.push(guest.name);
        }
    }
    if !failed.is_empty() {
        bail!("vmtest: the {} guest failed", failed.join(" and "));
    }
    Ok(())
}

struct Kernel {
    package: String,
    release: String,
    vmlinuz: PathBuf,
    modules: PathBuf,
}

impl Kernel {
    /// The current Debian cloud kernel (resolved now: versions rotate out of the archive),
    /// downloaded and unpacked once into the cache.
    fn fetch() -> Result<Self> {
        let depends =
            output(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]))?;
        let package = depends
            .lines()
            .find_map(|l| l.trim().strip_prefix("Depends: "))
            .filter(|p| p.starts_with("linux-image-"))
            .context("apt-cache names no linux-image package for linux-image-cloud-amd64 (run apt-get update)")?
            .to_string();
        let release = package.trim_start_matches("linux-image-").to_string();
        let dir = setup::cache_dir().join("vm").join(&package);
        let root = dir.join("root");
        if !root.join("boot").exists() {
            fs::create_dir_all(&dir)?;
            quiet(
                Command::new("apt-get")
                    .args(["download", &package])
                    .current_dir(&dir),
            )?;
            let deb = fs::read_dir(&dir)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .context("apt-get download produced no .deb")?;
            quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
        }
        Ok(Self {
            vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
            modules: root.join("lib/modules").join(&release),
            package,
            release,
        })
    }

    /// `names` and their dependencies, in load order.
    fn modules_in_order(&self, names: &[&str]) -> Result<Vec<PathBuf>> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for name in names {
            self.resolve(name, &mut seen, &mut order)?;
        }
        Ok(order)
    }

    fn resolve(
        &self,
        name: &str,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(file) = find_module(&self.modules.join("kernel"), &format!("{name}.ko")) else {
            return Ok(()); // built into this kernel
        };
        let depends = output(Command::new("modinfo").args(["-F", "depends"]).arg(&file))?;
        for dep in depends.trim().split(',').filter(|d| !d.is_empty()) {
            self.resolve(dep, seen, order)?;
        }
        order.push(file);
        Ok(())
    }
}

fn find_module(dir: &Path, file: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_module(&path, file) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == file) {
            return Some(path);
        }
    }
    None
}

fn build_initramfs(
    guest: &Guest,
    kernel: &Kernel,
    dockflow: &Path,
    responder: &Path,
) -> Result<PathBuf> {
    let dir = build::workspace_root().join("target/vmtest");
    let root = dir.join(format!("root-{}", guest.name));
    let _ = fs::remove_dir_all(&root);
    for dir in ["bin", "modules", "proc", "sys", "dev", "run", "tmp", "etc"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("copying busybox (busybox-static)")?;
    fs::copy(dockflow, root.join("dockflow"))?;
    fs::copy(responder, root.join("dockflow-lab"))?;
    let vm = build::workspace_root().join("xtask/vm");
    fs::copy(vm.join(guest.init), root.join("init"))?;
    use std::os::unix::fs::PermissionsExt as _;
    for exe in ["init", "bin/busybox", "dockflow", "dockflow-lab"] {
        fs::set_permissions(root.join(exe), fs::Permissions::from_mode(0o755))?;
    }
    fs::copy(vm.join("rules.nft"), root.join("rules.nft"))?;
    fs::copy(vm.join("dockflow.sh"), root.join("dockflow.sh"))?;
    // Who root is, for the tools that ask.
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(root.join("etc/group"), "root:x:0:\n")?;
    let mut order = String::new();
    for module in kernel.modules_in_order(&guest.modules.concat())? {
        let name = module.file_name().unwrap().to_string_lossy().into_owned();
        fs::copy(&module, root.join("modules").join(&name))?;
        order.push_str(&name);
        order.push('\n');
    }
    fs::write(root.join("modules/order"), order)?;
    for tool in GUEST_TOOLS.iter().chain(guest.tools) {
        copy_with_libraries(Path::new(tool), &root)?;
    }
    for directory in guest.directories {
        let dest = root.join(directory.trim_start_matches('/'));
        fs::create_dir_all(dest.parent().unwrap())?;
        quiet(Command::new("cp").arg("-a").arg(directory).arg(&dest))?;
    }
    let cpio = dir.join(format!("initramfs-{}.cpio", guest.name));
    let list = output(Command::new("find").arg(".").current_dir(&root))?;
    let mut child = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&cpio)?)
        .spawn()
        .context("running cpio")?;
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), list.as_bytes())?;
    drop(child.stdin.take());
    if !child.wait()?.success() {
        bail!("cpio failed");
    }
    Ok(cpio)
}

/// Copies a dynamically linked tool and everything ldd says it loads, at the same paths.
fn copy_with_libraries(tool: &Path, root: &Path) -> Result<()> {
    let ldd = output(Command::new("ldd").arg(tool))?;
    let libraries = ldd.lines().filter_map(|l| {
        l.split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(PathBuf::from)
    });
    for file in std::iter::once(tool.to_path_buf()).chain(libraries) {
        let dest = root.join(file.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap())?;
        fs::copy(&file, &dest).with_context(|| format!("copying {}", file.display()))?;
    }
    Ok(())
}

fn boot_guest(guest: &Guest, vmlinuz: &Path, initramfs: &Path) -> Result<String> {
    let log = build::workspace_root().join(format!("target/vmtest/console-{}.log", guest.name));
    let _ = fs::remove_file(&log);
    let status = Command::new("timeout")
        .arg(guest.timeout.as_secs().to_string())
        .args(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp"])
        .arg(guest.cpus.to_string())
        .arg("-m")
        .arg(format!("{}M", guest.memory_mib))
        .args(["-nodefaults", "-display", "none"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(["-no-reboot", "-net", "none", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1 rdinit=/init"])
        .status()
        .context("running qemu-system-x86_64")?;
    let console = fs::read_to_string(&log).unwrap_or_default();
    if status.code() == Some(124) && !console.contains("VMTEST-DONE") {
        let last = last_lines(&console, 15);
        bail!(
            "the {} guest did not finish within {} s; its console ended with:\n{last}",
            guest.name,
            guest.timeout.as_secs()
        );
    }
    Ok(console)
}

/// The console's last `n` lines, for an error message.
fn last_lines(console: &str, n: usize) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn between<'a>(console: &'a str, begin: &str, end: &str) -> Vec<&'a str> {
    console
        .lines()
        .skip_while(|l| !l.contains(begin))
        .skip(1)
        .take_while(|l| !l.contains(end))
        .collect()
}

/// What a guest printed: its own progress lines (echoed here), dockflow's stderr and its JSON
/// lines; an error when the guest stopped before its end.
fn read_console(console: &str) -> Result<(Vec<&str>, Vec<Value>)> {
    if !console.contains("VMTEST-DONE") {
        let last = last_lines(console, 15);
        bail!("the guest stopped before running its scenarios; its console ended with:\n{last}");
    }
    for line in console.lines().filter(|l| l.starts_with("VMTEST ")) {
        eprintln!("vmtest: guest: {}", line.trim_start_matches("VMTEST "));
    }
    let stderr = between(console, "VMTEST-BEGIN-STDERR", "VMTEST-END-STDERR");
    let lines: Vec<Value> = between(console, "VMTEST-BEGIN-JSON", "VMTEST-END-JSON")
        .iter()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    Ok((stderr, lines))
}

/// Prints each scenario's verdict; an error if any failed.
fn report(guest: &Guest, scenarios: &[(&str, Result<(), String>)]) -> Result<()> {
    let mut failed = 0;
    for (name, result) in scenarios {
        match result {
            Ok(()) => eprintln!("vmtest: PASS {name}"),
            Err(why) => {
                failed += 1;
                eprintln!("vmtest: FAIL {name}: {why}");
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} scenarios failed (console: target/vmtest/console-{}.log)",
            scenarios.len(),
            guest.name
        );
    }
    Ok(())
}

/// The bridge guest's scenarios.
fn judge(console: &str) -> Result<()> {
    let (stderr, lines) = read_console(console)?;
    let packets = stream::packets(&lines);
    let kinds = stream::hop_kinds;
    let has = |p: &Value, k: &str| kinds(p).iter().any(|x| x == k);
    let first = |p: &Value, k: &str| kinds(p).iter().position(|x| x == k);
    let find = |src: &str, dport: Option<u64>, dst: Option<&str>| {
        packets.iter().copied().find(|p| {
            p["packet"]["src"] == src
                && dport.is_none_or(|d| p["packet"]["dport"] == d)
                && dst.is_none_or(|d| p["packet"]["dst"] == d)
        })
    };
    let external_request = find("10.199.0.2", Some(1812), None);
    let external_reply = find("10.0.0.2", None, Some("10.199.0.2"));
    let bridged_request = find("10.0.0.3", Some(1812), None);
    // The same exchange again after the bridge forgot every MAC.
    let flooded_request = packets
        .iter()
        .copied()
        .filter(|p| p["packet"]["src"] == "10.0.0.3" && p["packet"]["dport"] == 1812)
        .nth(1);
    let steps_of = |p: &Value| stream::explanation_steps(&lines, &p["connection"]);

    // Every point in `wanted` has an "attached" line in dockflow's startup.
    let all_attached = |wanted: &[&str]| -> Result<(), String> {
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|p| !stderr.iter().any(|l| l.contains(&format!("attached  {p}"))))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not attached: {missing:?}; dockflow said: {stderr:#?}"
            ))
        }
    };
    let scenarios: Vec<(&str, Result<(), String>)> = vec![
        (
            "kprobes attach on the bridge functions and nf_hook_slow (not the fallback)",
            all_attached(&[
                "kprobe br_handle_frame",
                "kprobe br_forward",
                "kprobe br_pass_frame_up",
                "kprobe br_dev_xmit",
                "kprobe nf_hook_slow",
            ]),
        ),
        (
            "tc (clsact, pre-tcx kernel), the tracepoints (within 6.1's stack limit) and the nftables trace attach",
            all_attached(&[
                "tc ingress on vctr",
                "tc egress on vctr",
                "tc ingress on br0",
                "tc egress on br0",
                "tracepoint skb:kfree_skb",
                "tracepoint net:netif_receive_skb",
                "tracepoint net:net_dev_queue",
                "nftables trace",
            ]),
        ),
        (
            "external request: routed (L3 forward, nft rules traced), into the bridge, forwarded to the port",
            match external_request {
                None => Err(format!("no request packet; packets: {}", packets.len())),
                Some(p) => {
                    // A --netns target has no published ports, so nft marks the request only once it
                    // is addressed to the namespace (after DNAT): its forward rules are traced.
                    let dnat_rule = p["rules"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|r| r["table"] == "filter" && r["hook"] == "forward");
                    let ok = has(p, "l3:into_bridge")
                        && has(p, "l2:to_port")
                        && has(p, "l2:bridge_forward")
                        && first(p, "l3:hook") < first(p, "l3:into_bridge")
                        && dnat_rule;
                    if ok {
                        Ok(())
                    } else {
                        Err(format!(
                            "{:?} (nft forward rules traced: {dnat_rule})",
                            kinds(p)
                        ))
                    }
                }
            },
        ),
        (
            "external reply: enters the port (bridge hooks), IP hook run from the bridge, passed up, routed out, DNAT undone",
            match external_reply {
                None => Err("no reply packet".into()),
                Some(p) => {
                    let order = [
                        first(p, "l2:from_port"),
                        first(p, "l2:passed_up"),
                        first(p, "l3:hook"),
                    ];
                    let unnat = p["hops"].as_array().into_iter().flatten().any(|h| {
                        h["rewrites"][0]["field"] == "source"
                            && h["rewrites"][0]["after"] == "10.199.0.1:1812"
                    });
                    let ok = order.iter().all(Option::is_some)
                        && order.windows(2).all(|w| w[0] < w[1])
                        && has(p, "l3_from_bridge:hook")
                        && has(p, "l2:hook")
                        && unnat;
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("{:?} (reverse NAT seen: {unnat})", kinds(p)))
                    }
                }
            },
        ),
        (
            "bridged request (container to container): forwarded at L2 only, bridge-family and from-bridge hooks",
            match bridged_request {
                None => Err("no bridged request packet".into()),
                Some(p) => {
                    // The explanation's typed outcome says so too, never "routed".
                    let outcomes: Vec<&Value> = lines
                        .iter()
                        .filter(|l| {
                            l["type"] == "explanation" && l["connection"] == p["connection"]
                        })
                        .flat_map(|l| l["steps"].as_array().into_iter().flatten())
                        .filter(|s| s["kind"] == "outcome")
                        .map(|s| &s["outcome"])
                        .collect();
                    let told =
                        !outcomes.is_empty() && outcomes.iter().all(|o| *o == "bridged_only");
                    let ok = has(p, "l2:from_port")
                        && has(p, "l2:bridge_forward")
                        && has(p, "l2:to_port")
                        && has(p, "l2:hook")
                        && has(p, "l3_from_bridge:hook")
                        && !has(p, "l2:passed_up")
                        && !has(p, "l3:into_bridge")
                        && !has(p, "l3:hook")
                        && told;
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("{:?} (explained outcomes: {outcomes:?})", kinds(p)))
                    }
                }
            },
        ),
        (
            "flooded first frame (unlearned MAC): one flood step, copies marked, the packet itself not dropped",
            match flooded_request {
                None => Err("no second bridged request".into()),
                Some(p) => {
                    let steps = steps_of(p);
                    let hops = p["hops"].as_array().cloned().unwrap_or_default();
                    let copies_marked = hops
                        .iter()
                        .filter(|h| h["kind"] == "dropped")
                        .all(|h| h["flood_copy"] == true);
                    let floods = steps.iter().filter(|s| s["kind"] == "flooded").count();
                    let request_steps: Vec<&Value> =
                        steps.iter().filter(|s| s["role"] == "request").collect();
                    let ok = floods == 1
                        && copies_marked
                        && !request_steps.iter().any(|s| s["kind"] == "dropped")
                        && request_steps
                            .iter()
                            .any(|s| s["kind"] == "outcome" && s["outcome"] == "bridged_only");
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("{:?}; steps: {steps:#?}", kinds(p)))
                    }
                }
            },
        ),
    ];
    report(&BRIDGE_GUEST, &scenarios)
}
