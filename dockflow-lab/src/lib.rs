//! The seed's lab: a user-defined Docker bridge `infranet` (device `docker1`) with the
//! `radius`, `syslog`, `dhcp` and `proxy` containers published on the host, and an "external
//! terminal" network namespace linked to the host by a veth pair; and a one-node swarm of its
//! own for the overlay and Swarm paths.

pub mod cluster;
pub mod lab;
pub mod ping;
pub mod radius;
pub mod responder;
pub mod shell;
pub mod stream;
pub mod swarm;
