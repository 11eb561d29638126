//! The Docker engines the tests run on, one at a time on the one socket:
//! - `debian`: Debian 12's docker.io (20.10), started with the seed's `--userland-proxy=false`;
//! - `current`: the engine Debian's development suite serves now (28.5 at this writing), with
//!   its own defaults (userland proxy on, ip6tables on, raw-table drops), installed into a
//!   private prefix under dockflow's cache without touching the host's apt state or packages.
//!
//! Setup starts a daemon only when none answers and records the pid of the one it started;
//! switching engines stops only a daemon so recorded, by that pid.

use std::{
    fs,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::setup::{cache_dir, docker_running, is_root, output, quiet};

/// The development suite whose docker.io is the second engine.
const SUITE: &str = "sid";
/// Its packages the engine needs (the host's runc serves: the packaged one wants a newer libc).
const PACKAGES: &[&str] = &["docker.io", "containerd"];
/// The pid and engine of the daemon setup started.
const STARTED: &str = "/run/dockflow-dockerd";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Debian 12's docker.io (20.10) with the seed's settings (userland proxy off).
    Debian,
    /// The current engine from Debian's development suite, with its defaults.
    Current,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Debian => "debian",
            Engine::Current => "current",
        }
    }

    fn log(self) -> String {
        format!("/var/log/dockflow-dockerd-{}.log", self.name())
    }

    /// How setup starts this engine.
    fn command(self) -> Result<Command> {
        Ok(match self {
            Engine::Debian => {
                let mut cmd = Command::new("dockerd");
                cmd.arg("--userland-proxy=false");
                cmd
            }
            Engine::Current => {
                let prefix = current_prefix();
                let dockerd = prefix.join("usr/sbin/dockerd");
                if !dockerd.exists() {
                    bail!("{} is missing: run `cargo xtask setup`", dockerd.display());
                }
                let path = format!(
                    "{}:{}:{}",
                    prefix.join("usr/bin").display(),
                    prefix.join("usr/sbin").display(),
                    std::env::var("PATH").unwrap_or_default()
                );
                let mut cmd = Command::new(dockerd);
                cmd.env("PATH", path)
                    .arg("--data-root")
                    .arg(cache_dir().join("engine-current/data"))
                    .args([
                        "--exec-root",
                        "/run/dockflow-engine-current",
                        "--pidfile",
                        "/run/dockflow-engine-current.pid",
                    ])
                    // Its own proxy: the proxy's protocol with dockerd changed in 28.
                    .arg("--userland-proxy-path")
                    .arg(prefix.join("usr/sbin/docker-proxy"));
                cmd
            }
        })
    }
}

/// Where the current engine's packages are extracted.
fn current_prefix() -> PathBuf {
    cache_dir().join("engine-current/prefix")
}

/// Setup step: the current engine's packages, fetched and extracted once.
pub fn install_current() -> Result<()> {
    let prefix = current_prefix();
    if prefix.join("usr/sbin/dockerd").exists() {
        return Ok(());
    }
    let work = cache_dir().join("engine-current/apt");
    let lists = work.join("lists");
    let debs = work.join("debs");
    for dir in [&lists.join("partial"), &work.join("cache"), &debs] {
        fs::create_dir_all(dir)?;
    }
    let sources = work.join("sources.list");
    fs::write(&sources, format!("deb {} {SUITE} main\n", debian_mirror()?))?;
    // Its own sources, lists and cache: the host's apt state is not touched.
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.arg("-qq")
            .arg(format!("-oDir::Etc::sourcelist={}", sources.display()))
            .arg("-oDir::Etc::sourceparts=-")
            .arg(format!("-oDir::State::Lists={}", lists.display()))
            .arg(format!("-oDir::Cache={}", work.join("cache").display()))
            .args(args)
            .current_dir(&debs);
        cmd
    };
    eprintln!(
        "setup: fetching {} from Debian's {SUITE}",
        PACKAGES.join(" ")
    );
    quiet(&mut apt(&["update"]))?;
    quiet(&mut apt(&[&["download"], PACKAGES].concat()))?;
    let staging = work.join("prefix.partial");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    for deb in fs::read_dir(&debs)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            quiet(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        }
    }
    let _ = fs::remove_dir_all(&prefix);
    fs::rename(&staging, &prefix)?;
    fs::remove_dir_all(&debs)?;
    eprintln!(
        "setup: {} in {}",
        version_of(Engine::Current)?,
        prefix.display()
    );
    Ok(())
}

/// The Debian mirror the host's apt already uses (deb822 `URIs:` or one-line `deb` entries).
fn debian_mirror() -> Result<String> {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for entry in dir.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|e| e == "sources" || e == "list")
            {
                texts.push(fs::read_to_string(path).unwrap_or_default());
            }
        }
    }
    mirror_in(&texts).context("the host's apt sources name no Debian mirror")
}

/// The first URI of a Debian archive (not its security archive) in apt source texts.
fn mirror_in(texts: &[String]) -> Option<String> {
    texts.iter().flat_map(|t| t.lines()).find_map(|line| {
        let line = line.trim();
        let uri = line
            .strip_prefix("URIs:")
            .map(|u| u.split_whitespace().next())
            .or_else(|| {
                line.strip_prefix("deb ")
                    .map(|rest| rest.split_whitespace().find(|w| w.contains("://")))
            })??;
        (uri.trim_end_matches('/').ends_with("/debian")).then(|| uri.to_string())
    })
}

/// "Docker version 28.5.2+dfsg4, build ..." of the engine's dockerd.
pub fn version_of(engine: Engine) -> Result<String> {
    let cmd = engine.command()?;
    let text = output(Command::new(cmd.get_program()).arg("--version"))?;
    Ok(text.trim().to_string())
}

/// Starts `engine` when no daemon answers, and records its pid (setup's dockerd step).
pub fn ensure_running(engine: Engine) -> Result<()> {
    if docker_running() {
        return Ok(());
    }
    start(engine)
}

fn start(engine: Engine) -> Result<()> {
    if !is_root() {
        bail!("no Docker daemon answers and starting one needs root");
    }
    if engine == Engine::Current {
        save_firewall()?;
    }
    let log_path = engine.log();
    let log = fs::File::create(&log_path).with_context(|| format!("creating {log_path}"))?;
    let mut cmd = engine.command()?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Its own session, so it survives this process and the terminal's signals.
    // SAFETY: setsid is async-signal-safe, the one call allowed between fork and exec here.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting the {} engine", engine.name()))?;
    fs::write(STARTED, format!("{} {}\n", child.id(), engine.name()))?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if Path::new(DOCKER_SOCKET).exists() && docker_running() {
            eprintln!(
                "setup: started the {} Docker engine (pid {}, log {log_path})",
                engine.name(),
                child.id()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let tail = fs::read_to_string(&log_path).unwrap_or_default();
    let last = tail.lines().last().unwrap_or("no output");
    bail!("dockerd did not answer within 60 s: {last}")
}

/// The daemon setup started and recorded, if it still runs: (pid, engine name).
fn recorded() -> Option<(i32, String)> {
    let text = fs::read_to_string(STARTED).ok()?;
    let mut words = text.split_whitespace();
    let pid: i32 = words.next()?.parse().ok()?;
    let engine = words.next()?.to_string();
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "dockerd").then_some((pid, engine))
}

/// Stops the daemon setup started (by its recorded pid) and waits until it is gone.
fn stop_recorded() -> Result<()> {
    let Some((pid, engine)) = recorded() else {
        if docker_running() {
            bail!(
                "a Docker daemon that dockflow's setup did not start answers on {DOCKER_SOCKET}; \
                 stop it to run the tests on another engine"
            );
        }
        return Ok(());
    };
    // The lab's networks would outlive their engine as bare bridges the other engine does not
    // know (and a later lab would trip over): it goes first.
    dockflow_lab::lab::down().context("taking the lab down before switching engines")?;
    eprintln!("engine: stopping the {engine} Docker engine (pid {pid})");
    // SAFETY: a plain syscall on the pid setup recorded and checked to be a dockerd.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let started = Instant::now();
    // When this process started it, it is our child: reap it, or it lingers as a zombie.
    // SAFETY: waitpid with a null status pointer writes nothing.
    while unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) } == 0
        || Path::new(&format!("/proc/{pid}")).exists()
    {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("dockerd (pid {pid}) did not stop within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = fs::remove_file(STARTED);
    if engine == Engine::Current.name() {
        restore_firewall()?;
    }
    Ok(())
}

/// The engine running now, as far as setup knows (None: one it did not start).
pub fn running() -> Option<Engine> {
    match recorded()?.1.as_str() {
        "debian" => Some(Engine::Debian),
        "current" => Some(Engine::Current),
        _ => None,
    }
}

/// Leaves `engine` answering on the socket (`cargo xtask engine NAME`).
pub fn switch(engine: Engine) -> Result<()> {
    if running() == Some(engine) && docker_running() {
        return Ok(());
    }
    stop_recorded()?;
    start(engine)
}

/// Where the host's iptables state is kept while the current engine runs.
const FIREWALL_BEFORE: &str = "/run/dockflow-firewall-before-current";
/// The tables Docker's engines write, in both IP families.
const DOCKER_TABLES: [&str; 4] = ["filter", "nat", "raw", "mangle"];

/// Saves the host's iptables rules (both families) before the current engine starts: it turns
/// ip6tables on and leaves chains, rules and an IPv6 FORWARD policy of drop behind when it
/// stops, which Debian's engine (ip6tables off) never clears.
fn save_firewall() -> Result<()> {
    for (save, family) in [("iptables-save", "v4"), ("ip6tables-save", "v6")] {
        let path = format!("{FIREWALL_BEFORE}.{family}");
        // A run that never restored it kept the state from before: that one stays.
        if Path::new(&path).exists() {
            continue;
        }
        let rules = output(&mut Command::new(save))?;
        fs::write(path, rules)?;
    }
    Ok(())
}

/// Puts back what [`save_firewall`] saved, once the current engine has stopped.
fn restore_firewall() -> Result<()> {
    for (restore, family, nft_family) in [
        ("iptables-restore", "v4", "ip"),
        ("ip6tables-restore", "v6", "ip6"),
    ] {
        let path = format!("{FIREWALL_BEFORE}.{family}");
        let Ok(rules) = fs::read_to_string(&path) else {
            continue;
        };
        for table in DOCKER_TABLES {
            let _ = Command::new("nft")
                .args(["delete", "table", nft_family, table])
                .stderr(Stdio::null())
                .status();
        }
        let mut child = Command::new(restore)
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {restore}"))?;
        std::io::Write::write_all(&mut child.stdin.take().expect("piped"), rules.as_bytes())?;
        if !child.wait()?.success() {
            bail!("{restore} could not put back the rules saved in {path}");
        }
        fs::remove_file(&path)?;
    }
    Ok(())
}

/// Runs `work` with `engine` answering on the socket, then brings back the engine that ran
/// before (also when `work` fails).
pub fn with<T>(engine: Engine, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let before = running();
    if before == Some(engine) && docker_running() {
        return work();
    }
    stop_recorded()?;
    start(engine)?;
    let result = work();
    let back = stop_recorded().and_then(|()| start(before.unwrap_or(Engine::Debian)));
    let value = result?;
    back?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_debian_mirror_in_either_format() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n".to_string();
        assert_eq!(
            mirror_in(&[String::new(), deb822]).as_deref(),
            Some("http://mirror.example/debian")
        );
        let one_line =
            "# a comment\ndeb [arch=amd64] http://mirror.example/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(&[one_line.to_string()]).as_deref(),
            Some("http://mirror.example/debian/")
        );
        assert_eq!(
            mirror_in(&["deb http://other.example/ubuntu jammy main".into()]),
            None
        );
    }
}
