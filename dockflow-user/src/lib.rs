//! dockflow: an eBPF packet-path observer for Docker networking.
//!
//! Data flows one way: kernel probes ([`probes`], [`drain`]) -> decoding ([`decode`]) ->
//! correlation, classification and explanation ([`path`]) -> rendering ([`render`]) or
//! recording ([`record`]). [`watch`] resolves what to watch and [`kernel`] what the running
//! kernel looks like, before anything is attached; [`follow`] keeps both current.
//!
//! [`model`] is the plain data all of them share (events, packets, the host's topology). It,
//! [`decode`], [`path`], [`render`], [`output`] and [`record`] do no I/O beyond the files and
//! streams they are handed: replay runs on them alone, without root or a kernel.

pub mod decode;
pub mod drain;
pub mod filter;
pub mod follow;
pub mod kernel;
pub mod model;
pub mod netlink;
pub mod nftrace;
pub mod output;
pub mod path;
pub mod pcapng;
pub mod probes;
pub mod record;
pub mod render;
pub mod watch;
