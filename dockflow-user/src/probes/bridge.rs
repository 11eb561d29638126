//! Bridge functions and nf_hook_slow through kprobes: the L2 path as the bridge code walks it
//! (frame enters a port, forwarded or flooded, passed up, sent by the bridge device) and the
//! bridge-family netfilter hooks, which BPF netfilter links cannot attach to (EAFNOSUPPORT).
//!
//! kprobes rather than fentry: bridge and nf_tables are modules on Debian and Ubuntu, and aya
//! 0.14 cannot fentry-attach to module functions (it passes no module BTF object fd).

use aya::{Ebpf, programs::KProbe};

use super::{Attached, Collector, Family, ProbeError, loaded_program, refused};
use crate::watch::Target;

pub struct Bridge;

const KPROBES: [(&str, &str); 5] = [
    ("df_br_handle_frame", "br_handle_frame"),
    ("df_br_forward", "br_forward"),
    ("df_br_pass_up", "br_pass_frame_up"),
    ("df_br_dev_xmit", "br_dev_xmit"),
    ("df_nf_hook_slow", "nf_hook_slow"),
];

/// Where the kernel lists the kprobe PMU; absent without CONFIG_KPROBES.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

impl Collector for Bridge {
    fn attach(&mut self, ebpf: &mut Ebpf, _target: &Target) -> Attached {
        let mut attached = Attached::default();
        let mut not_attached = Vec::new();
        for (program, function) in KPROBES {
            let result = if std::path::Path::new(KPROBE_PMU).exists() {
                loaded_program(ebpf, program, KProbe::load)
                    .and_then(|prog| prog.attach(function, 0).map(drop).map_err(refused))
            } else {
                Err(ProbeError::Unsupported(
                    "this kernel has no kprobes (CONFIG_KPROBES is off)".into(),
                ))
            };
            match result {
                Ok(()) => attached.point(Family::Bridge, format!("kprobe {function}"), Ok(())),
                Err(e) => not_attached.push((function, e)),
            }
        }
        // One line for all refused: they are refused for the same reason.
        if let Some((_, error)) = not_attached.first() {
            let functions: Vec<&str> = not_attached.iter().map(|(f, _)| *f).collect();
            let instead =
                "the L2 hops come from tc on the bridge ports and the bridge device instead";
            let error = match error {
                ProbeError::Unsupported(why) => {
                    ProbeError::Unsupported(format!("{why}; {instead}"))
                }
                other => ProbeError::Refused(format!("{other}; {instead}")),
            };
            attached.point(
                Family::Bridge,
                format!("kprobe {}", functions.join(", ")),
                Err(error),
            );
        }
        attached
    }
}
