//! The in-kernel target filter: a few comparisons per packet, so traffic that is not the
//! target's costs little and never reaches the ring buffer. Probes ask with the packet's own
//! headers; conntrack is read only when those do not decide.

use aya_ebpf::{macros::map, maps::HashMap};
use dockflow_common::{
    FilterReason, MAX_LARGE_TARGET, MAX_TARGET_ADDRESSES, MAX_TARGET_NETNS, MAX_TARGET_PORTS,
    PacketHeaders, TargetSet, port_key,
};

use crate::{
    globals::{FILTER, TARGETS},
    kmem::{offset, read},
    reply_tuples,
};

/// A target's sets past [`TargetSet`]'s arrays (see dockflow_common::TARGET_ADDRESSES_MAP).
#[map(name = "TARGET_ADDRESSES")]
static LARGE_ADDRESSES: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_LARGE_TARGET, 0);
#[map(name = "TARGET_PORTS")]
static LARGE_PORTS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_LARGE_TARGET, 0);
#[map(name = "TARGET_NETNS")]
static LARGE_NETNS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_LARGE_TARGET, 0);

/// The target set when userspace asked for filtering (a bare --iface trace wants everything);
/// an inlined array lookup, no helper call.
#[inline(always)]
fn targets() -> Option<&'static TargetSet> {
    // SAFETY: a read of a plain static (a load-time constant userspace sets before load); volatile
    // so the compiler cannot fold its zero initialiser.
    if unsafe { core::ptr::read_volatile(&FILTER) } == 0 {
        return None;
    }
    TARGETS.get(0)
}

/// Two 8-byte halves compared as integers: no memcmp in BPF, no copies on the small stack.
/// Both sides are 8-aligned (a map value, and a field at an 8-aligned offset).
#[inline(always)]
fn same_address(a: &[u8; 16], b: &[u8; 16]) -> bool {
    // SAFETY: both are 16 bytes at 8-aligned addresses (see above): reading them as two u64 is in
    // bounds and aligned.
    let (a, b) = unsafe {
        (
            &*(a as *const [u8; 16] as *const [u64; 2]),
            &*(b as *const [u8; 16] as *const [u64; 2]),
        )
    };
    a[0] == b[0] && a[1] == b[1]
}

#[inline(always)]
fn is_target_address(targets: &TargetSet, addr: &[u8; 16]) -> bool {
    if targets.n_addresses as usize > MAX_TARGET_ADDRESSES {
        // SAFETY: the value is read at once and never held; a concurrent update or delete gives the
        // old value or none, both handled.
        return unsafe { LARGE_ADDRESSES.get(addr) }.is_some();
    }
    for i in 0..MAX_TARGET_ADDRESSES {
        if i as u32 >= targets.n_addresses {
            return false;
        }
        if same_address(&targets.addresses[i], addr) {
            return true;
        }
    }
    false
}

#[inline(always)]
fn is_target_port(targets: &TargetSet, l4_proto: u8, port: u16) -> bool {
    let key = port_key(l4_proto, port);
    if targets.n_ports as usize > MAX_TARGET_PORTS {
        // SAFETY: the value is read at once and never held; a concurrent update or delete gives the
        // old value or none, both handled.
        return unsafe { LARGE_PORTS.get(&key) }.is_some();
    }
    for i in 0..MAX_TARGET_PORTS {
        if i as u32 >= targets.n_ports {
            return false;
        }
        if targets.ports[i] == key {
            return true;
        }
    }
    false
}

/// True for packets to or from the target's addresses or its published ports (before DNAT).
#[inline(always)]
fn headers_match(targets: &TargetSet, h: &PacketHeaders) -> bool {
    is_target_address(targets, &h.saddr)
        || is_target_address(targets, &h.daddr)
        || is_target_port(targets, h.l4_proto, h.dport)
        || is_target_port(targets, h.l4_proto, h.sport)
}

/// A connection is the target's when one of its ends is: the original source (it started it)
/// or the reply source (it answers, whatever NAT did to the original destination). This
/// catches packets whose headers NAT rewrote away from the target (a masqueraded reply, say).
#[inline(always)]
fn conntrack_matches(targets: &TargetSet, ct: u64) -> bool {
    if ct == 0 {
        return false;
    }
    let original = ct + (offset!(ct_tuple_original) + offset!(tuple_src_addr)) as u64;
    let gap = offset!(ct_tuple_reply) - offset!(ct_tuple_original);
    // Both source addresses in one read where the tuples lie where they have for years (the
    // verifier sees the offsets as constants and drops the branch not taken).
    if gap == TUPLE_HASH_SIZE {
        let Some(words) = read::<[u64; TUPLE_HASH_WORDS + 2]>(original, 0) else {
            return false;
        };
        return is_target_words(targets, &[words[0], words[1]])
            || is_target_words(
                targets,
                &[words[TUPLE_HASH_WORDS], words[TUPLE_HASH_WORDS + 1]],
            );
    }
    let source_is_target =
        |tuple: u64| is_target_words(targets, &read::<[u64; 2]>(tuple, 0).unwrap_or_default());
    source_is_target(original) || source_is_target(original + gap as u64)
}

/// sizeof(struct nf_conntrack_tuple_hash) on 64-bit kernels: the distance from the original
/// direction's tuple to the reply's.
const TUPLE_HASH_SIZE: u32 = 56;
const TUPLE_HASH_WORDS: usize = TUPLE_HASH_SIZE as usize / 8;

/// An address read as two words (so that the comparison's 8-byte loads are aligned).
#[inline(always)]
fn is_target_words(targets: &TargetSet, words: &[u64; 2]) -> bool {
    // SAFETY: 16 bytes of `words`, valid and aligned for u8.
    is_target_address(targets, unsafe { &*(words.as_ptr() as *const [u8; 16]) })
}

/// Whether device hops in the network namespace with this inode (0: unknown) are looked at.
#[inline(always)]
pub fn watches_netns(inum: u32) -> bool {
    let Some(targets) = targets() else {
        return true;
    };
    // Unrolled: the loop form compiles to a count-down older verifiers (6.1) cannot bound.
    let n = targets.n_netns;
    if n as usize > MAX_TARGET_NETNS {
        // SAFETY: the value is read at once and never held; a concurrent update or delete gives the
        // old value or none, both handled.
        return inum == 0 || unsafe { LARGE_NETNS.get(&inum) }.is_some();
    }
    macro_rules! watched {
        ($($i:literal)*) => { false $(|| (n > $i && targets.netns[$i] == inum))* };
    }
    n == 0 || inum == 0 || watched!(0 1 2 3 4 5 6 7)
}

/// Why [`wants`] keeps or skips a frame at tc (no conntrack there), for --debug-kernel; only
/// evaluated when kernel debug logging is on.
#[inline(always)]
pub fn why(headers: Option<&PacketHeaders>) -> FilterReason {
    let Some(targets) = targets() else {
        return FilterReason::NoFilter;
    };
    let Some(h) = headers else {
        return FilterReason::NotIp;
    };
    if is_target_address(targets, &h.saddr) || is_target_address(targets, &h.daddr) {
        FilterReason::Address
    } else if is_target_port(targets, h.l4_proto, h.dport)
        || is_target_port(targets, h.l4_proto, h.sport)
    {
        FilterReason::Port
    } else if reply_tuples::is_learned_reply(h) {
        FilterReason::ReplyTuple
    } else {
        FilterReason::NotTarget
    }
}

/// Whether to emit a packet with these headers (None: not IP, or unreadable) and this
/// conntrack entry (0: none).
#[inline(always)]
pub fn wants(headers: Option<&PacketHeaders>, ct: u64) -> bool {
    let Some(targets) = targets() else {
        return true;
    };
    match headers {
        Some(h) if headers_match(targets, h) => true,
        // Before conntrack has run, a NATed reply is known only by its learned tuple.
        Some(h) if ct == 0 => reply_tuples::is_learned_reply(h),
        _ => conntrack_matches(targets, ct),
    }
}
