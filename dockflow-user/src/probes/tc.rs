//! tc (tcx on kernels >= 6.6, clsact filters before that) on the watched interfaces.

use aya::{
    Ebpf,
    programs::{
        SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions},
    },
    util::KernelVersion,
};

use super::{Attached, Collector, Family, loaded_program, refused};
use crate::watch::Target;

pub struct Tc;

const PROGRAMS: [(&str, TcAttachType, &str); 2] = [
    ("df_tc_ingress", TcAttachType::Ingress, "ingress"),
    ("df_tc_egress", TcAttachType::Egress, "egress"),
];

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
            let removed = super::cleanup::remove_stale_tc_filters(&iface.name);
            if removed > 0 {
                out.notes.push(format!(
                    "removed {removed} tc filters on {} left by an earlier run",
                    iface.name
                ));
            }
        }
        let netlink = use_netlink();
        for (program, attach_type, direction) in PROGRAMS {
            for iface in &target.interfaces {
                let point = format!("tc {direction} on {}", iface.name);
                let result =
                    loaded_program(ebpf, program, SchedClassifier::load).and_then(|prog| {
                        if netlink {
                            ensure_clsact(&iface.name);
                            let options = TcAttachOptions::Netlink(NlOptions::default());
                            prog.attach_with_options(&iface.name, attach_type, options)
                                .map(drop)
                                .map_err(refused)
                        } else {
                            prog.attach(&iface.name, attach_type)
                                .map(drop)
                                .map_err(refused)
                        }
                    });
                out.point(Family::Tc, point, result);
            }
        }
        out
    }

    /// A restarted container has a new veth; the old one went with the old container.
    fn retarget(&mut self, ebpf: &mut Ebpf, old: &Target, new: &Target) -> Attached {
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
/// one that was already there (EEXIST) is left alone.
fn ensure_clsact(iface: &str) {
    if tc::qdisc_add_clsact(iface).is_ok() {
        super::cleanup::remember_clsact(iface);
    }
}
