//! What userspace sets before or while the programs run: load-time constants (kernel offsets
//! from BTF, --snaplen, the filter and empty switches: the verifier sees them as constants and
//! keeps only the branches they select) and the small configuration maps (the target, runtime
//! settings, which tuple maps hold entries).

use aya_ebpf::{macros::map, maps::Array};
use dockflow_common::{KernelOffsets, Settings, TargetSet};

/// The target's addresses and published ports (userspace updates it when a container moves).
#[map(name = "TARGETS")]
pub static TARGETS: Array<TargetSet> = Array::with_max_entries(1, 0);

/// Runtime switches (see dockflow_common::Settings).
#[map(name = "SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Whether each tuple map may hold entries (see dockflow_common::TUPLE_FLAGS_MAP).
#[map(name = "TUPLE_FLAGS")]
static TUPLE_FLAGS: Array<u32> = Array::with_max_entries(2, 0);

/// Turns a tuple map's lookups on (it just stored a tuple).
#[inline(always)]
pub fn tuple_flag_set(flag: u32) {
    if let Some(on) = TUPLE_FLAGS.get_ptr_mut(flag) {
        // SAFETY: `on` points to this array map's value, valid for the program's run; a racing
        // writer stores the same 1.
        unsafe { core::ptr::write_volatile(on, 1) };
    }
}

/// Whether a tuple map may hold entries.
#[inline(always)]
pub fn tuple_flag_on(flag: u32) -> bool {
    TUPLE_FLAGS
        .get(flag)
        // SAFETY: `on` is a valid reference to this array map's value; volatile so each run reads
        // the latest switch.
        .is_some_and(|on| unsafe { core::ptr::read_volatile(on) } != 0)
}

/// Kernel struct offsets, resolved from BTF by userspace before load.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    skb_head: 0,
    skb_network_header: 0,
    skb_dev: 0,
    skb_nfct: 0,
    dev_ifindex: 0,
    dev_nd_net: 0,
    net_ns_inum: 0,
    state_hook: 0,
    state_pf: 0,
    state_in: 0,
    state_out: 0,
    state_okfn: 0,
    has_conntrack: 0,
    ct_status: 0,
    ct_tuple_original: 0,
    ct_tuple_reply: 0,
    tuple_src_addr: 0,
    tuple_src_port: 0,
    tuple_dst_addr: 0,
    tuple_dst_port: 0,
    tuple_dst_protonum: 0,
    kfree_skb_has_reason: 0,
    skb_data: 0,
    skb_len: 0,
    skb_mac_header: 0,
};

/// Bytes of each packet to capture after its event (--snaplen; 0: none). Read-only: the
/// verifier keeps only the branch of [`emit`] for its record size.
#[unsafe(no_mangle)]
static SNAPLEN: u32 = 0;

/// 1: emit only the target's packets; 0: emit everything (set by userspace before load).
#[unsafe(no_mangle)]
pub static FILTER: u32 = 0;

/// 1: every program returns at once (the benchmark's floor: what attaching alone costs).
#[unsafe(no_mangle)]
static EMPTY: u32 = 0;

/// Whether the programs were loaded empty; a load-time constant, so the verifier drops the
/// rest of each program when they were.
#[inline(always)]
pub fn empty() -> bool {
    // SAFETY: a read of a plain static (a load-time constant userspace sets before load); volatile
    // so the compiler cannot fold its zero initialiser.
    unsafe { core::ptr::read_volatile(&EMPTY) != 0 }
}

/// --snaplen, as set at load.
#[inline(always)]
pub fn snaplen() -> u32 {
    // SAFETY: a read of a plain static (a load-time constant userspace sets before load); volatile
    // so the compiler cannot fold its zero initialiser.
    unsafe { core::ptr::read_volatile(&SNAPLEN) }
}
