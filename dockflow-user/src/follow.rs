//! Following a container across restarts: a restarted container gets a new veth and maybe a
//! new address, and the trace should not end there.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    output::Output,
    probes::Probes,
    target::{self, Target},
};

/// Re-resolves a traced container now and then, so a restart (new veth, maybe a new address)
/// does not end the trace.
pub struct Follower {
    name: String,
    current: Target,
    last_check: Instant,
    stopped: bool,
}

impl Follower {
    const INTERVAL: Duration = Duration::from_secs(1);

    pub fn new(name: &str, current: Target) -> Self {
        Self {
            name: name.to_string(),
            current,
            last_check: Instant::now(),
            stopped: false,
        }
    }

    /// Re-resolves at most once per interval; moves the probes when the container moved.
    pub fn check(&mut self, probes: &mut Probes, output: &mut Output<impl Write>) -> Result<()> {
        if self.last_check.elapsed() < Self::INTERVAL {
            return Ok(());
        }
        self.last_check = Instant::now();
        let new = match target::resolve_container(&self.name) {
            Ok(new) => new,
            Err(e) => {
                if !self.stopped {
                    eprintln!("dockflow: {e:#}; waiting for it to come back");
                    self.stopped = true;
                }
                return Ok(());
            }
        };
        self.stopped = false;
        if new.interfaces == self.current.interfaces && new.addresses == self.current.addresses {
            return Ok(());
        }
        for a in probes.retarget(&self.current, &new)? {
            match &a.error {
                None => eprintln!("dockflow: {} is back: attached {}", new.label, a.point),
                Some(e) => eprintln!("dockflow: {} is back: refused {}: {e}", new.label, a.point),
            }
        }
        output.set_topology(target::topology_of(&new)?);
        self.current = new;
        Ok(())
    }
}
