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

/// Which packets nftables traces (--trace-rules). Tracing costs the kernel a netlink message
/// per rule evaluated per packet marked, for every packet of a busy flow traced whole; its
/// first packets tell the rules that decide it.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum TraceRules {
    /// Every packet of the target: each packet's own rules, at the full cost.
    All,
    /// Per connection and direction, the first packet, each new TCP flag combination (SYN,
    /// FIN, RST), and one sample a second; packets of other protocols always. A later packet
    /// says whose rules it shares ("rules as packet N").
    #[default]
    First,
    /// None: no nftables table, no rule names.
    None,
}
pub use trace::{RawTrace, TraceBatch, TraceSocket, Tracer};
