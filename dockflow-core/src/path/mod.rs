//! From events to paths: [`correlate`] groups events into packets and connections, each a
//! [`hop::PacketPath`],
//! [`classify`] says which layer handled each hop and what happened there, [`explain`] puts a
//! connection's request and reply into words, [`proxy`] links the two connections of an
//! exchange through dockerd's userland proxy. What they know about the host is the
//! [`crate::model::topology`]. Nothing here does I/O, so replay uses it unchanged.

pub mod classify;
pub mod correlate;
pub mod docker;
pub mod explain;
pub mod hop;
pub mod proxy;
pub mod rules;
pub mod summary;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod tests_support {
    //! The seed's exchange as events and as correlated paths, for other modules' tests.
    pub use super::tests::{seed_events, seed_paths};
}
