//! Keeping up with the host while tracing: a followed container that restarts gets a new veth
//! and maybe a new address, and containers that come and go change which container is behind
//! each bridge port. Neither should end the trace or leave names stale.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    output::Output,
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

    /// Checks at most once per interval.
    pub fn check(&mut self, probes: &mut Probes, output: &mut Output<impl Write>) -> Result<()> {
        if self.last_check.elapsed() < Self::INTERVAL {
            return Ok(());
        }
        self.last_check = Instant::now();
        probes.forget_ended_connections()?;
        let moved = self.follow_container(probes)?;
        let fingerprint = watch::topology_fingerprint();
        if moved || fingerprint != self.fingerprint {
            self.fingerprint = fingerprint;
            output.set_topology(watch::topology_of(&self.current)?);
        }
        Ok(())
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
            match &a.error {
                None => eprintln!("dockflow: {} is back: attached {}", new.label, a.point),
                Some(e) => eprintln!("dockflow: {} is back: refused {}: {e}", new.label, a.point),
            }
        }
        self.current = new;
        Ok(true)
    }
}
