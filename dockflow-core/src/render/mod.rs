//! Turning events and packet paths into text for people or JSON for tools (one object per
//! line). Rendering never touches the kernel.

pub mod merged;
pub mod paths;
pub mod summary;
pub mod svg;

use std::{fmt::Write as _, io::IsTerminal as _};

/// Whether to colour the output: on a terminal, unless NO_COLOR is set (https://no-color.org).
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub fn for_stdout() -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            color: !no_color && std::io::stdout().is_terminal(),
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

use crate::model::{
    ArpOp, Conntrack, Event, NetfilterHop, Packet, PointNames as _, Tuple, endpoint,
    priority_words, topology::InterfaceNames,
};

/// Renders single events (--raw) relative to the first timestamp seen, with interface names.
pub struct Renderer {
    json: bool,
    first_ts: Option<u64>,
    interfaces: InterfaceNames,
    /// Reused for each event's JSON line.
    scratch: Vec<u8>,
}

impl Renderer {
    pub fn new(json: bool, interfaces: InterfaceNames) -> Self {
        Self::starting_at(json, interfaces, None)
    }

    /// A renderer whose text times count from `first_ts` (else from the first event it sees).
    pub fn starting_at(json: bool, interfaces: InterfaceNames, first_ts: Option<u64>) -> Self {
        Self {
            json,
            first_ts,
            interfaces,
            scratch: Vec::new(),
        }
    }

    /// Writes one event's line to `out`: JSON straight to the writer (no intermediate String
    /// or Value: this is the hot path of --raw --json), text through [`Renderer::render`].
    pub fn write_line(
        &mut self,
        event: &Event,
        out: &mut impl std::io::Write,
    ) -> std::io::Result<()> {
        if !self.json {
            return writeln!(out, "{}", visible(&self.render(event)));
        }
        // The whole line in memory, handed over in one write (the writer may be a trait object,
        // and serde_json writes token by token). The interface name goes in as the first member,
        // the event's own opening brace overwritten by the comma after it.
        let line = &mut self.scratch;
        line.clear();
        line.extend_from_slice(b"{\"interface\":");
        serde_json::to_writer(
            &mut *line,
            &self.interfaces.name(event.netns, event.ifindex),
        )
        .expect("strings serialize");
        let body = line.len();
        serde_json::to_writer(&mut *line, event).expect("events serialize");
        line[body] = b',';
        line.push(b'\n');
        out.write_all(line)
    }

    pub fn render(&mut self, event: &Event) -> String {
        if self.json {
            let mut line = Vec::new();
            self.write_line(event, &mut line)
                .expect("writing to memory");
            line.pop();
            return String::from_utf8(line).expect("JSON is UTF-8");
        }
        let first = *self.first_ts.get_or_insert(event.ts_ns);
        let elapsed = event.ts_ns.saturating_sub(first) as f64 / 1e9;
        let (what, place, priority) = match &event.netfilter {
            Some(nf) => self.netfilter_place(nf, event.netns),
            None => (
                event.probe.name().to_string(),
                self.interfaces.name(event.netns, event.ifindex),
                String::new(),
            ),
        };
        let mut line = format!("{elapsed:>10.6}  {what:<16}  {place:<24} {priority:<6} ");
        match &event.packet {
            Some(packet) => line.push_str(&packet_summary(packet)),
            None => line.push_str("non-IP frame"),
        }
        if let Some(ct) = &event.conntrack {
            let _ = write!(line, "  {}", conntrack_summary(ct));
        }
        if let Some(drop) = &event.drop {
            let _ = write!(line, "  DROPPED: {}", drop.reason);
        }
        if let Some(nf) = event.netfilter.as_ref().filter(|nf| nf.from_bridge) {
            let _ = write!(
                line,
                "  (run from the bridge by {})",
                nf.okfn.as_deref().unwrap_or("br_netfilter")
            );
        }
        line
    }

    /// ("ipv4 prerouting", "docker1>-", "-99"): hook, in>out devices, priority.
    fn netfilter_place(&self, nf: &NetfilterHop, netns: Option<u32>) -> (String, String, String) {
        let dev = |i: Option<u32>| i.map_or("-".to_string(), |i| self.interfaces.name(netns, i));
        (
            format!("{} {}", nf.family, nf.hook),
            format!("{}>{}", dev(nf.in_ifindex), dev(nf.out_ifindex)),
            nf.priority.map_or_else(String::new, priority_words),
        )
    }
}

/// Text from outside dockflow (nft rule text and comments, container, network and interface
/// names) as a terminal may show it: control characters (an ESC sequence in a rule's comment,
/// say) made visible as escapes instead of reaching the terminal. JSON escapes them itself.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// "udp 10.199.0.2:40000 -> 172.20.0.2:1812 ttl 63 id 10848 len 42"; ARP as tcpdump says it.
pub fn packet_summary(p: &Packet) -> String {
    match p.arp {
        Some(_) if p.src == p.dst => return format!("arp announcement {} (gratuitous)", p.src),
        Some(ArpOp::Request) => return format!("arp who-has {} tell {}", p.dst, p.src),
        Some(ArpOp::Reply) => return format!("arp reply {} is-at its MAC, to {}", p.src, p.dst),
        None => {}
    }
    let mut s = format!(
        "{} {} -> {} ttl {} id {} len {}",
        p.protocol_name(),
        endpoint(p.src, p.sport),
        endpoint(p.dst, p.dport),
        p.ttl,
        p.ip_id,
        p.len
    );
    if let Some(flags) = p.tcp_flags {
        let _ = write!(s, " [{}]", tcp_flag_names(flags));
    }
    s
}

fn tuple_summary(t: &Tuple) -> String {
    format!(
        "{} -> {}",
        endpoint(t.src, Some(t.sport)),
        endpoint(t.dst, Some(t.dport))
    )
}

/// "ct new original [dst_nat] orig 10.199.0.2:40000 -> 10.199.0.1:1812 reply 172.20.0.2:1812 -> 10.199.0.2:40000"
pub fn conntrack_summary(ct: &Conntrack) -> String {
    let nat: Vec<&str> = ct
        .status
        .names()
        .into_iter()
        .filter(|s| *s == "src_nat" || *s == "dst_nat")
        .collect();
    let mut s = format!("ct {} {}", ct.state, ct.direction);
    if !nat.is_empty() {
        let _ = write!(s, " [{}]", nat.join(","));
    }
    let _ = write!(
        s,
        " orig {} reply {}",
        tuple_summary(&ct.original),
        tuple_summary(&ct.reply)
    );
    s
}

fn tcp_flag_names(flags: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let names: Vec<&str> = NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProbePoint;

    fn udp_event(ts_ns: u64) -> Event {
        Event {
            ts_ns,
            skb_id: None,
            probe: ProbePoint::TcIngress,
            ifindex: 12,
            netns: None,
            packet: Some(Packet {
                src: "172.20.0.2".parse().unwrap(),
                dst: "10.199.0.2".parse().unwrap(),
                protocol: crate::model::IpProto::UDP,
                sport: Some(1812),
                dport: Some(40000),
                ttl: 64,
                ip_id: 64789,
                len: 56,
                tcp_flags: None,
                arp: None,
            }),
            netfilter: None,
            conntrack: None,
            drop: None,
            capture: None,
            outer: None,
            sample: false,
        }
    }

    fn names() -> InterfaceNames {
        InterfaceNames::from_entries(
            1,
            [
                ((1, 12), "vethcccc".to_string()),
                ((1, 3), "docker1".to_string()),
                ((9, 2), "radius:eth0".to_string()),
            ],
        )
    }

    #[test]
    fn interfaces_are_named_within_their_namespace() {
        let n = names();
        assert_eq!(n.name(None, 12), "vethcccc");
        assert_eq!(n.name(Some(1), 3), "docker1");
        assert_eq!(n.name(Some(9), 2), "radius:eth0");
        assert_eq!(n.name(Some(9), 3), "an interface in namespace 9 (index 3)");
        assert_eq!(n.name(Some(1), 77), "a host interface (index 77)");
    }

    #[test]
    fn text_lines_show_time_probe_interface_and_headers() {
        let mut r = Renderer::new(false, names());
        r.render(&udp_event(1_000));
        let line = r.render(&udp_event(501_000));
        assert_eq!(
            line,
            "  0.000500  tc ingress        vethcccc                        udp 172.20.0.2:1812 -> 10.199.0.2:40000 ttl 64 id 64789 len 56"
        );
    }

    #[test]
    fn netfilter_lines_show_hook_devices_priority_conntrack_and_bridge_origin() {
        let mut event = udp_event(0);
        event.probe = ProbePoint::Netfilter;
        event.netfilter = Some(NetfilterHop {
            family: crate::model::Family::Ipv4,
            hook: crate::model::Hook::Prerouting,
            hook_number: 0,
            priority: Some(i32::MIN + 1),
            slot: crate::model::NfSlot::First,
            in_ifindex: Some(3),
            out_ifindex: None,
            okfn: Some("br_nf_pre_routing_finish".into()),
            from_bridge: true,
        });
        let line = Renderer::new(false, names()).render(&event);
        assert!(
            line.contains("ipv4 prerouting   docker1>-                first  udp"),
            "{line}"
        );
        assert!(
            line.ends_with("(run from the bridge by br_nf_pre_routing_finish)"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_carry_the_interface_name() {
        let mut r = Renderer::new(true, names());
        let v: serde_json::Value = serde_json::from_str(&r.render(&udp_event(7))).unwrap();
        assert_eq!(v["interface"], "vethcccc");
        assert_eq!(v["probe"], "tc_ingress");
        assert_eq!(v["packet"]["dport"], 40000);
    }

    #[test]
    fn tcp_flags_are_named() {
        assert_eq!(tcp_flag_names(0x12), "SYN,ACK");
    }
}

#[cfg(test)]
mod visible_tests {
    use super::*;
    use crate::path::tests_support::seed_paths;

    /// An nft rule whose comment holds an ESC sequence, and a container name with one: the
    /// text output shows escapes, never the raw control characters; JSON keeps them escaped.
    #[test]
    fn text_from_outside_reaches_the_terminal_with_control_characters_made_visible() {
        assert_eq!(visible("plain"), "plain");
        assert_eq!(visible("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        let (topology, mut paths) = seed_paths();
        let request = &mut paths[0];
        request.ends.dst = Some("evil\u{1b}]0;owned\u{7}".into());
        request.rules = vec![crate::model::RuleTrace {
            ts_ns: 1_150,
            trace_id: 1,
            family: crate::model::NftFamily::Ip,
            table: "nat".into(),
            chain: "DOCKER".into(),
            hook: Some(crate::model::Hook::Prerouting),
            kind: crate::model::TraceKind::Rule,
            handle: Some(14),
            rule: Some("udp dport 1812 dnat to 172.20.0.2:1812 comment \"\u{1b}[31mred\"".into()),
            verdict: crate::model::Verdict::Accept,
            packet: Some(request.packet.clone()),
        }];
        crate::path::rules::place(request);
        let plain = Style { color: false };
        let block = paths::packet_block(request, &topology, &plain);
        assert!(
            !block.contains('\u{1b}') && !block.contains('\u{7}'),
            "{block:?}"
        );
        assert!(block.contains("comment \"\\u{1b}[31mred\""), "{block}");
        let explanation = crate::path::explain::explain(1, Some(request), None);
        let told = paths::explanation_block(&explanation, &plain);
        assert!(!told.contains('\u{1b}'), "{told:?}");
        assert!(told.contains("\\u{1b}[31mred"), "{told}");
        let json = serde_json::to_string(&*request).unwrap();
        assert!(
            !json.contains('\u{1b}') && json.contains("\\u001b[31mred"),
            "{json}"
        );
    }
}
