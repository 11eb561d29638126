//! dockflow's kernel programs. One module per probe family. Each parses the packet's headers,
//! asks the target filter ([`filter`]) and, only for the target's packets, reserves a
//! `PacketEvent` in the one ring buffer ([`ring`]) and fills it in place ([`observe`]).
#![no_std]
#![no_main]

// Layers, each importing only those above it: globals, kmem, headers; skb, conntrack, ring;
// capture and the lookups (reply_tuples, filter, expression, per_connection, skipped); observe,
// the one path every skb probe shares; the probe families (tc, then tunnel on tc's parts,
// netfilter, tracepoints, bridge).
mod bridge;
mod capture;
mod conntrack;
mod expression;
mod filter;
mod globals;
mod headers;
mod kmem;
mod netfilter;
mod observe;
mod per_connection;
mod reply_tuples;
mod ring;
mod skb;
mod skipped;
mod tc;
mod tracepoints;
mod tunnel;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
