//! The filter expression's verdicts, handed to the kernel (see the kernel's expression.rs):
//! once a connection's NAT bindings are fixed, the expression is evaluated on every form its
//! packets take, and the verdict stored under each, so that the programs drop the events of
//! its later packets themselves when it is left out.

use std::collections::HashSet;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
};
use dockflow_common::{
    AF_INET, AF_INET6, CtTuple, EXPRESSION_LEFT_OUT_MAP, EXPRESSION_VERDICTS_MAP, VERDICT_LEFT_OUT,
    VERDICT_MATCHES,
};

use super::address_key;
use crate::{
    filter::Filter,
    model::{Event, Tuple},
};

/// Connections remembered as written before the memory is cleared (they are written again
/// when next seen; the kernel's map is LRU and bounds itself).
const MAX_DECIDED: usize = 65536;

pub struct Verdicts {
    map: HashMap<MapData, CtTuple, u8>,
    left_out: PerCpuArray<MapData, u64>,
    filter: Filter,
    /// Connections already written, by both tuples (a reused tuple with other NAT differs).
    decided: HashSet<(Tuple, Tuple)>,
}

impl Verdicts {
    pub fn take(ebpf: &mut Ebpf, filter: Filter) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("no {name} map"))
        };
        Ok(Self {
            map: HashMap::try_from(take(EXPRESSION_VERDICTS_MAP)?)?,
            left_out: PerCpuArray::try_from(take(EXPRESSION_LEFT_OUT_MAP)?)?,
            filter,
            decided: HashSet::new(),
        })
    }

    /// Decides the connection of `event` for the kernel, the first time it is seen with its
    /// bindings fixed.
    pub fn learn(&mut self, event: &Event) -> Result<()> {
        let Some(ct) = &event.conntrack else {
            return Ok(());
        };
        let connection = (ct.original.clone(), ct.reply.clone());
        if self.decided.contains(&connection) {
            return Ok(());
        }
        let Some(verdicts) = self.filter.connection_verdicts(ct) else {
            return Ok(());
        };
        for verdict in verdicts {
            let value = if verdict.matches {
                VERDICT_MATCHES
            } else {
                VERDICT_LEFT_OUT
            };
            self.map
                .insert(kernel_key(&verdict.form), value, 0)
                .context("storing a filter verdict for the kernel")?;
        }
        if self.decided.len() >= MAX_DECIDED {
            self.decided.clear();
        }
        self.decided.insert(connection);
        Ok(())
    }

    /// Events the kernel dropped by these verdicts.
    pub fn left_out_in_kernel(&self) -> u64 {
        self.left_out
            .get(&0, 0)
            .map(|values| values.iter().sum())
            .unwrap_or(0)
    }
}

/// A form as the kernel keys it: the tuple a packet's headers spell, with its family.
fn kernel_key(form: &Tuple) -> CtTuple {
    CtTuple {
        src: address_key(&form.src),
        dst: address_key(&form.dst),
        sport: form.sport,
        dport: form.dport,
        l4_proto: form.protocol,
        family: if form.src.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        },
        _pad: [0; 2],
    }
}
