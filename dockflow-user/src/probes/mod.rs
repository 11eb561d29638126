//! Loading the kernel programs and attaching them, one module per probe family.
//!
//! Each family reports, per attach point, whether the kernel took it; the caller prints that once
//! so a user on a restrictive kernel knows what they are (not) seeing. Everything attached is
//! owned by [`Probes`] and detached when it is dropped, on every exit path.

mod bpf_sys;
mod bridge;
mod cleanup;
mod kernel_log;
mod netfilter;
mod nftables;
mod tc;
mod tracepoints;
mod tuples;
mod verdicts;

use std::{mem::ManuallyDrop, net::IpAddr, os::fd::OwnedFd};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
};
use dockflow_common::{
    EMPTY_GLOBAL, EVENTS_MAP, EXPRESSION_GLOBAL, EXPRESSION_PROTOCOLS_GLOBAL, FILTER_GLOBAL,
    HIDDEN_EVENTS, HIDDEN_MAP, HIDDEN_PACKETS, KernelOffsets, LOST_MAP, MAX_LARGE_TARGET,
    OFFSETS_GLOBAL, PACKET_EVENT_SIZE, PLAIN_FREES, ProbePoint, SETTINGS_MAP, SNAPLEN_GLOBAL,
    Settings, TARGET_ADDRESSES_MAP, TARGET_NETNS_MAP, TARGET_PORTS_MAP, TARGETS_MAP, TargetSet,
    VXLAN_PORT_GLOBAL, port_key, snap_reserve,
};

pub use self::{nftables::RuleTraces, verdicts::Verdicts};
use crate::{
    filter::{Filter, Possible},
    watch::{Target, netns},
};

/// The compiled kernel programs, embedded so the binary is self-contained.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dockflow-ebpf"));

/// How the programs are loaded.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// The ring buffer's size in bytes (a power of two, in pages).
    pub ring_bytes: u32,
    /// Packets of each connection emitted in full; 0: all.
    pub per_connection: u32,
    /// Print the programs' own diagnostics (--debug-kernel).
    pub debug_kernel: bool,
    /// Bytes of each packet captured behind its event (--snaplen; 0: none).
    pub snaplen: u32,
    /// A filter expression was given: what it may match at all ([`Filter::possible`]); the
    /// programs drop other IP protocols, look up the verdicts on the rest ([`Verdicts`]), and
    /// nftables marks only those protocols.
    pub expression: Option<Possible>,
    /// Which packets nftables traces (--trace-rules).
    pub trace_rules: crate::nftrace::TraceRules,
    /// Every program returns at once (the benchmark's floor: attaching alone).
    pub empty: bool,
    /// Drop reasons that are no packet's own drop (see [`Settings::plain_frees`]).
    pub plain_frees: [u32; PLAIN_FREES],
}

impl LoadOptions {
    /// The size of each ring-buffer record: the event and the bytes reserved for --snaplen.
    pub fn record_size(&self) -> usize {
        PACKET_EVENT_SIZE + snap_reserve(self.snaplen)
    }
}

/// Why an attach point is not in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The kernel lacks the facility (no kprobes, say): what is missing, and what stands in.
    Unsupported(String),
    /// The kernel (or nft) refused: its reason, on one line.
    Refused(String),
    /// Not tried, because the target gives it nothing to do.
    Skipped(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unsupported(why) | ProbeError::Refused(why) | ProbeError::Skipped(why) => {
                f.write_str(why)
            }
        }
    }
}

/// Whether one attach point was taken.
#[derive(Clone, Debug)]
pub struct Attachment {
    pub family: Family,
    /// "tc ingress on veth1234", ...
    pub point: String,
    pub result: Result<(), ProbeError>,
}

/// What a collector attached: its report, and the fds that keep links alive (links aya does
/// not own).
#[derive(Default)]
struct Attached {
    attachments: Vec<Attachment>,
    held: Vec<OwnedFd>,
    /// Things worth telling the user once (e.g. leftovers removed).
    notes: Vec<String>,
}

impl Attached {
    fn point(&mut self, family: Family, point: impl Into<String>, result: Result<(), ProbeError>) {
        self.attachments.push(Attachment {
            family,
            point: point.into(),
            result,
        });
    }

    fn refused(family: Family, point: &str, error: anyhow::Error) -> Self {
        let mut attached = Self::default();
        attached.point(family, point, Err(ProbeError::Refused(one_line(error))));
        attached
    }
}

/// The probe families a user can choose with --probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Family {
    /// tc ingress/egress on the container's bridge port and on the bridge device.
    Tc,
    /// BPF netfilter programs on every IPv4/IPv6 hook, around the NAT priorities.
    Netfilter,
    /// Drops with their reasons (tracepoint skb:kfree_skb).
    Drops,
    /// Device hops (tracepoints net:netif_receive_skb, net:net_dev_queue): every interface,
    /// the host's external link and the containers' own included.
    Devices,
    /// kprobes on the bridge functions and nf_hook_slow (stock kernels).
    Bridge,
    /// nftables rule verdicts, from the kernel's trace messages (not an eBPF program).
    Nftables,
}

impl Family {
    fn collector(self, options: &LoadOptions) -> Box<dyn Collector> {
        match self {
            Family::Tc => Box::<tc::Tc>::default(),
            Family::Netfilter => Box::new(netfilter::Netfilter),
            Family::Drops => Box::new(tracepoints::DROPS),
            Family::Devices => Box::new(tracepoints::DEVICES),
            Family::Bridge => Box::new(bridge::Bridge),
            Family::Nftables => Box::new(nftables::Nftables::marking(
                options.expression.and_then(|e| e.ip_protocols()),
                options.trace_rules,
            )),
        }
    }
}

/// One family of collectors (tc, netfilter, drops, ..., the nftables trace): every family has
/// this shape, so attaching, following a moved target and detaching are one loop each.
trait Collector {
    /// Attaches for `target`; one [`Attachment`] per point. eBPF families load their programs
    /// from `ebpf`; others ignore it.
    fn attach(&mut self, ebpf: &mut Ebpf, target: &Target) -> Attached;

    /// Follows a target whose interfaces or addresses changed (a restarted container).
    fn retarget(&mut self, _ebpf: &mut Ebpf, _old: &Target, _new: &Target) -> Attached {
        Attached::default()
    }

    /// Removes what the collector put on the host, before the programs are unloaded.
    fn detach(&mut self) {}

    /// nftables rule evaluations, for the collector that produces them (taken once).
    fn rule_traces(&mut self) -> Option<RuleTraces> {
        None
    }
}

/// Loaded and attached programs; dropping this detaches everything.
pub struct Probes {
    // Field order matters: links (held) close before the object that owns programs and maps.
    held: Vec<OwnedFd>,
    collectors: Vec<Box<dyn Collector>>,
    /// Dropped by hand in [`Drop`], before the collectors detach.
    ebpf: ManuallyDrop<Ebpf>,
    kernel_log: Option<kernel_log::KernelLog>,
    lost: PerCpuArray<MapData, u64>,
    tuples: tuples::TupleMaps,
    hidden: PerCpuArray<MapData, u64>,
    pub attachments: Vec<Attachment>,
    pub notes: Vec<String>,
}

impl Probes {
    /// Loads the programs as `options` say and attaches `families` for `target`.
    pub fn attach(
        target: &Target,
        offsets: &KernelOffsets,
        families: &[Family],
        options: LoadOptions,
    ) -> Result<Self> {
        let filter = u32::from(target.filtered());
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(EVENTS_MAP, options.ring_bytes)
            .override_global(OFFSETS_GLOBAL, offsets, true)
            .override_global(FILTER_GLOBAL, &filter, true)
            .override_global(EMPTY_GLOBAL, &u32::from(options.empty), true)
            .override_global(SNAPLEN_GLOBAL, &options.snaplen, true)
            .override_global(VXLAN_PORT_GLOBAL, &u32::from(tc::vxlan_port(target)), true)
            .override_global(
                EXPRESSION_GLOBAL,
                &u32::from(options.expression.is_some()),
                true,
            )
            .override_global(
                EXPRESSION_PROTOCOLS_GLOBAL,
                &options.expression.map(|e| e.protocols).unwrap_or_default(),
                true,
            )
            .override_global(
                kernel_log::LEVEL_GLOBAL,
                &if options.debug_kernel {
                    kernel_log::LEVEL_DEBUG
                } else {
                    kernel_log::LEVEL_OFF
                },
                true,
            )
            .load(PROGRAMS)
            .map_err(|e| load_error(e.into()))?;
        fill_filter(&mut ebpf, target)?;
        let mut attachments = Vec::new();
        let mut held = Vec::new();
        let mut notes = Vec::new();
        let mut collectors = Vec::new();
        for family in families {
            let mut collector = family.collector(&options);
            let attached = collector.attach(&mut ebpf, target);
            attachments.extend(attached.attachments);
            held.extend(attached.held);
            notes.extend(attached.notes);
            collectors.push(collector);
        }
        let netfilter_links = attachments
            .iter()
            .any(|a| a.family == Family::Netfilter && a.result.is_ok());
        let settings = Settings {
            nf_hook_slow_bridge_only: u32::from(netfilter_links),
            per_connection: options.per_connection,
            plain_frees: options.plain_frees,
        };
        Array::try_from(ebpf.map_mut(SETTINGS_MAP).context("no settings map")?)?
            .set(0, settings, 0)?;
        if !attachments.is_empty() && attachments.iter().all(|a| a.result.is_err()) {
            let first = attachments
                .iter()
                .find_map(|a| a.result.clone().err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(anyhow!("the kernel refused every probe ({first})"));
        }
        let kernel_log = options
            .debug_kernel
            .then(|| kernel_log::KernelLog::take(&mut ebpf))
            .transpose()?;
        let lost = PerCpuArray::try_from(ebpf.take_map(LOST_MAP).context("no LOST map")?)?;
        let tuples = tuples::TupleMaps::take(&mut ebpf)?;
        let hidden = PerCpuArray::try_from(ebpf.take_map(HIDDEN_MAP).context("no HIDDEN map")?)?;
        Ok(Self {
            held,
            collectors,
            ebpf: ManuallyDrop::new(ebpf),
            kernel_log,
            lost,
            tuples,
            hidden,
            attachments,
            notes,
        })
    }

    /// Follows a target whose interfaces or addresses changed (a restarted container gets a new
    /// veth and maybe a new address): every collector moves with it (tc to the new interfaces,
    /// the nftables marking to the new addresses), and the in-kernel filter. Returns what was
    /// attached.
    pub fn retarget(&mut self, old: &Target, new: &Target) -> Result<Vec<Attachment>> {
        let mut attachments = Vec::new();
        for collector in &mut self.collectors {
            let attached = collector.retarget(&mut self.ebpf, old, new);
            self.held.extend(attached.held);
            attachments.extend(attached.attachments);
        }
        fill_filter(&mut self.ebpf, new)?;
        Ok(attachments)
    }

    /// The nftables rule evaluations, when the nftables collector runs (taken once).
    pub fn take_rule_traces(&mut self) -> Option<RuleTraces> {
        self.collectors.iter_mut().find_map(|c| c.rule_traces())
    }

    /// Prints what the kernel programs logged (--debug-kernel) since the last call.
    pub fn print_kernel_log(&mut self) {
        if let Some(log) = &mut self.kernel_log {
            log.print();
        }
    }

    /// Forgets the stored tuples of connections that conntrack has dropped.
    pub fn forget_ended_connections(&mut self) -> Result<()> {
        self.tuples.forget_ended()
    }

    /// What --per-connection held back in the kernel: (events, packets).
    pub fn held_back(&self) -> (u64, u64) {
        let total = |index: u32| -> u64 {
            self.hidden
                .get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        (total(HIDDEN_EVENTS), total(HIDDEN_PACKETS))
    }

    /// Where `filter`'s verdicts go to the kernel (loaded with [`LoadOptions::expression`]).
    pub fn take_verdicts(&mut self, filter: Filter) -> Result<Verdicts> {
        Verdicts::take(&mut self.ebpf, filter)
    }

    /// The ring buffer every program writes into.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self
            .ebpf
            .take_map(EVENTS_MAP)
            .context("the programs have no event ring buffer")?;
        Ok(RingBuf::try_from(map)?)
    }

    /// Events each probe point could not deliver because the ring buffer was full.
    pub fn lost(&self) -> Vec<(ProbePoint, u64)> {
        ProbePoint::ALL
            .into_iter()
            .filter_map(|p| {
                let total: u64 = self.lost.get(&(p as u32), 0).ok()?.iter().sum();
                (total > 0).then_some((p, total))
            })
            .collect()
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        // The kernel programs go first (links, then the object with its own links), so that
        // the kernel's deferred freeing of them runs while the slower cleanups below do.
        self.held.clear();
        // SAFETY: dropped once, here; nothing touches `ebpf` after.
        unsafe { ManuallyDrop::drop(&mut self.ebpf) };
        cleanup::remove_created_qdiscs();
        for collector in self.collectors.iter_mut().rev() {
            collector.detach();
        }
    }
}

/// Loads the target's addresses, published ports and namespaces into the in-kernel filter.
fn fill_filter(ebpf: &mut Ebpf, target: &Target) -> Result<()> {
    let mut set = TargetSet::default();
    let addresses: Vec<[u8; 16]> = target.addresses.iter().map(address_key).collect();
    set.n_addresses = fill_set(
        ebpf,
        TARGET_ADDRESSES_MAP,
        &addresses,
        &mut set.addresses,
        || format!("{} has {} addresses", target.label, addresses.len()),
    )?;
    let mut ports: Vec<u32> = target
        .published
        .iter()
        .flat_map(|p| {
            [
                port_key(p.protocol.0, p.host_port),
                port_key(p.protocol.0, p.container_port),
            ]
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    set.n_ports = fill_set(ebpf, TARGET_PORTS_MAP, &ports, &mut set.ports, || {
        format!("{} publishes {} ports", target.label, ports.len())
    })?;
    // Device hops: the host's namespace and the targets' (a container's own eth0).
    let mut namespaces = vec![netns::own_netns_inode()? as u32];
    for (_, path) in &target.namespaces {
        // A container that stopped since it was resolved has no namespace left to watch; the
        // next re-resolve (a second later) sees it gone or back with its new one.
        let Ok(inode) = netns::netns_inode(path).map(|i| i as u32) else {
            continue;
        };
        if !namespaces.contains(&inode) {
            namespaces.push(inode);
        }
    }
    set.n_netns = fill_set(ebpf, TARGET_NETNS_MAP, &namespaces, &mut set.netns, || {
        format!(
            "{} spans {} network namespaces",
            target.label,
            namespaces.len()
        )
    })?;
    let mut targets: Array<_, TargetSet> =
        Array::try_from(ebpf.map_mut(TARGETS_MAP).context("no target map")?)?;
    targets.set(0, set, 0)?;
    Ok(())
}

/// Puts `keys` into `array` when they fit, else, all of them, into the hash map `name` (which
/// keeps no other key either way); returns the count the kernel reads: past the array's size,
/// it looks in the map. `too_many` says what was refused past the map's size.
fn fill_set<K: aya::Pod + PartialEq>(
    ebpf: &mut Ebpf,
    name: &str,
    keys: &[K],
    array: &mut [K],
    too_many: impl Fn() -> String,
) -> Result<u32> {
    if keys.len() > MAX_LARGE_TARGET as usize {
        bail!(
            "{}; dockflow follows at most {MAX_LARGE_TARGET}",
            too_many()
        );
    }
    let fits = keys.len() <= array.len();
    let mut map: HashMap<_, K, u8> = HashMap::try_from(
        ebpf.map_mut(name)
            .with_context(|| format!("no {name} map"))?,
    )?;
    let stale: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| fits || !keys.contains(k))
        .collect();
    for key in stale {
        map.remove(&key)?;
    }
    if fits {
        array[..keys.len()].copy_from_slice(keys);
    } else {
        for key in keys {
            map.insert(key, 1, 0)?;
        }
    }
    Ok(keys.len() as u32)
}

/// The 16-byte form the kernel compares addresses in (IPv4 in the first four bytes).
fn address_key(address: &IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&v4.octets());
            key
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The program `name` as type `P`, loaded into the kernel with `load` (aya's program types each
/// have their own); a second call finds it loaded.
fn loaded_program<'a, P: 'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
    load: impl FnOnce(&mut P) -> Result<(), aya::programs::ProgramError>,
) -> Result<&'a mut P, ProbeError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog: &mut P = ebpf
        .program_mut(name)
        .ok_or_else(|| ProbeError::Refused(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(refused)?;
    match load(prog) {
        Ok(()) | Err(aya::programs::ProgramError::AlreadyLoaded) => Ok(prog),
        Err(e) => Err(refused(e)),
    }
}

/// Turns the kernel's refusal to load into one line a user can act on.
fn load_error(error: anyhow::Error) -> anyhow::Error {
    let text = format!("{error:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        anyhow!(
            "loading eBPF programs was refused: run dockflow as root (CAP_BPF and CAP_NET_ADMIN are needed)"
        )
    } else {
        anyhow!("loading eBPF programs failed: {text}")
    }
}

/// Formats an error chain on one line.
fn one_line(error: impl Into<anyhow::Error>) -> String {
    format!("{:#}", error.into())
}

/// The kernel's refusal, as a probe error.
fn refused(error: impl Into<anyhow::Error>) -> ProbeError {
    ProbeError::Refused(one_line(error))
}
