//! dockflow's kernel programs. One module per probe family; all write [`PacketEvent`]s into the
//! one ring buffer [`EVENTS`].
#![no_std]
#![no_main]

mod headers;
mod tc;

use aya_ebpf::{macros::map, maps::RingBuf};

/// Shared by every probe. Userspace drains it; a failed reservation is counted, never silent.
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 * 1024 * 1024, 0);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
