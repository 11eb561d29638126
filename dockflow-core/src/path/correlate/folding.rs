//! --per-connection in the paths: the kernel holds a busy connection's later packets back, but
//! the few hops it emitted before it could tell reach userspace, and are folded here.

use rustc_hash::FxHashMap as HashMap;

use super::super::hop::PacketPath;

/// Packets shown per connection, while --per-connection is in force.
pub(super) struct Folding {
    limit: Option<u32>,
    shown: HashMap<u64, u32>,
    /// Fragments of packets past the limit that were not shown.
    pub(super) folded: u64,
}

impl Folding {
    pub(super) fn new(limit: Option<u32>) -> Self {
        Self {
            limit,
            shown: HashMap::default(),
            folded: 0,
        }
    }

    /// Whether `path` is shown.
    pub(super) fn keep(&mut self, path: &PacketPath) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        // Known from the nftables trace alone: the kernel held its events back (nftables
        // samples a flow once a second too, not in step with the kernel's sample).
        if path.hops.is_empty() {
            self.folded += 1;
            return false;
        }
        let Some(connection) = path.connection else {
            return true;
        };
        let count = self.shown.entry(connection).or_default();
        *count += 1;
        // The kernel's samples past the limit are shown; so are fragments before it.
        let keep = *count <= limit || path.sample;
        self.folded += u64::from(!keep);
        keep
    }

    /// A connection the correlator forgot: its count goes too.
    pub(super) fn forget(&mut self, connection: u64) {
        self.shown.remove(&connection);
    }
}
