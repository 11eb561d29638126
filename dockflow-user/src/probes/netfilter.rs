//! BPF netfilter programs on every IPv4 and IPv6 hook, at the first and last priority a link may
//! take and on both sides of the hook's NAT priority, so the stream shows each hook a packet
//! crossed and the packet before and after DNAT/SNAT.

use std::{
    collections::HashSet,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd},
};

use anyhow::{Context as _, Result, anyhow};
use aya::{Ebpf, maps::Map};
use dockflow_common::{NFPROTO_IPV4, NFPROTO_IPV6, NfSlot, nf_slot_priority};

use super::{Attached, Collector, Family, PROGRAMS, ProbeError, bpf_sys};
use crate::{decode::names, model::Hook, watch::Target};

pub struct Netfilter;

/// The kernel program for each slot (see dockflow-ebpf/src/netfilter.rs).
const SLOT_PROGRAMS: [(NfSlot, &str); 4] = [
    (NfSlot::First, "df_nf_first"),
    (NfSlot::BeforeNat, "df_nf_pre_nat"),
    (NfSlot::AfterNat, "df_nf_post_nat"),
    (NfSlot::Last, "df_nf_last"),
];

const HOOKS: [u8; 5] = [0, 1, 2, 3, 4];

impl Collector for Netfilter {
    fn attach(&mut self, ebpf: &mut Ebpf, _target: &Target) -> Attached {
        let programs = match load_programs(ebpf) {
            Ok(programs) => programs,
            Err(e) => {
                return Attached::refused(
                    Family::Netfilter,
                    "netfilter hooks (BPF netfilter programs)",
                    e,
                );
            }
        };
        let mut attached = Attached::default();
        for pf in [NFPROTO_IPV4, NFPROTO_IPV6] {
            let mut links = 0;
            let mut first_error = None;
            for hook in HOOKS {
                for (slot, prog) in programs.iter() {
                    let Some(priority) = nf_slot_priority(*slot, hook) else {
                        continue;
                    };
                    match attach_slot(prog, pf, hook, *slot, priority) {
                        Ok(link) => {
                            attached.held.push(link);
                            links += 1;
                        }
                        Err(e) => {
                            first_error.get_or_insert_with(|| attach_error(hook, priority, &e));
                        }
                    }
                }
            }
            attached.point(
                Family::Netfilter,
                format!(
                    "netfilter {} (all 5 hooks, first/last and around NAT: {links} links)",
                    names::family(pf)
                ),
                first_error.map_or(Ok(()), |e| Err(ProbeError::Refused(e))),
            );
        }
        attached.held.extend(programs.into_iter().map(|(_, fd)| fd));
        attached
    }
}

/// Attaches one slot. The kernel refuses a BPF hook at a priority any other hook of the family
/// already holds: IPv6 conntrack confirms at LOCAL_IN at INT_MAX - 1 once anything on the host
/// uses IPv6 conntrack (Docker with ip6tables on), so the first and last slots step inward
/// past such a hook; they still run before (after) every rule chain.
fn attach_slot(
    prog: &OwnedFd,
    pf: u8,
    hook: u8,
    slot: NfSlot,
    priority: i32,
) -> std::io::Result<OwnedFd> {
    let step = match slot {
        NfSlot::First => 1,
        NfSlot::Last => -1,
        NfSlot::BeforeNat | NfSlot::AfterNat | NfSlot::Entry => 0,
    };
    let mut at = priority;
    loop {
        match bpf_sys::attach_netfilter(prog, pf, hook, at) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && step != 0
                    && at.abs_diff(priority) < 4 =>
            {
                at += step;
            }
            result => return result,
        }
    }
}

/// One line for a refused link; EBUSY is worth explaining.
fn attach_error(hook: u8, priority: i32, error: &std::io::Error) -> String {
    let hook = Hook::from_number(hook);
    if error.raw_os_error() == Some(libc::EBUSY) {
        format!(
            "{hook} priority {priority} is taken by another BPF netfilter program (another dockflow \
             running?): the kernel allows one per hook and priority"
        )
    } else {
        format!("{hook} @{priority}: {error}")
    }
}

/// Loads the slot programs with the maps aya already created (and the globals it already set).
fn load_programs(ebpf: &Ebpf) -> Result<Vec<(NfSlot, OwnedFd)>> {
    let mut obj =
        aya_obj::Object::parse(PROGRAMS).map_err(|e| anyhow!("parsing the eBPF object: {e}"))?;
    let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
    // Every map the object declares: one left out would be relocated against another's fd.
    let maps: Vec<(String, RawFd, aya_obj::Map)> = obj
        .maps
        .iter()
        .map(|(name, map)| {
            let fd = ebpf.map(name).and_then(map_fd).with_context(|| {
                format!("map {name} is not available to the netfilter programs")
            })?;
            Ok((name.clone(), fd, map.clone()))
        })
        .collect::<Result<_>>()?;
    obj.relocate_maps(
        maps.iter().map(|(n, fd, m)| (n.as_str(), *fd, m)),
        &text_sections,
    )
    .map_err(|e| anyhow!("relocating maps: {e}"))?;
    obj.relocate_calls(&text_sections)
        .map_err(|e| anyhow!("relocating calls: {e}"))?;
    SLOT_PROGRAMS
        .iter()
        .map(|(slot, name)| {
            let program = obj
                .programs
                .get(*name)
                .with_context(|| format!("program {name} missing from the object"))?;
            let function = &obj.functions[&program.function_key()];
            let fd = bpf_sys::load_netfilter_program(name, &function.instructions, &obj.license)
                .with_context(|| format!("loading {name}"))?;
            Ok((*slot, fd))
        })
        .collect()
}

fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(d)
        | Map::PerCpuArray(d)
        | Map::HashMap(d)
        | Map::PerCpuHashMap(d)
        | Map::LruHashMap(d)
        | Map::RingBuf(d) => d,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}
