//! dockflow's kernel programs. One module per probe family. Each parses the packet's headers,
//! asks the target filter ([`filter`]) and, only for the target's packets, reserves a
//! [`PacketEvent`] in the one ring buffer [`EVENTS`] through [`emit`] and fills it in place.
#![no_std]
#![no_main]

mod bridge;
mod capture;
mod expression;
mod filter;
mod headers;
mod kmem;
mod netfilter;
mod per_connection;
mod reply_tuples;
mod skb;
mod skipped;
mod tc;
mod tracepoints;

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use dockflow_common::{
    KernelOffsets, PROBE_POINT_SLOTS, PacketEvent, ProbePoint, Settings, TargetSet, snap_reserve,
};

use crate::capture::PacketBytes;

/// Shared by every probe. Userspace drains it.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Events the ring buffer had no room for, per probe point: reported, never silent.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_POINT_SLOTS, 0);

/// The target's addresses and published ports (userspace updates it when a container moves).
#[map(name = "TARGETS")]
static TARGETS: Array<TargetSet> = Array::with_max_entries(1, 0);

/// Runtime switches (see dockflow_common::Settings).
#[map(name = "SETTINGS")]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Whether each tuple map may hold entries (see dockflow_common::TUPLE_FLAGS_MAP).
#[map(name = "TUPLE_FLAGS")]
static TUPLE_FLAGS: Array<u32> = Array::with_max_entries(2, 0);

/// Turns a tuple map's lookups on (it just stored a tuple).
#[inline(always)]
fn tuple_flag_set(flag: u32) {
    if let Some(on) = TUPLE_FLAGS.get_ptr_mut(flag) {
        unsafe { core::ptr::write_volatile(on, 1) };
    }
}

/// Whether a tuple map may hold entries.
#[inline(always)]
fn tuple_flag_on(flag: u32) -> bool {
    TUPLE_FLAGS
        .get(flag)
        .is_some_and(|on| unsafe { core::ptr::read_volatile(on) } != 0)
}

/// Kernel struct offsets, resolved from BTF by userspace before load.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
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
static FILTER: u32 = 0;

/// 1: every program returns at once (the benchmark's floor: what attaching alone costs).
#[unsafe(no_mangle)]
static EMPTY: u32 = 0;

/// Whether the programs were loaded empty; a load-time constant, so the verifier drops the
/// rest of each program when they were.
#[inline(always)]
fn empty() -> bool {
    unsafe { core::ptr::read_volatile(&EMPTY) != 0 }
}

/// Zeroes `slot` in place with 8-byte stores. A `Default` value would compile to byte-wise
/// memset loops (BPF has no inline memset), which cost more than a whole filtered-out run.
#[inline(always)]
fn zeroed<T>(slot: &mut MaybeUninit<T>) -> &mut T {
    const { assert!(core::mem::size_of::<T>() % 8 == 0) };
    let words = slot.as_mut_ptr() as *mut u64;
    for i in 0..core::mem::size_of::<T>() / 8 {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    unsafe { slot.assume_init_mut() }
}

/// An event and the packet's first `N` bytes, one ring-buffer record.
#[repr(C)]
struct Record<const N: usize> {
    event: PacketEvent,
    bytes: [u8; N],
}

/// --snaplen, as set at load.
#[inline(always)]
fn snaplen() -> u32 {
    unsafe { core::ptr::read_volatile(&SNAPLEN) }
}

/// Reserves an event for `probe`, zeroed and stamped, lets `fill` complete it in the ring buffer
/// itself (no copy on the stack), captures the packet's first bytes from `bytes` behind it and
/// submits it; counts it as lost when there is no room. Probes call this only for packets the
/// filter kept: the rest never pay for the clock or the reservation.
#[inline(always)]
fn emit(probe: ProbePoint, bytes: &impl PacketBytes, fill: impl FnOnce(&mut PacketEvent)) {
    // SNAPLEN is a load-time constant: one arm survives verification.
    match snap_reserve(snaplen()) {
        0 => emit_record::<0>(probe, bytes, fill),
        64 => emit_record::<64>(probe, bytes, fill),
        128 => emit_record::<128>(probe, bytes, fill),
        _ => emit_record::<256>(probe, bytes, fill),
    }
}

#[inline(always)]
fn emit_record<const N: usize>(
    probe: ProbePoint,
    bytes: &impl PacketBytes,
    fill: impl FnOnce(&mut PacketEvent),
) {
    let Some(mut entry) = EVENTS.reserve::<Record<N>>(0) else {
        if let Some(counter) = LOST.get_ptr_mut(probe as u32) {
            unsafe { *counter += 1 };
        }
        return;
    };
    // Only the event is zeroed: the bytes past snap_len are never read.
    let record = unsafe { &mut *entry.as_mut_ptr() };
    let event = zeroed(unsafe {
        &mut *(&mut record.event as *mut PacketEvent as *mut MaybeUninit<PacketEvent>)
    });
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    event.probe = probe as u8;
    fill(event);
    if N > 0 {
        bytes.capture(&mut record.bytes, snaplen(), event);
    }
    entry.submit(0);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
