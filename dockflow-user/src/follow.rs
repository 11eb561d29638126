//! Keeping up with the host while tracing: a followed container that restarts gets a new veth
//! and maybe a new address, containers join and leave a followed network, and containers that
//! come and go change which container is behind each bridge port. None of it should end the
//! trace or leave names stale.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{
    model::topology::Topology,
    probes::Probes,
    watch::{self, Target, Watch},
};

/// Re-checks the host now and then: re-resolves what is watched (moving the probes when it
/// moved: a restarted container, one that joined or left a watched network) and refreshes
/// interface names and port owners when containers or links changed.
pub struct Follower {
    watch: Watch,
    current: Target,
    fingerprint: watch::TopologyFingerprint,
    last_check: Instant,
    stopped: bool,
}

impl Follower {
    const INTERVAL: Duration = Duration::from_secs(1);

    pub fn new(watch: Watch, current: Target) -> Self {
        Self {
            watch,
            current,
            fingerprint: watch::topology_fingerprint(),
            last_check: Instant::now(),
            stopped: false,
        }
    }

    /// What is watched, as last resolved.
    pub fn current(&self) -> &Target {
        &self.current
    }

    /// Checks at most once per interval; returns the host's topology when it changed.
    pub fn check(&mut self, probes: &mut Probes) -> Result<Option<Topology>> {
        if self.last_check.elapsed() < Self::INTERVAL {
            return Ok(None);
        }
        self.last_check = Instant::now();
        probes.forget_ended_connections()?;
        let moved = self.follow(probes)?;
        let fingerprint = watch::topology_fingerprint();
        if moved || fingerprint != self.fingerprint {
            self.fingerprint = fingerprint;
            return Ok(Some(watch::topology_of(&self.current)?));
        }
        Ok(None)
    }

    /// Re-resolves the watched containers; true when they moved (the probes were moved with
    /// them).
    fn follow(&mut self, probes: &mut Probes) -> Result<bool> {
        if !self.watch.follows_docker() {
            return Ok(false);
        }
        let new = match self.watch.resolve() {
            Ok(new) => new,
            Err(e) => {
                if !self.stopped {
                    eprintln!("dockflow: {e:#}; waiting for it to come back");
                    self.stopped = true;
                }
                return Ok(false);
            }
        };
        self.stopped = false;
        if new.interfaces == self.current.interfaces
            && new.addresses == self.current.addresses
            && new.published == self.current.published
        {
            return Ok(false);
        }
        for a in probes.retarget(&self.current, &new)? {
            match &a.result {
                Ok(()) => eprintln!("dockflow: {} moved: attached {}", new.label, a.point),
                Err(e) => eprintln!("dockflow: {} moved: refused {}: {e}", new.label, a.point),
            }
        }
        self.current = new;
        Ok(true)
    }
}
