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

use crate::{
    conntrack::{IP_CT_ESTABLISHED, IP_CT_IS_REPLY, NFCT_INFOMASK},
    kmem::{self, offset},
};

#[repr(C)]
pub struct Skipped {
    skb: u64,
    nfct: u64,
    /// The verdict was [`settled`].
    settled: u64,
}

#[map(name = "SKIPPED")]
static SKIPPED: PerCpuArray<Skipped> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's entry (an inlined per-CPU array lookup).
#[inline(always)]
pub fn entry() -> Option<&'static mut Skipped> {
    // SAFETY: `p` points to this CPU's slot of a per-CPU array, valid for the program's run and
    // written by nothing else meanwhile.
    SKIPPED.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

impl Skipped {
    /// Whether the last verdict was "not wanted" for this skb and conntrack entry.
    #[inline(always)]
    pub fn holds(&self, skb: u64, nfct: u64) -> bool {
        self.skb == skb && self.nfct == nfct
    }

    /// Whether that verdict holds for every packet of its connection and direction.
    #[inline(always)]
    pub fn settled(&self) -> bool {
        self.settled != 0
    }

    /// Records a full evaluation's verdict.
    #[inline(always)]
    pub fn record(&mut self, skb: u64, nfct: u64, wanted: bool) {
        self.skb = if wanted { 0 } else { skb };
        self.nfct = nfct;
        self.settled = (!wanted && settled(nfct)) as u64;
    }
}

/// enum ip_conntrack_status: IPS_SRC_NAT_DONE_BIT 7, IPS_DST_NAT_DONE_BIT 8. Both set once the
/// connection's NAT bindings (or its null bindings) are fixed.
const IPS_NAT_DONE_MASK: u64 = 1 << 7 | 1 << 8;

/// Whether a "not wanted" verdict for a packet with this `nfct` stays true for the rest of the
/// packet's way through the host, across hooks and NAT: it is established (IP_CT_ESTABLISHED
/// or ..._REPLY; not NEW, and not a RELATED ICMP error, whose outer header is not the
/// connection's) and its entry's NAT bindings are fixed, so from here on NAT only rewrites its
/// headers to the entry's tuples, which the filter looked at along with the headers.
#[inline(always)]
pub fn settled(nfct: u64) -> bool {
    let ct = nfct & !NFCT_INFOMASK;
    let info = nfct & NFCT_INFOMASK;
    ct != 0
        && (info == IP_CT_ESTABLISHED || info == IP_CT_IS_REPLY)
        && kmem::read::<u64>(ct, offset!(ct_status))
            .is_some_and(|status| status & IPS_NAT_DONE_MASK == IPS_NAT_DONE_MASK)
}
