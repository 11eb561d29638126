//! Raw tracepoints: skb:kfree_skb (every dropped packet with its drop reason), and the device
//! hops net:netif_receive_skb and net:net_dev_queue. net:net_dev_xmit is left out on purpose: it
//! fires after the driver took the skb, which may already be freed and reused by then.

use aya::{Ebpf, programs::RawTracePoint};

use super::{Attached, Attachment, ProbeFamily, loaded_program, one_line};
use crate::target::Target;

pub struct Tracepoints;

const TRACEPOINTS: [(&str, &str, &str); 3] = [
    ("df_kfree_skb", "skb", "kfree_skb"),
    ("df_netif_rx", "net", "netif_receive_skb"),
    ("df_dev_queue", "net", "net_dev_queue"),
];

impl ProbeFamily for Tracepoints {
    fn attach(&self, ebpf: &mut Ebpf, _target: &Target) -> Attached {
        let mut attached = Attached::default();
        for (program, category, name) in TRACEPOINTS {
            let result = loaded_program::<RawTracePoint>(ebpf, program)
                .and_then(|prog| prog.attach(name).map(drop).map_err(one_line));
            attached.attachments.push(Attachment { point: format!("tracepoint {category}:{name}"), error: result.err() });
        }
        attached
    }
}
