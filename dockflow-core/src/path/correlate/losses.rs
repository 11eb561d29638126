//! When events were lost (the ring buffer overflowed, or the display skipped some): the packets
//! on their way then may miss hops, and say so.

use std::collections::VecDeque;

use super::SAME_PACKET_WINDOW_NS;

/// How long a gap in the events is remembered.
const GAP_MEMORY_NS: u64 = 10_000_000_000;

/// Time spans (kernel clock) in which events were lost, recent ones only.
#[derive(Default)]
pub(super) struct LossWindows {
    gaps: VecDeque<(u64, u64)>,
}

impl LossWindows {
    /// Events from `from_ns` to `to_ns` were lost.
    pub(super) fn mark(&mut self, from_ns: u64, to_ns: u64) {
        self.gaps
            .push_back((from_ns.min(to_ns), from_ns.max(to_ns)));
        // Packets live for well under a second; older gaps can no longer matter.
        let horizon = to_ns.saturating_sub(GAP_MEMORY_NS);
        while self.gaps.front().is_some_and(|(_, to)| *to < horizon) {
            self.gaps.pop_front();
        }
    }

    /// Whether a packet seen from `first` to `last` may have lost events: a gap lies within
    /// the time its hops could have been in (idle window on either side).
    pub(super) fn touch(&self, first: u64, last: u64) -> bool {
        let (from, to) = (
            first.saturating_sub(SAME_PACKET_WINDOW_NS),
            last.saturating_add(SAME_PACKET_WINDOW_NS),
        );
        self.gaps.iter().any(|(a, b)| *a <= to && *b >= from)
    }
}
