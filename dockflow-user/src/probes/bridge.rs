//! Bridge functions and nf_hook_slow through kprobes: the L2 path as the bridge code walks it
//! (frame enters a port, forwarded or flooded, passed up, sent by the bridge device) and the
//! bridge-family netfilter hooks, which BPF netfilter links cannot attach to (EAFNOSUPPORT).
//!
//! kprobes rather than fentry: bridge and nf_tables are modules on Debian and Ubuntu, and aya
//! 0.14 cannot fentry-attach to module functions (it passes no module BTF object fd).

use aya::{Ebpf, programs::KProbe};

use super::{Attached, Attachment, ProbeFamily, loaded_program, one_line};
use crate::watch::Target;

pub struct Bridge;

const KPROBES: [(&str, &str); 5] = [
    ("df_br_handle_frame", "br_handle_frame"),
    ("df_br_forward", "br_forward"),
    ("df_br_pass_up", "br_pass_frame_up"),
    ("df_br_dev_xmit", "br_dev_xmit"),
    ("df_nf_hook_slow", "nf_hook_slow"),
];

impl ProbeFamily for Bridge {
    fn attach(&self, ebpf: &mut Ebpf, _target: &Target) -> Attached {
        let mut attached = Attached::default();
        let mut refused = Vec::new();
        for (program, function) in KPROBES {
            let result = loaded_program(ebpf, program, KProbe::load)
                .and_then(|prog| prog.attach(function, 0).map(drop).map_err(one_line));
            match result {
                Ok(()) => attached.attachments.push(Attachment {
                    point: format!("kprobe {function}"),
                    error: None,
                }),
                Err(e) => refused.push((function, e)),
            }
        }
        if let Some((_, reason)) = refused.first() {
            let reason = if reason.contains("kprobe/type") {
                "this kernel has no kprobes (CONFIG_KPROBES is off)"
            } else {
                reason
            };
            let functions: Vec<&str> = refused.iter().map(|(f, _)| *f).collect();
            attached.attachments.push(Attachment {
                point: format!("kprobe {}", functions.join(", ")),
                error: Some(format!("{reason}; the L2 hops come from tc on the bridge ports and the bridge device instead")),
            });
        }
        attached
    }
}
