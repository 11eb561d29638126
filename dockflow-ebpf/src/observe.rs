//! The one path every skb probe shares: the packet headers first, which with the conntrack
//! entry decide whether the packet is the target's (filter, expression) and whether it is shown
//! (--per-connection); then, for the packets shown only, the identity, conntrack entry, device
//! and netns, read straight into the event in the ring.

use core::mem::MaybeUninit;

use dockflow_common::{PacketEvent, ProbePoint, SECTION_PACKET, SECTION_SAMPLE, SECTION_SKB};

use crate::{
    capture::SkbBytes,
    conntrack::{self, NFCT_INFOMASK, nfct},
    expression, filter,
    globals::empty,
    headers::{HEADER_UNSET, parse_ip},
    kmem::offset,
    per_connection::{self, Decision},
    ring::emit,
    skb::{SkbFields, SkbNetworkHeader, UntrustedSkb, device},
};

/// Emits an event for `skb` at `probe` if the filter wants the packet; `fill` adds what only
/// the probe knows (hook, drop reason). `telling`: shown even past --per-connection (a drop
/// with a reason of its own). Returns whether it was wanted.
#[inline(always)]
pub fn observe<S: SkbFields>(
    skb: S,
    probe: ProbePoint,
    telling: bool,
    fill: impl FnOnce(&mut PacketEvent),
) -> bool {
    let head: u64 = skb.field(offset!(skb_head)).unwrap_or(0);
    let network_header: u16 = skb
        .field(offset!(skb_network_header))
        .unwrap_or(HEADER_UNSET);
    let mut storage = MaybeUninit::uninit();
    let headers = if head != 0 && network_header != HEADER_UNSET {
        parse_ip(
            &SkbNetworkHeader(head + network_header as u64),
            &mut storage,
        )
    } else {
        None
    };
    let nfct = nfct(skb);
    let ct = nfct & !NFCT_INFOMASK;
    if !filter::wants(headers, ct) || !expression::keeps(headers) {
        return false;
    }
    // Below the --per-connection limit the device hops count packets (they carry the
    // conntrack entry on the host's side; in the netfilter programs that code makes the
    // verifier's work explode); past it every probe decides from the headers.
    let counts = matches!(
        probe,
        ProbePoint::NetifReceive | ProbePoint::NetDevQueue | ProbePoint::KfreeSkb
    );
    let sampled = match per_connection::decide(headers, ct, head, counts) {
        Decision::Show => false,
        Decision::Sample => true,
        // A telling drop is shown, even of a packet held back until then.
        Decision::Hold if telling => true,
        Decision::Hold => {
            per_connection::count_held_event();
            return false;
        }
    };
    emit(probe, &SkbBytes(skb), |event| {
        if head != 0 {
            event.skb_id = head;
            event.sections |= SECTION_SKB;
        }
        if let Some(headers) = headers {
            event.packet = *headers;
            event.sections |= SECTION_PACKET;
        }
        if sampled {
            event.sections |= SECTION_SAMPLE;
        }
        conntrack::fill(nfct, event);
        device(skb, event);
        fill(event);
    });
    true
}

/// [`observe`] for an skb pointer a kprobe or tracepoint got.
#[inline(always)]
pub fn observe_untrusted(skb_ptr: u64, probe: ProbePoint, fill: impl FnOnce(&mut PacketEvent)) {
    if skb_ptr != 0 && !empty() {
        observe(UntrustedSkb(skb_ptr), probe, false, fill);
    }
}
