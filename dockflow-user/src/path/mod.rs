//! From events to paths: [`correlate`] groups events into packets and connections,
//! [`classify`] says which layer handled each hop and what happened there, [`explain`] puts a
//! connection's request and reply into words. [`topology`] is what they know about the host.
//! Nothing here touches the kernel, so replay uses it unchanged.

pub mod classify;
pub mod correlate;
pub mod explain;
pub mod rules;
pub mod topology;

#[cfg(test)]
mod tests;
