//! The filter expression's verdicts, in the kernel, so that a connection the expression leaves
//! out costs no ring-buffer space after its first packets. Userspace evaluates the expression
//! exactly, on every form a packet of the connection can take (its tuple, the other direction's
//! turned around, the half-NATed mixes of a hairpin) once its NAT bindings are fixed, and
//! stores the verdict under each form here; a probe then looks up the tuple the packet's own
//! headers spell, which is one of those forms at every hop, before NAT, after it or between.
//! Unknown (a connection's first packets, an ICMP error, a forgotten entry): kept, userspace
//! decides.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use dockflow_common::{
    AF_INET, AF_INET6, CtTuple, MAX_EXPRESSION_VERDICTS, PacketHeaders, VERDICT_LEFT_OUT,
};

use crate::conntrack::tuple_of;

/// 1 when the user gave a filter expression (set before load: without one, the verifier drops
/// the lookup from every program).
#[unsafe(no_mangle)]
static EXPRESSION_ON: u32 = 0;

/// The IP protocols the expression may match at all, per family (see dockflow_common's
/// EXPRESSION_PROTOCOLS_GLOBAL): NAT never changes them, so these decide from the first hop.
#[unsafe(no_mangle)]
static EXPRESSION_PROTOCOLS: [u64; 8] = [0; 8];

#[map(name = "EXPRESSION_VERDICTS")]
static VERDICTS: LruHashMap<CtTuple, u8> = LruHashMap::with_max_entries(MAX_EXPRESSION_VERDICTS, 0);

/// Events the verdicts left out, per CPU.
#[map(name = "EXPRESSION_LEFT_OUT")]
static LEFT_OUT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Whether a packet with these headers (None: not IP) may be one the expression matches.
#[inline(always)]
pub fn keeps(headers: Option<&PacketHeaders>) -> bool {
    // SAFETY: a read of a plain static (a load-time constant userspace sets before load); volatile
    // so the compiler cannot fold its zero initialiser.
    if unsafe { core::ptr::read_volatile(&EXPRESSION_ON) } == 0 {
        return true;
    }
    let Some(h) = headers else {
        return true;
    };
    // ARP (and anything else not IP): userspace decides.
    if h.family != AF_INET && h.family != AF_INET6 {
        return true;
    }
    let left_out = !possible_protocol(h)
        // SAFETY: the value is read at once and never held; a concurrent update or delete gives the
        // old value or none, both handled.
        || unsafe { VERDICTS.get(&tuple_of(h)) }.is_some_and(|v| *v == VERDICT_LEFT_OUT);
    if left_out && let Some(counter) = LEFT_OUT.get_ptr_mut(0) {
        // SAFETY: `counter` points to this CPU's slot of a per-CPU array, which nothing else writes
        // while this program runs.
        unsafe { *counter += 1 };
    }
    !left_out
}

/// Whether the expression may match a packet of this family and IP protocol.
#[inline(always)]
fn possible_protocol(h: &PacketHeaders) -> bool {
    let word = usize::from(h.family == AF_INET6) * 4 + usize::from(h.l4_proto >> 6);
    // SAFETY: a read of a plain static (a load-time constant userspace sets before load); volatile
    // so the compiler cannot fold its zero initialiser.
    let bits = unsafe { core::ptr::read_volatile(&EXPRESSION_PROTOCOLS) };
    bits[word & 7] & (1 << (h.l4_proto & 63)) != 0
}
