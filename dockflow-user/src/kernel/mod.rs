//! Facts about the running kernel that the probes and the decoder need: BTF offsets and enum
//! names, tracepoint prototypes, kernel symbols, conntrack entries.

pub mod btf;
pub mod capabilities;
pub mod conntrack;

use std::time::SystemTime;

use anyhow::{Context as _, Result};
use dockflow_common::KernelOffsets;

use self::btf::KernelBtf;
use crate::decode::KernelSymbols;

/// CLOCK_MONOTONIC in nanoseconds, the clock bpf_ktime_get_ns() reads: userspace stamps what
/// it learns (nftables traces, loss readings) on the events' time line.
pub fn monotonic_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock time minus the kernel's monotonic clock, now: what turns event times into dates.
pub fn clock_offset_now() -> i64 {
    let wall = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64;
    wall - monotonic_now() as i64
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The kernel's text symbols whose names satisfy `keep`, from /proc/kallsyms.
pub fn load_symbols(keep: impl Fn(&str) -> bool) -> Result<KernelSymbols> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(KernelSymbols::parse(&text, keep))
}

/// Resolves every offset the programs read through, from BTF.
pub fn resolve_offsets(btf: &KernelBtf) -> Result<KernelOffsets> {
    let o = |s: &str, p: &str| btf.offset(s, p);
    let mut off = KernelOffsets {
        skb_head: o("sk_buff", "head")?,
        skb_network_header: o("sk_buff", "network_header")?,
        skb_dev: o("sk_buff", "dev")?,
        skb_nfct: o("sk_buff", "_nfct")?,
        dev_ifindex: o("net_device", "ifindex")?,
        dev_nd_net: o("net_device", "nd_net")?,
        net_ns_inum: o("net", "ns.inum")?,
        state_hook: o("nf_hook_state", "hook")?,
        state_pf: o("nf_hook_state", "pf")?,
        state_in: o("nf_hook_state", "in")?,
        state_out: o("nf_hook_state", "out")?,
        state_okfn: o("nf_hook_state", "okfn")?,
        skb_data: o("sk_buff", "data")?,
        skb_len: o("sk_buff", "len")?,
        skb_mac_header: o("sk_buff", "mac_header")?,
        ..KernelOffsets::default()
    };
    if btf.has_struct("nf_conn") {
        let tuplehash = o("nf_conn", "tuplehash")?;
        let tuple_in_hash = o("nf_conntrack_tuple_hash", "tuple")?;
        let hash_size = btf.size("nf_conntrack_tuple_hash")?;
        off.has_conntrack = 1;
        off.ct_status = o("nf_conn", "status")?;
        off.ct_tuple_original = tuplehash + tuple_in_hash;
        off.ct_tuple_reply = tuplehash + hash_size + tuple_in_hash;
        off.tuple_src_addr = o("nf_conntrack_tuple", "src.u3")?;
        off.tuple_src_port = o("nf_conntrack_tuple", "src.u")?;
        off.tuple_dst_addr = o("nf_conntrack_tuple", "dst.u3")?;
        off.tuple_dst_port = o("nf_conntrack_tuple", "dst.u")?;
        off.tuple_dst_protonum = o("nf_conntrack_tuple", "dst.protonum")?;
    }
    off.kfree_skb_has_reason =
        u32::from(btf.tracepoint_has_enum_argument("kfree_skb", "skb_drop_reason")?);
    Ok(off)
}
