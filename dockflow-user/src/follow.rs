//! Keeping up with the host while tracing: a followed container that restarts gets a new veth
//! and maybe a new address, and containers that come and go change which container is behind
//! each bridge port. Neither should end the trace or leave names stale.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::{
    model::topology::Topology,
    probes::Probes,
    watch::{self, Target},
};

/// Re-checks the host now and then: re-resolves a followed container (moving the probes when it
/// moved) and refreshes interface names and port owners when containers or links changed.
pub struct Follower {
    /// The container followed by name, if the target is one.
    name: Option<String>,
    current: Target,
    fingerprint: (Vec<String>, Vec<u32>),
    last_check: Instant,
    stopped: bool,
}

impl Follower {
    const INTERVAL: Duration = Duration::from_secs(1);

    pub fn new(name: Option<&str>, current: Target) -> Self {
        Self {
            name: name.map(str::to_string),
            current,
            fingerprint: watch::topology_fingerprint(),
            last_check: Instant::now(),
            stopped: false,
        }
    }

    /// Checks at most once per interval; returns the host's topology when it changed.
    pub fn check(&mut self, probes: &mut Probes) -> Result<Option<Topology>> {
        if self.last_check.elapsed() < Self::INTERVAL {
            return Ok(None);
        }
        self.last_check = Instant::now();
        probes.forget_ended_connections()?;
        let moved = self.follow_container(probes)?;
        let fingerprint = watch::topology_fingerprint();
        if moved || fingerprint != self.fingerprint {
            self.fingerprint = fingerprint;
            return Ok(Some(watch::topology_of(&self.current)?));
        }
        Ok(None)
    }

    /// Re-resolves the followed container; true when it moved (the probes were moved with it).
    fn follow_container(&mut self, probes: &mut Probes) -> Result<bool> {
        let Some(name) = &self.name else {
            return Ok(false);
        };
        let new = match watch::resolve_container(name) {
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
        if new.interfaces == self.current.interfaces && new.addresses == self.current.addresses {
            return Ok(false);
        }
        for a in probes.retarget(&self.current, &new)? {
            match &a.result {
                Ok(()) => eprintln!("dockflow: {} is back: attached {}", new.label, a.point),
                Err(e) => eprintln!("dockflow: {} is back: refused {}: {e}", new.label, a.point),
            }
        }
        self.current = new;
        Ok(true)
    }
}
