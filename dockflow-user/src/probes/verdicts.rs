//! The filter expression's verdicts, handed to the kernel (see the kernel's expression.rs):
//! once a connection's NAT bindings are fixed, the expression is evaluated on every form its
//! packets take, and the verdict stored under each, so that the programs drop the events of
//! its later packets themselves when it is left out.

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
    filter::{FORMS_PER_DIRECTION, Filter},
    model::{Event, Tuple},
};

/// Forms remembered before the memory (and that of evaluated connections) is cleared: they
/// are written again when next seen; the kernel's map is LRU and bounds itself.
const MAX_KNOWN: usize = 65536;

pub struct Verdicts {
    map: HashMap<MapData, CtTuple, u8>,
    left_out: PerCpuArray<MapData, u64>,
    filter: Filter,
    /// What each form was last written as.
    known: std::collections::HashMap<Tuple, bool>,
    /// Bumped whenever `known` changes: a connection's verdicts depend on nothing else.
    generation: u64,
    /// Each connection (both tuples) with the generation it was last evaluated at, so that
    /// the events of a busy connection are not evaluated again while nothing changed.
    evaluated: std::collections::HashMap<(Tuple, Tuple), u64>,
    /// A write failed: said once, then no more are tried.
    failed: bool,
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
            known: std::collections::HashMap::new(),
            generation: 0,
            evaluated: std::collections::HashMap::new(),
            failed: false,
        })
    }

    /// Decides the connection of `event` for the kernel once its bindings are fixed.
    ///
    /// A packet that crosses network namespaces has a conntrack entry in each where conntrack
    /// runs (a container's, for Docker's DNS rules), and each sees only its own NAT: the
    /// container's entry of a DNATed request knows nothing of the published port. So a
    /// direction whose forms another entry already found matching matches too, and a match
    /// overwrites an earlier "left out" under the same form.
    pub fn learn(&mut self, event: &Event) {
        if self.failed {
            return;
        }
        let Some(ct) = &event.conntrack else {
            return;
        };
        let connection = (ct.original.clone(), ct.reply.clone());
        if self.evaluated.get(&connection) == Some(&self.generation) {
            return;
        }
        let Some(verdicts) = self.filter.connection_verdicts(ct) else {
            return;
        };
        let before = self.generation;
        for direction in verdicts.chunks(FORMS_PER_DIRECTION) {
            let matches = direction
                .iter()
                .any(|v| v.matches || self.known.get(&v.form) == Some(&true));
            for verdict in direction {
                if self.known.get(&verdict.form) == Some(&matches) {
                    continue;
                }
                let value = if matches {
                    VERDICT_MATCHES
                } else {
                    VERDICT_LEFT_OUT
                };
                if let Err(e) = self.map.insert(kernel_key(&verdict.form), value, 0) {
                    // Only a saving is lost: the kernel keeps what it has no verdict for.
                    eprintln!(
                        "dockflow: storing a filter verdict for the kernel failed ({e}); the filter now works in userspace only"
                    );
                    self.failed = true;
                    return;
                }
                if self.known.len() >= MAX_KNOWN {
                    self.known.clear();
                    self.evaluated.clear();
                }
                self.known.insert(verdict.form.clone(), matches);
                self.generation += 1;
            }
        }
        // Settled only when this evaluation wrote nothing (its own writes could change it).
        if self.generation == before {
            if self.evaluated.len() >= MAX_KNOWN {
                self.evaluated.clear();
            }
            self.evaluated.insert(connection, self.generation);
        }
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
        l4_proto: form.protocol.0,
        family: if form.src.is_ipv4() {
            AF_INET
        } else {
            AF_INET6
        },
        _pad: [0; 2],
    }
}
