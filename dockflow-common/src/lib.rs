//! Event layouts shared by the kernel programs (dockflow-ebpf) and the loader (dockflow-user).
//!
//! This crate is the single source of truth for everything that crosses the kernel/user
//! boundary: the kernel writes these structs, userspace reads them back byte for byte. Keep
//! every struct `#[repr(C)]`, explicitly padded and a multiple of 8 bytes, so both sides agree
//! without guessing at alignment.
#![no_std]

mod event;
mod maps;
mod netfilter;
mod probe;
mod target;

pub use event::*;
pub use maps::*;
pub use netfilter::*;
pub use probe::*;
pub use target::*;

#[cfg(feature = "aya")]
mod pod {
    // SAFETY (each): #[repr(C)] structs of integers and integer arrays, Copy, with explicit
    // padding fields where alignment needs them: every bit pattern is a valid value, and the
    // kernel programs read and write the same layout.
    // SAFETY: see above.
    unsafe impl aya::Pod for super::PacketEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::KernelOffsets {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::TargetSet {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: see above.
    unsafe impl aya::Pod for super::CtTuple {}
}
