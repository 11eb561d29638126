//! tc (tcx on kernels >= 6.6, clsact filters before that) on the watched interfaces.

use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, SchedClassifierLinkId, TcAttachOptions},
    },
    util::KernelVersion,
};
use dockflow_common::VXLAN_PORT;

use super::{Attached, Collector, Family, loaded_program, refused};
use crate::watch::{Interface, InterfaceRole, Target, netns};

/// The tc collector keeps each attachment's link by interface (its label, which names its
/// namespace too), so that the links of an interface the target left (a removed or restarted
/// container's veth) are closed then, not at exit: on a network whose containers come and go
/// they would pile up.
#[derive(Default)]
pub struct Tc {
    links: Vec<(String, &'static str, SchedClassifierLinkId)>,
}

const PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("df_tc_ingress", TcAttachType::Ingress, "ingress"),
    ("df_tc_egress", TcAttachType::Egress, "egress"),
];

/// On the node's own interface: only the VXLAN packets between nodes, read inside.
const TUNNEL_PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("df_tunnel_in", TcAttachType::Ingress, "ingress"),
    ("df_tunnel_out", TcAttachType::Egress, "egress"),
];

fn programs_for(iface: &Interface) -> [(&'static str, TcAttachType, &'static str); 2] {
    match iface.role {
        InterfaceRole::Underlay { .. } => TUNNEL_PROGRAMS,
        _ => PROGRAMS,
    }
}

/// The UDP port of the VXLAN packets between nodes, for the tunnel programs (a load-time
/// constant: a swarm's data path port is set when it is made).
pub fn vxlan_port(target: &Target) -> u16 {
    target
        .interfaces
        .iter()
        .find_map(|i| match i.role {
            InterfaceRole::Underlay { vxlan_port } => Some(vxlan_port),
            _ => None,
        })
        .unwrap_or(VXLAN_PORT)
}

/// DOCKFLOW_TC_ATTACH=netlink forces clsact filters even where tcx exists (to exercise the
/// pre-6.6 path, e.g. its crash cleanup).
fn use_netlink() -> bool {
    std::env::var("DOCKFLOW_TC_ATTACH").is_ok_and(|v| v == "netlink")
        || KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0))
}

impl Collector for Tc {
    fn attach(&mut self, ebpf: &mut Ebpf, target: &Target) -> Attached {
        let mut out = Attached::default();
        for iface in &target.interfaces {
            let removed = super::cleanup::remove_stale_tc_filters(iface);
            if removed > 0 {
                out.notes.push(format!(
                    "removed {removed} tc filters on {} left by an earlier run",
                    iface.label()
                ));
            }
        }
        let netlink = use_netlink();
        for iface in &target.interfaces {
            let only = match iface.role {
                InterfaceRole::Underlay { vxlan_port } => {
                    format!(" (VXLAN between nodes, UDP port {vxlan_port})")
                }
                _ => String::new(),
            };
            for (program, attach_type, direction) in programs_for(iface) {
                let point = format!("tc {direction} on {}{only}", iface.label());
                let result =
                    loaded_program(ebpf, program, SchedClassifier::load).and_then(|prog| {
                        let mut attach = || {
                            if netlink {
                                ensure_clsact(iface);
                                let options = TcAttachOptions::Netlink(NlOptions::default());
                                prog.attach_with_options(&iface.name, attach_type, options)
                            } else {
                                prog.attach(&iface.name, attach_type)
                            }
                        };
                        // A device in another namespace (an overlay's) is found by name there.
                        let link = match &iface.namespace {
                            Some(ns) => netns::within(&ns.path, attach).map_err(refused)?,
                            None => attach(),
                        };
                        let link = link.map_err(refused)?;
                        self.links.push((iface.label(), program, link));
                        Ok(())
                    });
                out.point(Family::Tc, point, result);
            }
        }
        out
    }

    /// A restarted container has a new veth; the old one went with the old container: its
    /// links are closed (detaching fails quietly where the device is gone already).
    fn retarget(&mut self, ebpf: &mut Ebpf, old: &Target, new: &Target) -> Attached {
        let (kept, left): (Vec<_>, Vec<_>) = std::mem::take(&mut self.links)
            .into_iter()
            .partition(|(iface, _, _)| new.interfaces.iter().any(|i| i.label() == *iface));
        self.links = kept;
        for (_, program, link) in left {
            if let Ok(prog) = loaded_program(ebpf, program, SchedClassifier::load) {
                let _ = prog.detach(link);
            }
        }
        let added = Target {
            interfaces: new
                .interfaces
                .iter()
                .filter(|i| !old.interfaces.contains(i))
                .cloned()
                .collect(),
            ..new.clone()
        };
        self.attach(ebpf, &added)
    }
}

/// Before tcx (kernel < 6.6) filters hang off a clsact qdisc. One we add is ours to remove at exit;
/// one that was already there (EEXIST) is left alone. Runs in the interface's namespace.
fn ensure_clsact(iface: &Interface) {
    if tc::qdisc_add_clsact(&iface.name).is_ok() {
        super::cleanup::remember_clsact(iface);
    }
}
