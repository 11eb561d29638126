//! Reading kernel memory: the offsets userspace resolved from BTF (Rust eBPF has no CO-RE),
//! plain loads through BTF-typed pointers, probe reads through the rest, and conntrack tuples
//! read field by field; and zeroing the programs' own memory. Every probe family reads through
//! this; nothing here knows packets.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::bpf_probe_read_kernel;
use dockflow_common::CtTuple;

/// One field of [`crate::globals::OFFSETS`], read from the read-only global where it is used: the compiler
/// cannot fold the zero initialiser, the verifier sees a known constant (BTF-typed loads need
/// one), and no program copies the whole table onto its small stack.
macro_rules! offset {
    ($field:ident) => {
        // SAFETY: a read of a plain static (a load-time constant userspace sets before load);
        // volatile so the compiler cannot fold its zero initialiser.
        unsafe { core::ptr::read_volatile(&$crate::globals::OFFSETS.$field) }
    };
}
pub(crate) use offset;

/// Reads kernel memory at `base + offset`.
#[inline(always)]
pub fn read<T: Copy>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: a BPF helper that checks the kernel address itself and fails (handled) where nothing
    // can be read.
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// A field of a BTF-typed kernel pointer (a program's typed context): a plain load.
#[inline(always)]
pub fn trusted_field<T: Copy>(base: u64, offset: u32) -> T {
    // SAFETY: `base` is a BTF-typed kernel pointer from the program's context and `offset` a field
    // offset of its type resolved from BTF: the verifier checks this load against the kernel's
    // type.
    unsafe { core::ptr::read_volatile((base as *const u8).add(offset as usize) as *const T) }
}

/// A `struct nf_conntrack_tuple` at `tuple`, into `out` (whose family byte is left alone).
#[inline(always)]
pub fn read_tuple(tuple: u64, out: &mut CtTuple) {
    out.src = read(tuple, offset!(tuple_src_addr)).unwrap_or_default();
    out.dst = read(tuple, offset!(tuple_dst_addr)).unwrap_or_default();
    out.sport = u16::from_be(read(tuple, offset!(tuple_src_port)).unwrap_or(0));
    out.dport = u16::from_be(read(tuple, offset!(tuple_dst_port)).unwrap_or(0));
    out.l4_proto = read(tuple, offset!(tuple_dst_protonum)).unwrap_or(0);
}

/// Zeroes `slot` in place with 8-byte stores. A `Default` value would compile to byte-wise
/// memset loops (BPF has no inline memset), which cost more than a whole filtered-out run.
#[inline(always)]
pub fn zeroed<T>(slot: &mut MaybeUninit<T>) -> &mut T {
    const { assert!(core::mem::size_of::<T>() % 8 == 0) };
    let words = slot.as_mut_ptr() as *mut u64;
    for i in 0..core::mem::size_of::<T>() / 8 {
        // SAFETY: `words` points to `slot`, whose size is a multiple of 8 (asserted above), and `i`
        // stays below size / 8.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: every byte of `slot` was written (zero) just above.
    unsafe { slot.assume_init_mut() }
}
