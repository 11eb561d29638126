//! A packet's observed path: its hops in order, the NAT rewrites between them, the nftables
//! rules that judged it (each placed at its hop), and where it belongs (connection, direction).
//! What correlation produces and everything after it reads.

use serde::Serialize;

use super::classify::{HopKind, Layer};
use crate::model::{Event, Packet, RuleTrace};

/// One hop of a packet's path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub layer: Layer,
    #[serde(flatten)]
    pub kind: HopKind,
    /// NAT rewrites visible at this hop, compared with the previous hop ("dst 10.199.0.1:1812 ->
    /// 172.20.0.2:1812").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<Rewrite>,
    pub event: Event,
}

/// Containers at a packet's ends, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ends {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
}

impl Ends {
    pub fn is_empty(&self) -> bool {
        self.src.is_none() && self.dst.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rewrite {
    pub field: RewriteField,
    pub before: String,
    pub after: String,
}

/// Which end of a packet NAT rewrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RewriteField {
    Source,
    Destination,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The connection's original direction (the request).
    Request,
    /// The reply direction.
    Reply,
}

/// A packet's whole observed path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketPath {
    pub id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Headers as first seen.
    pub packet: Packet,
    /// The containers at either end, where an address of the packet (before or after NAT)
    /// is one of theirs.
    #[serde(skip_serializing_if = "Ends::is_empty")]
    pub ends: Ends,
    pub hops: Vec<Hop>,
    /// nftables rules that evaluated the packet, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleTrace>,
    /// For each of `rules`, the index of the first hop it ran at (None: no such hop was seen):
    /// placed once, when the path is finished, for everything that tells the path.
    #[serde(skip)]
    pub rule_at: Vec<Option<usize>>,
    /// Events were lost while this packet was on its way (the kernel's ring buffer overflowed,
    /// or the display fell behind and skipped some): its hops may be missing some.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// Its connection is one leg of an exchange through dockerd's userland proxy (set by
    /// [`super::proxy::ProxyLinker`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<super::proxy::ProxyLeg>,
    /// nftables traced only its flow's first packets (--trace-rules first): this one was not
    /// traced, and shares the rules of this earlier packet of its connection and direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_as: Option<u64>,
    /// Past its connection's first --per-connection packets, the kernel showed it as the
    /// connection's sample (one a second; the others only counted), or it is a drop of a
    /// packet held back until then.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sample: bool,
}

impl PacketPath {
    /// Where the packet itself was dropped (not a flooded copy of it, nor an ICMP message freed
    /// after delivery).
    pub fn dropped(&self) -> Option<&Hop> {
        self.hops.iter().find(|h| {
            matches!(
                h.kind,
                HopKind::Dropped {
                    flood_copy: false,
                    after_delivery: false,
                    ..
                }
            )
        })
    }
}
