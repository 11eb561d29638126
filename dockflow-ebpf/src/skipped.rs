//! Per CPU, the last packet a probe found not to be the target's: most packets on a host are
//! not, and one forwarded packet crosses ten netfilter slots and a few device tracepoints, so
//! where nothing between two probes can change the filter's answer, the second reuses it.
//!
//! The entry names the packet by its skb address and conntrack entry. An skb address names one
//! live packet; every full evaluation on the CPU overwrites the entry, so while a packet is
//! being processed the entry is either its own or another packet's (a mismatch, decided
//! afresh). Which probes may reuse it, and when, is each family's call: see netfilter.rs and
//! tracepoints.rs.

use aya_ebpf::{macros::map, maps::PerCpuArray};

#[repr(C)]
pub struct Skipped {
    skb: u64,
    nfct: u64,
    /// The conntrack entry's NAT bindings were complete when the verdict was taken.
    nat_final: u64,
}

#[map(name = "SKIPPED")]
static SKIPPED: PerCpuArray<Skipped> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's entry (an inlined per-CPU array lookup).
#[inline(always)]
pub fn entry() -> Option<&'static mut Skipped> {
    SKIPPED.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

impl Skipped {
    /// Whether the last verdict was "not wanted" for this skb and conntrack entry.
    #[inline(always)]
    pub fn holds(&self, skb: u64, nfct: u64) -> bool {
        self.skb == skb && self.nfct == nfct
    }

    /// Whether that verdict was taken with the NAT bindings complete.
    #[inline(always)]
    pub fn nat_final(&self) -> bool {
        self.nat_final != 0
    }

    /// Records a full evaluation's verdict.
    #[inline(always)]
    pub fn record(&mut self, skb: u64, nfct: u64, wanted: bool, nat_final: bool) {
        self.skb = if wanted { 0 } else { skb };
        self.nfct = nfct;
        self.nat_final = (!wanted && nat_final) as u64;
    }
}
