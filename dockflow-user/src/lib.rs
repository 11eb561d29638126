//! dockflow: an eBPF packet-path observer for Docker networking.
//!
//! Data flows one way: kernel probes ([`probes`]) -> decoding ([`event`]) -> correlation,
//! classification and explanation ([`path`]) -> rendering ([`render`]). [`target`] resolves what
//! to watch and [`kernel`] what the running kernel looks like, before anything is attached.

pub mod decode;
pub mod drain;
pub mod follow;
pub mod kernel;
pub mod model;
pub mod netlink;
pub mod nftrace;
pub mod output;
pub mod path;
pub mod probes;
pub mod record;
pub mod render;
pub mod watch;
