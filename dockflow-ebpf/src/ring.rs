//! The one ring buffer every probe writes to, and what it costs when full: a lost count per
//! probe point, never silence. An event is filled in the ring itself (no copy on the stack),
//! with the packet's first bytes (--snaplen) behind it.

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};
use dockflow_common::{PROBE_POINT_SLOTS, PacketEvent, ProbePoint, snap_reserve};

use crate::{globals::snaplen, kmem::zeroed};

/// Shared by every probe. Userspace drains it.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Events the ring buffer had no room for, per probe point: reported, never silent.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROBE_POINT_SLOTS, 0);

/// Where a probe's packet bytes come from.
pub trait PacketBytes {
    /// Copies the packet's first bytes, at most `snaplen` and `out.len()`, into `out`, and notes
    /// in `event` how many, the packet's length and how its bytes start.
    fn capture(&self, out: &mut [u8], snaplen: u32, event: &mut PacketEvent);
}

/// An event and the packet's first `N` bytes, one ring-buffer record.
#[repr(C)]
struct Record<const N: usize> {
    event: PacketEvent,
    bytes: [u8; N],
}

/// Reserves an event for `probe`, zeroed and stamped, lets `fill` complete it in the ring buffer
/// itself (no copy on the stack), captures the packet's first bytes from `bytes` behind it and
/// submits it; counts it as lost when there is no room. Probes call this only for packets the
/// filter kept: the rest never pay for the clock or the reservation.
#[inline(always)]
pub fn emit(probe: ProbePoint, bytes: &impl PacketBytes, fill: impl FnOnce(&mut PacketEvent)) {
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
            // SAFETY: `counter` points to this CPU's slot of a per-CPU array, which nothing else
            // writes while this program runs.
            unsafe { *counter += 1 };
        }
        return;
    };
    // Only the event is zeroed: the bytes past snap_len are never read.
    // SAFETY: the reservation is ours until submitted and sized for a whole `Record<N>`.
    let record = unsafe { &mut *entry.as_mut_ptr() };
    // SAFETY: the same memory as `record.event`, viewed as not yet initialised: `zeroed` writes
    // every byte before it is read.
    let event = zeroed(unsafe {
        &mut *(&mut record.event as *mut PacketEvent as *mut MaybeUninit<PacketEvent>)
    });
    // SAFETY: a BPF helper with no arguments and no preconditions.
    event.ts_ns = unsafe { bpf_ktime_get_ns() };
    event.probe = probe as u8;
    fill(event);
    if N > 0 {
        bytes.capture(&mut record.bytes, snaplen(), event);
    }
    entry.submit(0);
}
