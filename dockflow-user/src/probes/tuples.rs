//! The connection tuples the kernel stores (see the kernel's reply_tuples.rs and
//! per_connection.rs): userspace forgets each one when conntrack no longer has its connection,
//! and turns the kernel's lookups in a map off again when none is left.

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use dockflow_common::{
    CtTuple, HIDDEN_TUPLES_MAP, REPLY_TUPLES_MAP, TUPLE_FLAG_HIDDEN, TUPLE_FLAG_REPLY,
    TUPLE_FLAGS_MAP,
};

use crate::kernel::conntrack::Conntrack;

/// Whether conntrack has a connection with `key` as one of its tuples, either way round (the
/// kernel stores each direction and its reverse). Unsure (an error) counts as yes.
fn connection_exists(conntrack: &Conntrack, key: &CtTuple) -> bool {
    let mut reverse = *key;
    reverse.invert();
    [
        (key, false),
        (key, true),
        (&reverse, false),
        (&reverse, true),
    ]
    .into_iter()
    .any(|(tuple, reply)| conntrack.has_connection(tuple, reply).unwrap_or(true))
}

pub struct TupleMaps {
    flags: Array<MapData, u32>,
    /// Each map with its switch in `flags`.
    maps: Vec<(u32, HashMap<MapData, CtTuple, u64>)>,
    /// None where ctnetlink is unavailable: the maps' LRU order alone bounds them then.
    conntrack: Option<Conntrack>,
}

impl TupleMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("no {name} map"))
        };
        Ok(Self {
            flags: Array::try_from(take(TUPLE_FLAGS_MAP)?)?,
            maps: vec![
                (
                    TUPLE_FLAG_REPLY,
                    HashMap::try_from(take(REPLY_TUPLES_MAP)?)?,
                ),
                (
                    TUPLE_FLAG_HIDDEN,
                    HashMap::try_from(take(HIDDEN_TUPLES_MAP)?)?,
                ),
            ],
            conntrack: Conntrack::open().ok(),
        })
    }

    /// Removes the tuples of connections that ended; clears a map's switch when it is empty
    /// (and sets it again if the kernel stored a tuple meanwhile).
    pub fn forget_ended(&mut self) -> Result<()> {
        let Some(conntrack) = &self.conntrack else {
            return Ok(());
        };
        for (flag, map) in &mut self.maps {
            let stored: Vec<(CtTuple, u64)> = map.iter().filter_map(Result::ok).collect();
            if stored.is_empty() {
                continue;
            }
            for (key, _) in &stored {
                if !connection_exists(conntrack, key) {
                    let _ = map.remove(key);
                }
            }
            if map.keys().next().is_none() {
                self.flags.set(*flag, 0, 0)?;
                if map.keys().next().is_some() {
                    self.flags.set(*flag, 1, 0)?;
                }
            }
        }
        Ok(())
    }
}
