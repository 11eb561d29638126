//! nftables' own verdicts, as a collector like the others: a table of ours marks the target's
//! packets for tracing (see [`crate::nftrace`]), a thread reads the kernel's trace messages and
//! names each rule, and the event loop takes the named evaluations from a queue.

use aya::Ebpf;

use super::{Attached, Collector, Family, ProbeError};
use crate::{
    nftrace::{TraceBatch, TraceRules, TraceSocket, TraceTable, Tracer},
    watch::Target,
};

/// Named rule evaluations, in batches, from the trace reader's thread.
pub type RuleTraces = tokio::sync::mpsc::Receiver<TraceBatch>;

#[derive(Default)]
pub struct Nftables {
    table: Option<TraceTable>,
    traces: Option<RuleTraces>,
    /// The IP protocols to mark; None: all.
    protocols: Option<Vec<u8>>,
    mode: TraceRules,
}

impl Nftables {
    /// Marks only packets of `protocols` (those a filter expression may match), or all, and
    /// of those every packet or each flow's first ones (`mode`).
    pub fn marking(protocols: Option<Vec<u8>>, mode: TraceRules) -> Self {
        Self {
            protocols,
            mode,
            ..Self::default()
        }
    }

    fn point(table: &str) -> String {
        format!("nftables trace (table {table} in inet and bridge, rule verdicts)")
    }
}

impl Collector for Nftables {
    fn attach(&mut self, _ebpf: &mut Ebpf, target: &Target) -> Attached {
        let mut attached = Attached::default();
        if !target.filtered() {
            attached.point(
                Family::Nftables,
                "nftables trace",
                Err(ProbeError::Skipped(
                    "the target has no addresses or ports to mark".into(),
                )),
            );
            return attached;
        }
        // The reader first: a table marking packets nobody reads would only cost the host.
        let reader = TraceSocket::open().and_then(|socket| Ok(socket.spawn_reader(Tracer::new()?)));
        let started = reader.and_then(|traces| {
            let table = TraceTable::create(target, self.protocols.clone(), self.mode)?;
            Ok((traces, table))
        });
        match started {
            Ok((traces, (table, removed))) => {
                if !removed.is_empty() {
                    attached.notes.push(format!(
                        "removed nftables tables left by earlier runs: {}",
                        removed.join(", ")
                    ));
                }
                attached.point(Family::Nftables, Self::point(table.name()), Ok(()));
                self.table = Some(table);
                self.traces = Some(traces);
            }
            Err(e) => attached.point(
                Family::Nftables,
                "nftables trace",
                Err(ProbeError::Refused(format!("{e:#}"))),
            ),
        }
        attached
    }

    /// The marking rules follow the target's new addresses (one atomic nft transaction).
    fn retarget(&mut self, _ebpf: &mut Ebpf, old: &Target, new: &Target) -> Attached {
        let mut attached = Attached::default();
        let Some(table) = &self.table else {
            return attached;
        };
        if old.addresses == new.addresses && old.published == new.published {
            return attached;
        }
        let result = table
            .update(new)
            .map_err(|e| ProbeError::Refused(format!("{e:#}")));
        attached.point(Family::Nftables, Self::point(table.name()), result);
        attached
    }

    fn detach(&mut self) {
        self.table = None;
    }

    fn rule_traces(&mut self) -> Option<RuleTraces> {
        self.traces.take()
    }
}
