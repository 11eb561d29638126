//! BTF-typed tracepoints (tp_btf), two families: drops (skb:kfree_skb, every dropped packet
//! with its drop reason; runs only when the kernel frees a packet) and devices (the hops
//! net:netif_receive_skb and net:net_dev_queue; they run for every packet on every interface,
//! and skip at once those on devices outside the host's and the target's namespaces).
//! net:net_dev_xmit is left out on purpose: it fires after the driver took the skb, which may
//! already be freed and reused by then.

use aya::{Btf, Ebpf, programs::BtfTracePoint};

use super::{Attached, Collector, Family, loaded_program, refused};
use crate::watch::Target;

/// A set of tracepoints: the family, and (program, category, tracepoint) each.
pub struct Tracepoints(
    Family,
    &'static [(&'static str, &'static str, &'static str)],
);

pub const DROPS: Tracepoints = Tracepoints(Family::Drops, &[("df_kfree_skb", "skb", "kfree_skb")]);
pub const DEVICES: Tracepoints = Tracepoints(
    Family::Devices,
    &[
        ("df_netif_rx", "net", "netif_receive_skb"),
        ("df_dev_queue", "net", "net_dev_queue"),
    ],
);

impl Collector for Tracepoints {
    fn attach(&mut self, ebpf: &mut Ebpf, _target: &Target) -> Attached {
        let mut attached = Attached::default();
        let btf = Btf::from_sys_fs().map_err(refused);
        for &(program, category, name) in self.1 {
            let result = btf
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|btf| {
                    loaded_program(ebpf, program, |p: &mut BtfTracePoint| p.load(name, btf))
                })
                .and_then(|prog| prog.attach().map(drop).map_err(refused));
            attached.point(self.0, format!("tracepoint {category}:{name}"), result);
        }
        attached
    }
}
