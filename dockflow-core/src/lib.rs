//! dockflow's pure core: everything between a kernel event's bytes and what a user reads.
//!
//! Data flows one way: decoding ([`decode`]) -> correlation, classification and explanation
//! ([`path`]) -> rendering ([`render`], [`pcapng`]) or recording ([`record`]); [`output`]
//! runs that chain for one stream of events, after the user's filter ([`filter`]). [`model`]
//! is the plain data all of them share (events, packets, the host's topology).
//!
//! Nothing here loads programs, reads the kernel or talks to Docker: that is the `dockflow`
//! crate's job (probes, target resolution). These modules do no I/O beyond the files and
//! streams they are handed, so replay runs on them alone, and `cargo test -p dockflow-core`
//! needs neither root, nor a kernel, nor the eBPF toolchain.

pub mod decode;
pub mod filter;
pub mod merge;
pub mod model;
pub mod output;
pub mod path;
pub mod pcapng;
pub mod record;
pub mod render;
pub mod write_behind;
