//! Which IP packets the expression can match at all, by address family and protocol. NAT
//! rewrites addresses and ports, never these, so the kernel can leave the rest out from a
//! packet's first hop, before any verdict on its connection exists.

use super::{
    Filter, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Predicate,
    Protocol,
};

/// Three-valued (Kleene) logic: knowing only a packet's family and protocol, an address or a
/// port predicate may hold or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Maybe {
    No,
    Unknown,
    Yes,
}

impl Maybe {
    fn from_bool(known: bool) -> Self {
        if known { Maybe::Yes } else { Maybe::No }
    }

    fn not(self) -> Self {
        match self {
            Maybe::No => Maybe::Yes,
            Maybe::Unknown => Maybe::Unknown,
            Maybe::Yes => Maybe::No,
        }
    }
}

/// What the expression may match at all, knowing only what NAT never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Possible {
    /// Bit `p % 64` of word `p / 64` (IPv4) or `4 + p / 64` (IPv6): IP protocol `p` may match.
    pub protocols: [u64; 8],
    /// ARP frames may match.
    pub arp: bool,
}

impl Possible {
    /// The IP protocols either family may match; None when every one may (or ARP may: marking
    /// by IP protocol would leave ARP frames out).
    pub fn ip_protocols(&self) -> Option<Vec<u8>> {
        let any = |p: u8| {
            let (word, bit) = (usize::from(p / 64), 1u64 << (p % 64));
            self.protocols[word] & bit != 0 || self.protocols[4 + word] & bit != 0
        };
        let list: Vec<u8> = (0..=u8::MAX).filter(|p| any(*p)).collect();
        (!self.arp && list.len() < 256).then_some(list)
    }
}

impl Filter {
    /// The IP protocols (see `possible_protocols`) and whether ARP frames may match.
    pub fn possible(&self) -> Possible {
        Possible {
            protocols: self.possible_protocols(),
            arp: self.maybe_arp() != Maybe::No,
        }
    }

    /// Bit `p % 64` of word `p / 64` (IPv4) or `4 + p / 64` (IPv6): whether a packet of that
    /// family and IP protocol `p` may match. ICMP and ICMPv6 always may: an error message
    /// belongs to the connection it reports on, whatever that connection's protocol.
    fn possible_protocols(&self) -> [u64; 8] {
        let mut bits = [0u64; 8];
        for (words, ipv6) in [(0, false), (4, true)] {
            for protocol in 0..=u8::MAX {
                let icmp = matches!(protocol, IPPROTO_ICMP | IPPROTO_ICMPV6);
                if icmp || self.maybe(ipv6, protocol) != Maybe::No {
                    bits[words + usize::from(protocol / 64)] |= 1 << (protocol % 64);
                }
            }
        }
        bits
    }

    fn maybe(&self, ipv6: bool, protocol: u8) -> Maybe {
        self.three_valued(&|p| p.maybe(ipv6, protocol))
    }

    /// As [`Predicate::matches`] decides for an ARP frame (its addresses are IPv4, it has no
    /// ports).
    fn maybe_arp(&self) -> Maybe {
        self.three_valued(&|p| match p {
            Predicate::Host(_, a) | Predicate::Net(_, a, _) if a.is_ipv4() => Maybe::Unknown,
            Predicate::Protocol(Protocol::Arp) => Maybe::Yes,
            _ => Maybe::No,
        })
    }

    fn three_valued(&self, predicate: &dyn Fn(&Predicate) -> Maybe) -> Maybe {
        match self {
            Filter::And(a, b) => a.three_valued(predicate).min(b.three_valued(predicate)),
            Filter::Or(a, b) => a.three_valued(predicate).max(b.three_valued(predicate)),
            Filter::Not(a) => a.three_valued(predicate).not(),
            Filter::Is(p) => predicate(p),
        }
    }
}

impl Predicate {
    /// As [`Predicate::matches`] decides for an IP packet of this family and protocol.
    fn maybe(&self, ipv6: bool, protocol: u8) -> Maybe {
        match self {
            // An address of the other family never matches.
            Predicate::Host(_, address) | Predicate::Net(_, address, _) => {
                if address.is_ipv6() == ipv6 {
                    Maybe::Unknown
                } else {
                    Maybe::No
                }
            }
            Predicate::Port(_, _, _, of) => {
                let wrong =
                    of.is_some_and(|p| Predicate::Protocol(p).maybe(ipv6, protocol) == Maybe::No);
                let ports = matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP);
                if wrong || !ports {
                    Maybe::No
                } else {
                    Maybe::Unknown
                }
            }
            Predicate::Protocol(p) => Maybe::from_bool(match p {
                Protocol::Tcp => protocol == IPPROTO_TCP,
                Protocol::Udp => protocol == IPPROTO_UDP,
                Protocol::Icmp => protocol == IPPROTO_ICMP,
                Protocol::Icmp6 => protocol == IPPROTO_ICMPV6,
                Protocol::Arp => false,
                Protocol::Ip => !ipv6,
                Protocol::Ip6 => ipv6,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The protocols of one family the expression may match, ICMP aside.
    fn possible(filter: &str, ipv6: bool) -> Vec<u8> {
        let bits = Filter::parse(filter).unwrap().possible_protocols();
        let words = if ipv6 { 4 } else { 0 };
        (0..=u8::MAX)
            .filter(|p| !matches!(*p, IPPROTO_ICMP | IPPROTO_ICMPV6))
            .filter(|p| bits[words + usize::from(p / 64)] & 1 << (p % 64) != 0)
            .collect()
    }

    #[test]
    fn only_protocols_the_expression_can_match_are_possible() {
        assert_eq!(possible("udp port 1812", false), [IPPROTO_UDP]);
        assert_eq!(possible("tcp or udp", true), [IPPROTO_TCP, IPPROTO_UDP]);
        assert_eq!(
            possible("port 53", false),
            [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP]
        );
        // Addresses leave every protocol possible, in their own family only.
        assert_eq!(possible("host 10.0.0.1", false).len(), 254);
        assert!(possible("host 10.0.0.1", true).is_empty());
        assert!(possible("net fd00::/8 and tcp", false).is_empty());
        assert_eq!(possible("ip6 and not tcp", true).len(), 253);
        assert!(possible("ip6", false).is_empty());
        // Negation: `not tcp` leaves TCP out; `not host` decides nothing.
        assert!(!possible("not tcp", false).contains(&IPPROTO_TCP));
        assert_eq!(possible("not host 10.0.0.1", false).len(), 254);
        assert!(possible("arp", false).is_empty());
    }

    #[test]
    fn nftables_marks_by_ip_protocol_only_when_arp_cannot_match() {
        let list = |f: &str| Filter::parse(f).unwrap().possible().ip_protocols();
        assert_eq!(
            list("udp port 1812"),
            Some(vec![IPPROTO_ICMP, IPPROTO_UDP, IPPROTO_ICMPV6])
        );
        assert_eq!(list("host 10.0.0.1"), None);
        assert_eq!(list("udp or arp"), None);
        assert_eq!(list("not tcp"), None);
        assert!(list("ip6 and tcp").is_some());
    }

    #[test]
    fn icmp_is_always_possible_for_the_errors_of_any_connection() {
        let bits = Filter::parse("tcp port 80").unwrap().possible_protocols();
        assert_ne!(bits[0] & 1 << IPPROTO_ICMP, 0);
        assert_ne!(bits[4] & 1 << IPPROTO_ICMPV6, 0);
    }
}
