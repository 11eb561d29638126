//! dockflow: an eBPF packet-path observer for Docker networking.
//!
//! Data flows one way: kernel probes ([`probes`], [`drain`]) -> decoding ([`decode`]) ->
//! correlation, classification and explanation ([`path`]) -> rendering ([`render`]) or
//! recording ([`record`]); recordings of several nodes are joined by [`merge`]. [`watch`] resolves what to watch and [`kernel`] what the running
//! kernel looks like, before anything is attached; [`follow`] keeps both current; [`nftrace`]
//! adds nftables' own view of the target's packets.
//!
//! Everything from decoding on is the `dockflow-core` crate, re-exported here under the same
//! names: it has no aya and no kernel access, so replay and its tests run on it alone.

pub use dockflow_core::{
    decode, filter, merge, model, output, path, pcapng, record, render, write_behind,
};

pub mod drain;
pub mod follow;
pub mod kernel;
pub mod netlink;
pub mod nftrace;
pub mod probes;
pub mod watch;
