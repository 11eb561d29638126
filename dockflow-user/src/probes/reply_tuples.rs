//! The reply tuples the kernel learned for the target's NATed connections (see the kernel's
//! reply_tuples.rs): userspace forgets each one when conntrack no longer has its connection,
//! and turns the kernel's lookup off again when none is left.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use dockflow_common::{CtTuple, REPLY_TUPLES_MAP, SETTINGS_MAP, Settings};

use crate::kernel::conntrack::Conntrack;

pub struct ReplyTuples {
    learned: HashMap<MapData, CtTuple, u32>,
    /// None where ctnetlink is unavailable: the map's LRU order alone bounds it then.
    conntrack: Option<Conntrack>,
}

impl ReplyTuples {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let map = ebpf
            .take_map(REPLY_TUPLES_MAP)
            .context("no reply tuple map")?;
        Ok(Self {
            learned: HashMap::try_from(map)?,
            conntrack: Conntrack::open().ok(),
        })
    }

    /// Removes the tuples of connections that ended; clears the kernel's switch when none is
    /// left (and sets it again if the kernel learned one meanwhile).
    pub fn forget_ended(&mut self, ebpf: &mut Ebpf, settings: Settings) -> Result<()> {
        let Some(conntrack) = &self.conntrack else {
            return Ok(());
        };
        let learned: Vec<CtTuple> = self.learned.keys().filter_map(Result::ok).collect();
        if learned.is_empty() {
            return Ok(());
        }
        for tuple in &learned {
            if !conntrack.has_reply(tuple).unwrap_or(true) {
                let _ = self.learned.remove(tuple);
            }
        }
        if self.learned.keys().next().is_none() {
            let mut map: Array<_, Settings> =
                Array::try_from(ebpf.map_mut(SETTINGS_MAP).context("no settings map")?)?;
            map.set(0, settings, 0)?;
            if self.learned.keys().next().is_some() {
                let learned = Settings {
                    reply_tuples_learned: 1,
                    ..settings
                };
                map.set(0, learned, 0)?;
            }
        }
        Ok(())
    }
}
