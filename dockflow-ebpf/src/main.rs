//! dockflow's kernel programs. One module per probe family; all write [`PacketEvent`]s into the
//! one ring buffer [`EVENTS`] through [`emit`], which applies the target filter and counts
//! reservations the ring buffer refused.
#![no_std]
#![no_main]

mod bridge;
mod filter;
mod headers;
mod netfilter;
mod skb;
mod tc;
mod tracepoints;

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use dockflow_common::{KernelOffsets, PROBE_POINT_SLOTS, PacketEvent, Settings, TargetSet};

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
    _pad: 0,
};

/// 1: emit only the target's packets; 0: emit everything (set by userspace before load).
#[unsafe(no_mangle)]
static FILTER: u32 = 0;

/// The offsets, read so the compiler cannot fold the zero initialiser into the code.
#[inline(always)]
fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// Sends `event` to userspace (the probe has applied the filter); counts it as lost if there is
/// no room.
#[inline(always)]
fn emit(event: &PacketEvent) {
    if EVENTS.output::<PacketEvent>(event, 0).is_err() {
        if let Some(counter) = LOST.get_ptr_mut(event.probe as u32) {
            unsafe { *counter += 1 };
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
