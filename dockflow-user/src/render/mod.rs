//! Turning events into text for people (one line per event) or JSON for tools (one object per
//! line). Rendering never touches the kernel.

use std::fmt::Write as _;

use crate::event::{Event, Packet};

/// Renders events relative to the first timestamp seen and with interface names resolved.
pub struct Renderer<F: Fn(u32) -> Option<String>> {
    json: bool,
    first_ts: Option<u64>,
    interface_name: F,
}

impl<F: Fn(u32) -> Option<String>> Renderer<F> {
    pub fn new(json: bool, interface_name: F) -> Self {
        Self { json, first_ts: None, interface_name }
    }

    pub fn render(&mut self, event: &Event) -> String {
        if self.json {
            let mut value = serde_json::to_value(event).expect("events serialize");
            if let Some(name) = (self.interface_name)(event.ifindex) {
                value["interface"] = name.into();
            }
            return value.to_string();
        }
        let first = *self.first_ts.get_or_insert(event.ts_ns);
        let elapsed = event.ts_ns.saturating_sub(first) as f64 / 1e9;
        let iface = (self.interface_name)(event.ifindex).unwrap_or_else(|| format!("if{}", event.ifindex));
        let mut line = format!("{elapsed:>10.6}  {:<10}  {iface:<15}", event.probe.name());
        match &event.packet {
            Some(packet) => line.push_str(&packet_summary(packet)),
            None => line.push_str("non-IP frame"),
        }
        line
    }
}

/// "udp 10.199.0.2:40000 -> 172.20.0.2:1812 ttl 63 id 10848 len 42"
pub fn packet_summary(p: &Packet) -> String {
    let endpoint = |addr: &std::net::IpAddr, port: Option<u16>| match (addr, port) {
        (std::net::IpAddr::V6(a), Some(port)) => format!("[{a}]:{port}"),
        (a, Some(port)) => format!("{a}:{port}"),
        (a, None) => a.to_string(),
    };
    let mut s = format!(
        "{} {} -> {} ttl {} id {} len {}",
        p.protocol_name(),
        endpoint(&p.src, p.sport),
        endpoint(&p.dst, p.dport),
        p.ttl,
        p.ip_id,
        p.len
    );
    if let Some(flags) = p.tcp_flags {
        let _ = write!(s, " [{}]", tcp_flag_names(flags));
    }
    s
}

fn tcp_flag_names(flags: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let names: Vec<&str> = NAMES.iter().enumerate().filter(|(bit, _)| flags & (1 << bit) != 0).map(|(_, n)| *n).collect();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Probe;

    fn udp_event(ts_ns: u64) -> Event {
        Event {
            ts_ns,
            skb_id: None,
            probe: Probe::TcIngress,
            ifindex: 12,
            packet: Some(Packet {
                src: "172.20.0.2".parse().unwrap(),
                dst: "10.199.0.2".parse().unwrap(),
                protocol: 17,
                sport: Some(1812),
                dport: Some(40000),
                ttl: 64,
                ip_id: 64789,
                len: 56,
                tcp_flags: None,
            }),
        }
    }

    #[test]
    fn text_lines_show_time_probe_interface_and_headers() {
        let mut r = Renderer::new(false, |i| (i == 12).then(|| "vethcccc".to_string()));
        r.render(&udp_event(1_000));
        let line = r.render(&udp_event(501_000));
        assert_eq!(
            line,
            "  0.000500  tc ingress  vethcccc       udp 172.20.0.2:1812 -> 10.199.0.2:40000 ttl 64 id 64789 len 56"
        );
    }

    #[test]
    fn json_lines_carry_the_interface_name() {
        let mut r = Renderer::new(true, |_| Some("docker1".to_string()));
        let v: serde_json::Value = serde_json::from_str(&r.render(&udp_event(7))).unwrap();
        assert_eq!(v["interface"], "docker1");
        assert_eq!(v["probe"], "tc_ingress");
        assert_eq!(v["packet"]["dport"], 40000);
    }

    #[test]
    fn tcp_flags_are_named() {
        assert_eq!(tcp_flag_names(0x12), "SYN,ACK");
    }
}
