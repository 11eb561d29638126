//! Facts about the running kernel that the probes and the decoder need: BTF offsets and enum
//! names, kernel symbols, tracepoint record layouts.

pub mod btf;
pub mod conntrack;
pub mod tracefs;

use anyhow::{Context as _, Result};
use dockflow_common::KernelOffsets;

use self::btf::KernelBtf;
use crate::decode::KernelSymbols;

/// The kernel's text symbols whose names satisfy `keep`, from /proc/kallsyms.
pub fn load_symbols(keep: impl Fn(&str) -> bool) -> Result<KernelSymbols> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(KernelSymbols::parse(&text, keep))
}

/// Resolves every offset the programs read through, from BTF and the tracepoint format files.
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
    // The reason argument exists since 5.17; the format file says whether this kernel has it.
    let kfree = tracefs::TracepointFormat::read("skb", "kfree_skb")
        .context("reading the skb:kfree_skb format")?;
    off.kfree_skb_has_reason = u32::from(kfree.field_offset("reason").is_ok());
    Ok(off)
}
