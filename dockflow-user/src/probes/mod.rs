//! Loading the kernel programs and attaching them, one module per probe family.
//!
//! Each family reports, per attach point, whether the kernel took it; the caller prints that once
//! so a user on a restrictive kernel knows what they are (not) seeing. Everything attached is
//! owned by [`Probes`] and detached when it is dropped, on every exit path.

mod cleanup;
mod tc;

use anyhow::{Context as _, Result, anyhow};
use aya::{Ebpf, maps::{MapData, RingBuf}};
use dockflow_common::EVENTS_MAP;

use crate::target::Target;

/// The compiled kernel programs, embedded so the binary is self-contained.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dockflow-ebpf"));

/// Whether one attach point was taken by the kernel.
#[derive(Clone, Debug)]
pub struct Attachment {
    /// "tc ingress on veth1234", ...
    pub point: String,
    pub error: Option<String>,
}

/// One family of probes (tc, netfilter, tracepoints, ...).
trait ProbeFamily {
    /// Loads and attaches this family's programs for `target`; one [`Attachment`] per point.
    fn attach(&self, ebpf: &mut Ebpf, target: &Target) -> Vec<Attachment>;
}

/// Loaded and attached programs; dropping this detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    pub attachments: Vec<Attachment>,
}

impl Probes {
    pub fn attach(target: &Target) -> Result<Self> {
        let mut ebpf = Ebpf::load(PROGRAMS).map_err(|e| load_error(e.into()))?;
        let families: [&dyn ProbeFamily; 1] = [&tc::Tc];
        let attachments = families.iter().flat_map(|f| f.attach(&mut ebpf, target)).collect::<Vec<_>>();
        if attachments.iter().all(|a| a.error.is_some()) {
            let first = attachments.first().and_then(|a| a.error.clone()).unwrap_or_default();
            return Err(anyhow!("the kernel refused every probe ({first})"));
        }
        Ok(Self { ebpf, attachments })
    }

    /// The ring buffer every program writes into.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let map = self.ebpf.take_map(EVENTS_MAP).context("the programs have no event ring buffer")?;
        Ok(RingBuf::try_from(map)?)
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        // Links detach when `ebpf` drops right after this; qdiscs we added must go explicitly.
        cleanup::remove_created_qdiscs();
    }
}

/// Turns the kernel's refusal to load into one line a user can act on.
fn load_error(error: anyhow::Error) -> anyhow::Error {
    let text = format!("{error:#}");
    if text.contains("Operation not permitted") || text.contains("EPERM") {
        anyhow!("loading eBPF programs was refused: run dockflow as root (CAP_BPF and CAP_NET_ADMIN are needed)")
    } else {
        anyhow!("loading eBPF programs failed: {text}")
    }
}

/// Formats an error chain on one line.
fn one_line(error: impl Into<anyhow::Error>) -> String {
    format!("{:#}", error.into())
}
