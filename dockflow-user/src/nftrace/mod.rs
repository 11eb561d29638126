//! nftables' own view of a packet: which table, chain and rule saw it, and with what verdict.
//!
//! dockflow adds a table of its own (`dockflow_trace_<pid>`, in the inet and bridge families)
//! whose only rules set `meta nftrace` on the target's packets, listens to the kernel's trace
//! messages (NFNLGRP_NFTRACE, what `nft monitor trace` shows), and names each rule by its text
//! from the live ruleset. The table is removed at exit, and a start removes those killed runs
//! left behind.

mod headers;
pub mod ruleset;
mod table;
mod trace;

pub use table::TraceTable;

pub use crate::model::TraceRules;
pub use trace::{RawTrace, TraceBatch, TraceSocket, Tracer};
