//! Filter expressions in the words of pcap-filter (tcpdump's): `udp port 1812`,
//! `host 10.199.0.2 and tcp`, `not (src net 172.20.0.0/16 or arp)`.
//!
//! Supported: `host`, `net` (CIDR), `port`, `portrange`, each with an optional `src` or `dst`;
//! `tcp`, `udp`, `icmp`, `icmp6`, `arp`, `ip`, `ip6`, also in front of a port (`tcp port 80`);
//! `and`/`&&`, `or`/`||`, `not`/`!`, parentheses. As in pcap-filter, `and` binds tighter
//! than `or`.
//!
//! A packet matches when any of its forms does: its headers at every hop (before and after NAT),
//! and the conntrack tuples of its direction (what it looked like before NAT rewrote it, and
//! after). So `udp port 1812` matches a RADIUS reply whether its source port is 1812 (in the
//! container) or the published one (after the reverse NAT).

mod protocols;

pub use self::protocols::Possible;

use std::{fmt, net::IpAddr};

use dockflow_common::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP};

use crate::model::{Conntrack, CtDirection, Event, IpProto, Packet, Tuple};

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Is(Predicate),
}

/// Which end of the packet a predicate looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Src,
    Dst,
    Either,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmp6,
    Arp,
    Ip,
    Ip6,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Predicate {
    Host(End, IpAddr),
    /// An address and a prefix length.
    Net(End, IpAddr, u8),
    /// A port range (one port: both ends equal), of one protocol or of any with ports.
    Port(End, u16, u16, Option<Protocol>),
    Protocol(Protocol),
}

/// A syntax error: which word (1-based) and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    pub word: usize,
    /// The word itself, or "end" when the expression stopped short.
    pub found: String,
    pub expected: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bad filter at word {} ({}): expected {}",
            self.word, self.found, self.expected
        )
    }
}

impl std::error::Error for FilterError {}

impl Filter {
    /// Parses pcap-filter words; parentheses may stand alone or stick to their neighbours.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        let words = split(text);
        let mut parser = Parser { words, at: 0 };
        let filter = parser.or()?;
        match parser.peek() {
            None => Ok(filter),
            Some(_) => Err(parser.error("`and`, `or` or the end")),
        }
    }

    /// Whether a packet with these forms matches.
    pub fn matches_any<'a>(&self, forms: impl IntoIterator<Item = Form<'a>>) -> bool {
        forms.into_iter().any(|form| self.matches(&form))
    }

    fn matches(&self, form: &Form) -> bool {
        match self {
            Filter::And(a, b) => a.matches(form) && b.matches(form),
            Filter::Or(a, b) => a.matches(form) || b.matches(form),
            Filter::Not(a) => !a.matches(form),
            Filter::Is(p) => p.matches(form),
        }
    }

    /// Whether any hop of a packet, or its conntrack tuples, match (see the module comment).
    pub fn matches_events<'a>(&self, events: impl IntoIterator<Item = &'a Event>) -> bool {
        events
            .into_iter()
            .any(|e| forms_of(e).any(|f| self.matches(&f)))
    }
}

/// A form a packet of a connection takes at some hop, and whether the expression matches the
/// packets of its direction (see [`Filter::connection_verdicts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub form: Tuple,
    pub matches: bool,
}

/// [`Filter::connection_verdicts`] gives this many forms for each direction, original first.
pub const FORMS_PER_DIRECTION: usize = 4;

impl Filter {
    /// The expression's verdict on each direction of a connection whose NAT bindings are
    /// fixed, under every form its packets take: the tuple of their direction (before NAT),
    /// the other direction's turned around (after NAT), and the two half-NATed mixes (a
    /// hairpinned packet between its DNAT and its SNAT). The headers of every packet of the
    /// connection spell one of them at every hop, so the kernel can decide its later packets
    /// by their own headers. None for connections without ports (ICMP: its ids and types are
    /// not ports) and for bindings still open.
    pub fn connection_verdicts(&self, ct: &Conntrack) -> Option<Vec<Verdict>> {
        let with_ports = matches!(
            ct.original.protocol,
            IpProto::TCP | IpProto::UDP | IpProto::SCTP
        );
        if !with_ports || !ct.status.nat_done() {
            return None;
        }
        let mut verdicts = Vec::with_capacity(2 * FORMS_PER_DIRECTION);
        for (own, other) in [(&ct.original, &ct.reply), (&ct.reply, &ct.original)] {
            let forms = [
                (&own.src, own.sport, &own.dst, own.dport),
                (&other.dst, other.dport, &other.src, other.sport),
                (&own.src, own.sport, &other.src, other.sport),
                (&other.dst, other.dport, &own.dst, own.dport),
            ];
            let matches = forms.iter().any(|&(src, sport, dst, dport)| {
                self.matches(&Form {
                    src,
                    dst,
                    protocol: own.protocol.0,
                    sport: Some(sport),
                    dport: Some(dport),
                    arp: false,
                })
            });
            verdicts.extend(forms.iter().map(|&(src, sport, dst, dport)| Verdict {
                form: Tuple {
                    src: *src,
                    sport,
                    dst: *dst,
                    dport,
                    protocol: own.protocol,
                },
                matches,
            }));
        }
        Some(verdicts)
    }
}

/// One form a packet took: addresses, protocol, ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Form<'a> {
    pub src: &'a IpAddr,
    pub dst: &'a IpAddr,
    pub protocol: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub arp: bool,
}

impl<'a> Form<'a> {
    pub fn of_packet(p: &'a Packet) -> Self {
        Self {
            src: &p.src,
            dst: &p.dst,
            protocol: p.protocol.0,
            sport: p.sport,
            dport: p.dport,
            arp: p.arp.is_some(),
        }
    }

    /// A conntrack tuple as a packet going its way; `reversed`: one going the other way.
    fn of_tuple(t: &'a Tuple, reversed: bool) -> Self {
        let (src, dst, sport, dport) = if reversed {
            (&t.dst, &t.src, t.dport, t.sport)
        } else {
            (&t.src, &t.dst, t.sport, t.dport)
        };
        let ports = matches!(t.protocol, IpProto::TCP | IpProto::UDP | IpProto::SCTP);
        Self {
            src,
            dst,
            protocol: t.protocol.0,
            sport: ports.then_some(sport),
            dport: ports.then_some(dport),
            arp: false,
        }
    }
}

/// An event's forms: its headers, and its connection's tuples as seen in its direction (the
/// tuple of its direction is the packet before NAT, the other turned around the packet after).
fn forms_of(event: &Event) -> impl Iterator<Item = Form<'_>> {
    let tuples = event.conntrack.iter().flat_map(|ct| {
        let (own, other) = match ct.direction {
            CtDirection::Reply => (&ct.reply, &ct.original),
            _ => (&ct.original, &ct.reply),
        };
        [Form::of_tuple(own, false), Form::of_tuple(other, true)]
    });
    event.packet.iter().map(Form::of_packet).chain(tuples)
}

impl Predicate {
    fn matches(&self, form: &Form) -> bool {
        let either = |end: End, test: &dyn Fn(&IpAddr) -> bool| match end {
            End::Src => test(form.src),
            End::Dst => test(form.dst),
            End::Either => test(form.src) || test(form.dst),
        };
        match self {
            Predicate::Host(end, host) => either(*end, &|a| a == host),
            Predicate::Net(end, net, prefix) => either(*end, &|a| in_net(a, net, *prefix)),
            Predicate::Port(end, low, high, protocol) => {
                if protocol.is_some_and(|p| !Predicate::Protocol(p).matches(form)) {
                    return false;
                }
                let within = |port: Option<u16>| port.is_some_and(|p| (*low..=*high).contains(&p));
                match end {
                    End::Src => within(form.sport),
                    End::Dst => within(form.dport),
                    End::Either => within(form.sport) || within(form.dport),
                }
            }
            Predicate::Protocol(p) => match p {
                Protocol::Tcp => form.protocol == IPPROTO_TCP && !form.arp,
                Protocol::Udp => form.protocol == IPPROTO_UDP && !form.arp,
                Protocol::Icmp => form.protocol == IPPROTO_ICMP && !form.arp,
                Protocol::Icmp6 => form.protocol == IPPROTO_ICMPV6 && !form.arp,
                Protocol::Arp => form.arp,
                Protocol::Ip => form.src.is_ipv4() && !form.arp,
                Protocol::Ip6 => form.src.is_ipv6(),
            },
        }
    }
}

fn in_net(address: &IpAddr, net: &IpAddr, prefix: u8) -> bool {
    match (address, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(*a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(*a) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

/// Words, with parentheses as words of their own.
fn split(text: &str) -> Vec<String> {
    text.replace('(', " ( ")
        .replace(')', " ) ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

struct Parser {
    words: Vec<String>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&str> {
        self.words.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let word = self.words.get(self.at).cloned();
        self.at += 1;
        word
    }

    /// An error at the current word.
    fn error(&self, expected: &str) -> FilterError {
        FilterError {
            word: self.at + 1,
            found: self.peek().map_or("end".to_string(), |w| format!("`{w}`")),
            expected: expected.to_string(),
        }
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.and()?;
        while matches!(self.peek(), Some("or" | "||")) {
            self.at += 1;
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut left = self.not()?;
        while matches!(self.peek(), Some("and" | "&&")) {
            self.at += 1;
            left = Filter::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Filter, FilterError> {
        if matches!(self.peek(), Some("not" | "!")) {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Filter, FilterError> {
        if self.peek() == Some("(") {
            self.at += 1;
            let inner = self.or()?;
            if self.peek() != Some(")") {
                return Err(self.error("`)`"));
            }
            self.at += 1;
            return Ok(inner);
        }
        self.predicate().map(Filter::Is)
    }

    fn predicate(&mut self) -> Result<Predicate, FilterError> {
        let protocol = match self.peek().and_then(protocol) {
            Some(p) => {
                self.at += 1;
                // `tcp` alone, or `tcp [src|dst] port N`.
                match self.peek() {
                    Some("port" | "portrange" | "src" | "dst") => {}
                    None | Some("and" | "&&" | "or" | "||" | ")") => {
                        return Ok(Predicate::Protocol(p));
                    }
                    Some(_) => {
                        return Err(self.error("`port`, `portrange`, `and`, `or` or the end"));
                    }
                }
                if !matches!(p, Protocol::Tcp | Protocol::Udp) {
                    return Err(self.error("`and`, `or` or the end (only tcp and udp have ports)"));
                }
                Some(p)
            }
            None => None,
        };
        let end = match self.peek() {
            Some("src") => End::Src,
            Some("dst") => End::Dst,
            _ => End::Either,
        };
        if end != End::Either {
            self.at += 1;
        }
        let expected = if protocol.is_some() {
            "`port` or `portrange`"
        } else {
            "`host`, `net`, `port`, `portrange` or a protocol (tcp, udp, icmp, icmp6, arp, ip, ip6)"
        };
        let Some(keyword) = self.peek().map(str::to_string) else {
            return Err(self.error(expected));
        };
        match keyword.as_str() {
            "host" if protocol.is_none() => {
                self.at += 1;
                let host = self.value("an IP address", |w| w.parse().ok())?;
                Ok(Predicate::Host(end, host))
            }
            "net" if protocol.is_none() => {
                self.at += 1;
                let (net, prefix) = self.value("a network like 172.20.0.0/16", parse_net)?;
                Ok(Predicate::Net(end, net, prefix))
            }
            "port" => {
                self.at += 1;
                let port = self.value("a port number", |w| w.parse().ok())?;
                Ok(Predicate::Port(end, port, port, protocol))
            }
            "portrange" => {
                self.at += 1;
                let (low, high) = self.value("a port range like 1000-2000", |w| {
                    let (a, b) = w.split_once('-')?;
                    let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
                    (a <= b).then_some((a, b))
                })?;
                Ok(Predicate::Port(end, low, high, protocol))
            }
            _ => Err(self.error(expected)),
        }
    }

    /// The next word, read by `parse`, or an error naming what was expected.
    fn value<T>(
        &mut self,
        what: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, FilterError> {
        match self.peek().and_then(&parse) {
            Some(value) => {
                self.next();
                Ok(value)
            }
            None => Err(self.error(what)),
        }
    }
}

fn protocol(word: &str) -> Option<Protocol> {
    Some(match word {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" => Protocol::Icmp,
        "icmp6" => Protocol::Icmp6,
        "arp" => Protocol::Arp,
        "ip" => Protocol::Ip,
        "ip6" => Protocol::Ip6,
        _ => return None,
    })
}

fn parse_net(word: &str) -> Option<(IpAddr, u8)> {
    let (address, prefix) = word.split_once('/')?;
    let address: IpAddr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((address, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Conntrack, CtState, CtStatus};

    fn udp(src: &str, sport: u16, dst: &str, dport: u16) -> Packet {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: IpProto::UDP,
            sport: Some(sport),
            dport: Some(dport),
            ttl: 64,
            ip_id: 1,
            len: 60,
            tcp_flags: None,
            arp: None,
        }
    }

    fn matches(filter: &str, p: &Packet) -> bool {
        Filter::parse(filter)
            .unwrap()
            .matches_any([Form::of_packet(p)])
    }

    #[test]
    fn parses_the_words_people_type() {
        let request = udp("10.199.0.2", 40000, "10.199.0.1", 1812);
        assert!(matches("udp port 1812", &request));
        assert!(matches("udp dst port 1812", &request));
        assert!(!matches("udp src port 1812", &request));
        assert!(!matches("tcp port 1812", &request));
        assert!(matches("host 10.199.0.2 and udp", &request));
        assert!(matches("src host 10.199.0.2", &request));
        assert!(!matches("dst host 10.199.0.2", &request));
        assert!(matches("net 10.199.0.0/24", &request));
        assert!(!matches("src net 172.20.0.0/16", &request));
        assert!(matches("portrange 1800-1900", &request));
        assert!(matches("not tcp", &request));
        assert!(matches("ip and not ip6", &request));
        assert!(matches("tcp or (udp and port 1812)", &request));
        assert!(matches("(tcp)or(udp)", &request));
        assert!(matches("! arp && udp", &request));
        assert!(!matches("icmp || arp", &request));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            Filter::parse("tcp or udp and port 53").unwrap(),
            Filter::Or(
                Box::new(Filter::Is(Predicate::Protocol(Protocol::Tcp))),
                Box::new(Filter::And(
                    Box::new(Filter::Is(Predicate::Protocol(Protocol::Udp))),
                    Box::new(Filter::Is(Predicate::Port(End::Either, 53, 53, None)))
                ))
            )
        );
    }

    #[test]
    fn a_syntax_error_names_the_word() {
        let error = |text: &str| Filter::parse(text).unwrap_err();
        let e = error("udp prot 1812");
        assert_eq!((e.word, e.found.as_str()), (2, "`prot`"));
        assert_eq!(
            e.to_string(),
            "bad filter at word 2 (`prot`): expected `port`, `portrange`, `and`, `or` or the end"
        );
        assert_eq!(error("host 10.199.0.300").word, 2);
        assert_eq!(error("port").found, "end");
        assert_eq!(error("(udp").expected, "`)`");
        assert_eq!(error("udp port 1812 1813").word, 4);
        assert_eq!(error("icmp port 7").word, 2);
        assert_eq!(error("portrange 9-3").word, 2);
        assert_eq!(error("net 10.0.0.0/33").word, 2);
        assert_eq!(error("").found, "end");
    }

    #[test]
    fn a_nated_reply_matches_by_either_of_its_ports() {
        // The RADIUS reply after the reverse NAT: from the published port 11812 of the host.
        let after = udp("10.199.0.1", 11812, "10.199.0.2", 40000);
        let tuple = |src: &str, sport, dst: &str, dport| Tuple {
            src: src.parse().unwrap(),
            sport,
            dst: dst.parse().unwrap(),
            dport,
            protocol: IpProto::UDP,
        };
        let event = Event {
            ts_ns: 0,
            skb_id: None,
            probe: crate::model::ProbePoint::NetDevQueue,
            ifindex: 2,
            netns: None,
            packet: Some(after.clone()),
            netfilter: None,
            conntrack: Some(Conntrack {
                state: CtState::Established,
                direction: CtDirection::Reply,
                status: CtStatus(0),
                original: tuple("10.199.0.2", 40000, "10.199.0.1", 11812),
                reply: tuple("172.20.0.2", 1812, "10.199.0.2", 40000),
            }),
            drop: None,
            capture: None,
            outer: None,
            sample: false,
        };
        let filter = |text: &str| Filter::parse(text).unwrap();
        // Its headers say 11812; its reply tuple (before the reverse NAT) says 1812.
        assert!(filter("udp src port 1812").matches_events([&event]));
        assert!(filter("src host 172.20.0.2").matches_events([&event]));
        assert!(filter("udp src port 11812").matches_events([&event]));
        // Never its own direction turned around.
        assert!(!filter("dst port 1812").matches_events([&event]));
        assert!(!filter("dst host 172.20.0.2").matches_events([&event]));
        assert!(!filter("port 514").matches_events([&event]));
    }

    fn tuple(src: &str, sport: u16, dst: &str, dport: u16, protocol: u8) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            sport,
            dst: dst.parse().unwrap(),
            dport,
            protocol: IpProto(protocol),
        }
    }

    /// A request DNATed from the host's published port 15353 to a container's 5353 (bindings
    /// fixed: src_nat_done and dst_nat_done).
    fn dnat_connection(protocol: u8, status: u64) -> Conntrack {
        Conntrack {
            state: CtState::Established,
            direction: CtDirection::Original,
            status: CtStatus(status),
            original: tuple("10.1.0.9", 40000, "10.1.0.1", 15353, protocol),
            reply: tuple("10.2.0.10", 5353, "10.1.0.9", 40000, protocol),
        }
    }

    const NAT_DONE: u64 = 1 << 7 | 1 << 8;

    fn verdicts(filter: &str, ct: &Conntrack) -> Vec<(String, bool)> {
        Filter::parse(filter)
            .unwrap()
            .connection_verdicts(ct)
            .unwrap()
            .into_iter()
            .map(|v| {
                let f = v.form;
                (
                    format!("{}:{}>{}:{}", f.src, f.sport, f.dst, f.dport),
                    v.matches,
                )
            })
            .collect()
    }

    #[test]
    fn a_connection_is_decided_under_every_form_its_packets_take() {
        let ct = dnat_connection(IPPROTO_UDP, NAT_DONE);
        let forms: Vec<String> = verdicts("udp", &ct).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            forms,
            [
                // The request: before DNAT, after it, and the two mixes.
                "10.1.0.9:40000>10.1.0.1:15353",
                "10.1.0.9:40000>10.2.0.10:5353",
                "10.1.0.9:40000>10.2.0.10:5353",
                "10.1.0.9:40000>10.1.0.1:15353",
                // The reply: from the container, then from the published port.
                "10.2.0.10:5353>10.1.0.9:40000",
                "10.1.0.1:15353>10.1.0.9:40000",
                "10.2.0.10:5353>10.1.0.9:40000",
                "10.1.0.1:15353>10.1.0.9:40000",
            ]
        );
        // Either port names both directions, under every form (the container's side of the
        // request shows only 5353, yet it is the published port's exchange).
        for filter in ["udp port 15353", "port 5353", "host 10.2.0.10"] {
            assert!(verdicts(filter, &ct).iter().all(|(_, m)| *m), "{filter}");
        }
        // A direction: only the reply comes from port 5353 (before the reverse NAT).
        let from_5353 = verdicts("src port 5353", &ct);
        assert!(from_5353[..4].iter().all(|(_, m)| !m), "{from_5353:?}");
        assert!(from_5353[4..].iter().all(|(_, m)| *m), "{from_5353:?}");
        assert!(verdicts("tcp or port 53", &ct).iter().all(|(_, m)| !m));
    }

    #[test]
    fn open_bindings_and_connections_without_ports_are_left_to_userspace() {
        let filter = Filter::parse("udp").unwrap();
        assert!(
            filter
                .connection_verdicts(&dnat_connection(IPPROTO_UDP, 0))
                .is_none()
        );
        assert!(
            filter
                .connection_verdicts(&dnat_connection(IPPROTO_UDP, 1 << 8))
                .is_none()
        );
        assert!(
            filter
                .connection_verdicts(&dnat_connection(IPPROTO_ICMP, NAT_DONE))
                .is_none()
        );
    }
}
