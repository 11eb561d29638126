//! Capture files Wireshark and tshark open (--pcapng): the same packet at every hop, before and
//! after NAT, each frame carrying the hop line the terminal shows.
//!
//! One interface per probe point and place ("tc ingress veth1a2b (radius)", "ipv4 prerouting
//! -99 (after nat)"), Ethernet, nanosecond timestamps. One enhanced packet block per hop of a
//! finished packet: the bytes captured there (--snaplen), a comment "dockflow packet 17 hop 3/9
//! (connection 2, request): <hop line>" that display filters can pick a packet by
//! (`frame.comment contains "dockflow packet 17 "`), and the hop as JSON in a custom option
//! under [`PEN`]. At the end, per interface, the events the kernel lost at its probe point.
//!
//! Written from the packets the correlator finishes, so a file converted from a recording
//! (`--replay REC --pcapng OUT`) holds the same frames and comments as one written live.

use std::{
    borrow::Cow,
    io::{self, Write},
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        PcapNgWriter,
        blocks::{
            interface_description::{
                InterfaceDescriptionBlock, InterfaceDescriptionOption, InterfaceTsResolution,
            },
            interface_statistics::{InterfaceStatisticsBlock, InterfaceStatisticsOption},
            opt_common::CommonOption,
            section_header::{SectionHeaderBlock, SectionHeaderOption},
        },
    },
};
use rustc_hash::FxHashMap;
use serde::Serialize;

use crate::{
    model::PointNames as _,
    model::{
        Conntrack, Drop, Event, Family, Hook, IpProto, NetfilterHop, Outer, Packet, ProbePoint,
        priority_words, slot_word,
        topology::{Place, Topology},
    },
    path::hop::{Direction, HopKind, Layer, PacketPath, Rewrite},
    record,
    render::paths::hop_lines,
    write_behind::{WriteBehind, WriteOwned},
};

/// RFC 5612's private enterprise number for documentation and examples: dockflow has none of
/// its own, and its custom options are for dockflow to read back, not for others to interpret.
pub const PEN: u32 = 32473;

/// What the section header says about the capture.
#[derive(Clone, Debug)]
pub struct Section {
    /// "container radius", ...
    pub target: String,
    /// The target's Docker networks, if any.
    pub networks: Vec<String>,
    /// `uname -r` of the host that captured.
    pub kernel: String,
    /// When the capture started.
    pub started: SystemTime,
    /// The filter expression of what is written (each interface's if_filter).
    pub filter: Option<String>,
}

/// Where an event was taken, as an interface of the capture.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct InterfaceKey {
    probe: ProbePoint,
    ifindex: u32,
    netns: Option<u32>,
    /// Family, hook and priority for netfilter events.
    hook: Option<(Family, Hook, Option<i32>)>,
}

impl InterfaceKey {
    fn of(event: &Event) -> Self {
        Self {
            probe: event.probe,
            ifindex: event.ifindex,
            netns: event.netns,
            hook: event
                .netfilter
                .as_ref()
                .map(|nf| (nf.family, nf.hook, nf.priority)),
        }
    }
}

/// The pcapng writer; interfaces are declared as events first come from them.
pub struct PcapngWriter<W: Write> {
    writer: PcapNgWriter<W>,
    interfaces: FxHashMap<InterfaceKey, u32>,
    /// Each interface's probe point, in interface id order (for the statistics at the end).
    points: Vec<ProbePoint>,
    snaplen: u32,
    /// if_filter's value: a libpcap filter string (code 0), then the text.
    filter: Option<Vec<u8>>,
    /// Added to the kernel's monotonic event times to make them wall-clock times.
    clock_offset_ns: i64,
    last_ts: u64,
}

/// A hop's frame as JSON, in the custom option: the hop as the JSON stream has it, less the
/// packet's headers where the frame's own bytes show them.
#[derive(Serialize)]
struct FrameJson<'a> {
    packet: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<Direction>,
    hop: usize,
    hops: usize,
    layer: Layer,
    #[serde(flatten)]
    kind: &'a HopKind,
    #[serde(skip_serializing_if = "<[Rewrite]>::is_empty")]
    rewrites: &'a [Rewrite],
    event: FrameEvent<'a>,
}

/// [`Event`]'s fields as its JSON has them (a unit test holds the two together), the headers
/// left out where the bytes show them (an eighth of a capture file's bytes, and of the time
/// spent making them).
#[derive(Serialize)]
struct FrameEvent<'a> {
    ts_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    skb_id: Option<u64>,
    probe: ProbePoint,
    ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    netns: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    packet: Option<&'a Packet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    netfilter: Option<&'a NetfilterHop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conntrack: Option<&'a Conntrack>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop: Option<&'a Drop>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outer: Option<&'a Outer>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    sample: bool,
}

impl<'a> FrameEvent<'a> {
    fn of(event: &'a Event) -> Self {
        let shown = |packet: &&Packet| match &event.capture {
            Some(capture) => !bytes_show(packet, &capture.bytes),
            None => true,
        };
        Self {
            ts_ns: event.ts_ns,
            skb_id: event.skb_id,
            probe: event.probe,
            ifindex: event.ifindex,
            netns: event.netns,
            packet: event.packet.as_ref().filter(shown),
            netfilter: event.netfilter.as_ref(),
            conntrack: event.conntrack.as_ref(),
            drop: event.drop.as_ref(),
            outer: event.outer.as_deref(),
            sample: event.sample,
        }
    }
}

/// Whether captured `bytes` (Ethernet first) hold `packet`'s headers: the network header with
/// the same protocol and addresses, and the transport header's fixed part with the same ports.
/// Not so for a tunnel point's bytes (the packet is the inner one), an ARP frame, or bytes cut
/// short by --snaplen.
fn bytes_show(packet: &Packet, bytes: &[u8]) -> bool {
    const ETHERNET: usize = 14;
    if packet.arp.is_some() || bytes.len() < ETHERNET {
        return false;
    }
    let ip = &bytes[ETHERNET..];
    let ethertype = u16::from_be_bytes([bytes[12], bytes[13]]);
    let (transport, protocol, src, dst) = match (ethertype, packet.src) {
        (0x0800, IpAddr::V4(_)) if ip.len() >= 20 => {
            let address = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&ip[at..at + 4]).unwrap());
            let header = usize::from(ip[0] & 0x0f) * 4;
            (header, ip[9], address(12), address(16))
        }
        (0x86dd, IpAddr::V6(_)) if ip.len() >= 40 => {
            let address = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&ip[at..at + 16]).unwrap());
            (40, ip[6], address(8), address(24))
        }
        _ => return false,
    };
    let fixed = match packet.protocol {
        IpProto::TCP => 20,
        IpProto::UDP | IpProto::ICMP | IpProto::ICMPV6 | IpProto::SCTP => 8,
        _ => 0,
    };
    let Some(l4) = ip.get(transport..transport + fixed) else {
        return false;
    };
    let port = |at: usize| Some(u16::from_be_bytes([l4[at], l4[at + 1]]));
    let ports_match =
        packet.sport.is_none() || (port(0) == packet.sport && port(2) == packet.dport);
    protocol == packet.protocol.0 && src == packet.src && dst == packet.dst && ports_match
}

impl PcapngWriter<WriteBehind> {
    /// Creates `path` (readable by its owner only: it holds packet bytes).
    pub fn create(
        path: &Path,
        section: &Section,
        snaplen: u32,
        clock_offset_ns: i64,
    ) -> Result<Self> {
        let file = record::create_private(path)?;
        Self::new(
            WriteBehind::dropping_behind(file),
            section,
            snaplen,
            clock_offset_ns,
        )
        .with_context(|| format!("writing {}", path.display()))
    }
}

impl<W: WriteOwned> PcapngWriter<W> {
    /// Added to the kernel's monotonic event times to make them wall-clock times.
    pub fn clock_offset_ns(&self) -> i64 {
        self.clock_offset_ns
    }

    pub fn new(writer: W, section: &Section, snaplen: u32, clock_offset_ns: i64) -> Result<Self> {
        let started = humantime::format_rfc3339_seconds(section.started);
        let networks = if section.networks.is_empty() {
            String::new()
        } else {
            format!(" on {}", section.networks.join(", "))
        };
        let header = SectionHeaderBlock {
            endianness: Endianness::native(),
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options: vec![
                SectionHeaderOption::UserApplication(Cow::Owned(format!(
                    "dockflow {}",
                    env!("CARGO_PKG_VERSION")
                ))),
                SectionHeaderOption::OS(Cow::Owned(format!("Linux {}", section.kernel))),
                SectionHeaderOption::Common(CommonOption::Comment(Cow::Owned(format!(
                    "dockflow watching {}{networks}, started {started}; one interface per probe point, one frame per hop",
                    section.target
                )))),
            ],
        };
        Ok(Self {
            writer: PcapNgWriter::with_section_header(writer, header)?,
            interfaces: FxHashMap::default(),
            points: Vec::new(),
            snaplen,
            filter: section
                .filter
                .as_ref()
                .map(|text| [&[0u8][..], text.as_bytes()].concat()),
            clock_offset_ns,
            last_ts: 0,
        })
    }

    /// One frame per hop of a finished packet.
    pub fn write_path(&mut self, path: &PacketPath, topology: &Topology) -> io::Result<()> {
        let mut frames = Frames::default();
        frames.push(path, topology, self.clock_offset_ns);
        self.write_frames([path], &mut frames, topology)
    }

    /// The frames [`Frames::push`] made for `paths` (maybe on another thread: they are most of
    /// a frame's cost), with their interface ids filled in; an interface met for the first
    /// time is declared just before its first frame.
    pub fn write_frames<'p>(
        &mut self,
        paths: impl IntoIterator<Item = &'p PacketPath>,
        frames: &mut Frames,
        topology: &Topology,
    ) -> io::Result<()> {
        let hops = paths.into_iter().flat_map(|path| &path.hops);
        // Frames up to here are written.
        let mut written = 0;
        for (hop, &start) in hops.zip(&frames.starts) {
            let key = InterfaceKey::of(&hop.event);
            let id = match self.interfaces.get(&key) {
                Some(id) => *id,
                None => {
                    self.writer
                        .get_mut()
                        .write_all(&frames.bytes[written..start])?;
                    written = start;
                    self.declare(key, &hop.event, topology)?
                }
            };
            frames.bytes[start + 8..start + 12].copy_from_slice(&id.to_ne_bytes());
            self.last_ts = self.last_ts.max(hop.event.ts_ns);
        }
        let writer = self.writer.get_mut();
        if written == 0 {
            // The usual batch, no interface declared in it: handed over whole, not copied.
            frames.bytes = writer.write_owned(std::mem::take(&mut frames.bytes))?;
            Ok(())
        } else {
            writer.write_all(&frames.bytes[written..])
        }
    }

    /// Statistics per interface (the events lost at its probe point: the kernel counts losses
    /// per probe point, not per interface), then everything out to the file.
    pub fn finish(mut self, lost: &[(ProbePoint, u64)]) -> io::Result<W> {
        let end = wall_clock(self.clock_offset_ns, self.last_ts);
        for (interface_id, point) in self.points.clone().into_iter().enumerate() {
            let dropped = lost
                .iter()
                .find(|(p, _)| *p == point)
                .map_or(0, |(_, n)| *n);
            let block = InterfaceStatisticsBlock {
                interface_id: interface_id as u32,
                timestamp: end,
                options: vec![
                    InterfaceStatisticsOption::IsbIfDrop(dropped),
                    InterfaceStatisticsOption::Common(CommonOption::Comment(Cow::Owned(format!(
                        "isb_ifdrop: events the kernel could not deliver at {} (ring buffer full), counted for the probe point as a whole",
                        point.attach_point()
                    )))),
                ],
            };
            self.writer
                .write_pcapng_block(block)
                .map_err(io::Error::other)?;
        }
        let mut inner = self.writer.into_inner();
        inner.flush()?;
        Ok(inner)
    }

    /// Declares the interface `key` (where `event` was taken): its id.
    fn declare(
        &mut self,
        key: InterfaceKey,
        event: &Event,
        topology: &Topology,
    ) -> io::Result<u32> {
        let block = InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: self.snaplen,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(interface_name(event, topology))),
                InterfaceDescriptionOption::IfDescription(Cow::Borrowed(
                    event.probe.attach_point(),
                )),
                InterfaceDescriptionOption::IfTsResol(InterfaceTsResolution::NANO),
            ]
            .into_iter()
            .chain(
                self.filter
                    .as_deref()
                    .map(|f| InterfaceDescriptionOption::IfFilter(Cow::Borrowed(f))),
            )
            .collect(),
        };
        self.writer
            .write_pcapng_block(block)
            .map_err(io::Error::other)?;
        let id = self.points.len() as u32;
        self.points.push(event.probe);
        self.interfaces.insert(key, id);
        Ok(id)
    }
}

/// Enhanced packet blocks, one after the other in one buffer (millions of frames in a
/// conversion: encoded in place, no allocation per frame), each with its interface id left 0:
/// interfaces are numbered in the order the writer meets them, so the writer fills the ids in.
#[derive(Clone, Debug, Default)]
pub struct Frames {
    bytes: Vec<u8>,
    /// Where each frame's block starts in `bytes`.
    starts: Vec<usize>,
}

/// pcapng's block type of an enhanced packet block, and its option codes.
const ENHANCED_PACKET_BLOCK: u32 = 6;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const OPT_CUSTOM_UTF8_COPIABLE: u16 = 0x0bac;

impl Frames {
    /// Adds a finished packet's frames, hop by hop: the bytes captured there, a comment with its
    /// hop line, and the hop as JSON in a custom option. Pure: the frames' most costly part,
    /// made wherever there is a free core.
    pub fn push(&mut self, path: &PacketPath, topology: &Topology, clock_offset_ns: i64) {
        let lines = hop_lines(path, topology);
        let role = match (path.connection, path.direction) {
            (Some(c), Some(Direction::Request)) => format!(" (connection {c}, request)"),
            (Some(c), Some(Direction::Reply)) => format!(" (connection {c}, reply)"),
            _ => String::new(),
        };
        let hops = path.hops.len();
        for (i, (hop, line)) in path.hops.iter().zip(&lines).enumerate() {
            let start = self.bytes.len();
            self.starts.push(start);
            let (data, original_len) = match &hop.event.capture {
                Some(capture) => (capture.bytes.as_slice(), capture.wire_len),
                None => (&[][..], 0),
            };
            let ts = wall_clock(clock_offset_ns, hop.event.ts_ns).as_nanos() as u64;
            let b = &mut self.bytes;
            // Type, length (below), interface id (the writer's), time, captured and original
            // lengths, then the bytes.
            for word in [
                ENHANCED_PACKET_BLOCK,
                0,
                0,
                (ts >> 32) as u32,
                ts as u32,
                data.len() as u32,
                original_len,
            ] {
                b.extend_from_slice(&word.to_ne_bytes());
            }
            b.extend_from_slice(data);
            pad(b);
            option(b, OPT_COMMENT, |b| {
                let _ = write!(
                    b,
                    "dockflow packet {} hop {}/{hops}{role}: {line}",
                    path.id,
                    i + 1
                );
            });
            let frame = FrameJson {
                packet: path.id,
                connection: path.connection,
                direction: path.direction,
                hop: i + 1,
                hops,
                layer: hop.layer,
                kind: &hop.kind,
                rewrites: &hop.rewrites,
                event: FrameEvent::of(&hop.event),
            };
            option(b, OPT_CUSTOM_UTF8_COPIABLE, |b| {
                b.extend_from_slice(&PEN.to_ne_bytes());
                serde_json::to_writer(&mut *b, &frame).expect("hops serialize");
            });
            b.extend_from_slice(&OPT_END.to_ne_bytes());
            b.extend_from_slice(&0u16.to_ne_bytes());
            let total = (b.len() - start + 4) as u32;
            b.extend_from_slice(&total.to_ne_bytes());
            b[start + 4..start + 8].copy_from_slice(&total.to_ne_bytes());
        }
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.starts.clear();
    }
}

/// Zeroes up to the next multiple of four bytes.
fn pad(b: &mut Vec<u8>) {
    b.resize(b.len().next_multiple_of(4), 0);
}

/// An option: its code, its length, what `content` writes, padding. An option's length has 16
/// bits: a longer text (a hop with hundreds of rules) is cut at a character boundary.
fn option(b: &mut Vec<u8>, code: u16, content: impl FnOnce(&mut Vec<u8>)) {
    let at = b.len();
    b.extend_from_slice(&[0; 4]);
    content(b);
    let mut len = b.len() - at - 4;
    if len > usize::from(u16::MAX) {
        len = usize::from(u16::MAX);
        while len > 0 && (b[at + 4 + len] & 0xc0) == 0x80 {
            len -= 1;
        }
        b.truncate(at + 4 + len);
    }
    b[at..at + 2].copy_from_slice(&code.to_ne_bytes());
    b[at + 2..at + 4].copy_from_slice(&(len as u16).to_ne_bytes());
    pad(b);
}

/// A kernel monotonic time as a wall-clock time, by the capture's offset.
fn wall_clock(clock_offset_ns: i64, ts_ns: u64) -> Duration {
    Duration::from_nanos((ts_ns as i64).saturating_add(clock_offset_ns).max(0) as u64)
}

/// "tc ingress vethc (radius)", "ipv4 prerouting -99 (after nat)", "bridge pass up docker1",
/// "receive radius:eth0".
fn interface_name(event: &Event, topology: &Topology) -> String {
    match (&event.netfilter, event.probe) {
        (Some(nf), _) => {
            let place = match nf.priority.map(priority_words) {
                // "first" and "last" say it all; a number needs its side of NAT.
                Some(words) if words == slot_word(nf.slot) => words,
                Some(words) => format!("{words} ({})", slot_word(nf.slot)),
                None => format!("({})", slot_word(nf.slot)),
            };
            format!("{} {} {place}", nf.family.word(), nf.hook.word())
        }
        (None, probe @ (ProbePoint::TcIngress | ProbePoint::TcEgress)) => {
            let label = topology.port_label(event.netns, event.ifindex);
            // On the bridge device, tc sees the frames crossing between the bridge and the IP
            // stack: what the bridge passes up (ingress) and what the stack sends in (egress).
            let role = match (topology.place(event.netns, event.ifindex), probe) {
                (Place::Bridge, ProbePoint::TcIngress) => " (passed up by the bridge)",
                (Place::Bridge, _) => " (sent into the bridge)",
                _ => "",
            };
            format!("{} {label}{role}", probe.name())
        }
        (None, point) => format!(
            "{} {}",
            point.name(),
            topology.name(event.netns, event.ifindex)
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use pcap_file::pcapng::{Block, PcapNgReader};

    use super::*;
    use crate::{
        model::{Capture, Packet, topology::InterfaceNames},
        path::correlate::Correlator,
    };

    fn udp(dst: &str) -> Packet {
        Packet {
            src: "10.199.0.2".parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: crate::model::IpProto::UDP,
            sport: Some(40000),
            dport: Some(1812),
            ttl: 64,
            ip_id: 7,
            len: 60,
            tcp_flags: None,
            arp: None,
        }
    }

    fn hop(ts: u64, probe: ProbePoint, ifindex: u32, packet: Packet, byte: u8) -> Event {
        Event {
            ts_ns: ts,
            skb_id: None,
            probe,
            ifindex,
            netns: None,
            packet: Some(packet),
            netfilter: None,
            conntrack: None,
            drop: None,
            capture: Some(Capture {
                bytes: vec![byte; 74],
                wire_len: 74,
                synthetic_ethernet: false,
            }),
            outer: None,
            sample: false,
        }
    }

    fn section() -> Section {
        Section {
            target: "container ledger".into(),
            networks: vec!["dfcat".into()],
            kernel: "6.1.0-test".into(),
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            filter: Some("udp port 1812".into()),
        }
    }

    #[test]
    fn writes_one_frame_per_hop_with_its_line_and_reads_back() {
        let names = InterfaceNames::from_entries(
            1,
            [((1, 2), "dfext0".to_string()), ((1, 4), "vethc".into())],
        );
        let topology = Topology::from_links(names, &[], HashMap::from([(4, "ledger".into())]));
        let mut correlator = Correlator::new(topology.clone());
        correlator.push(hop(
            1_000,
            ProbePoint::NetifReceive,
            2,
            udp("10.199.0.1"),
            1,
        ));
        correlator.push(hop(2_000, ProbePoint::TcEgress, 4, udp("10.213.5.10"), 2));
        let paths = correlator.finish();
        assert_eq!(paths.len(), 1);

        let mut writer = PcapngWriter::new(Vec::new(), &section(), 128, 5_000_000_000).unwrap();
        writer.write_path(&paths[0], &topology).unwrap();
        let bytes = writer.finish(&[(ProbePoint::TcEgress, 3)]).unwrap();

        let mut reader = PcapNgReader::new(bytes.as_slice()).unwrap();
        let header = format!("{:?}", reader.section().options);
        assert!(
            header.contains("dockflow watching container ledger on dfcat"),
            "{header}"
        );
        assert!(header.contains("Linux 6.1.0-test"), "{header}");
        let mut frames = Vec::new();
        let mut drops = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.unwrap().0 {
                Block::EnhancedPacket(epb) => frames.push(epb.into_owned()),
                Block::InterfaceStatistics(isb) => drops.push(format!("{:?}", isb.options)),
                _ => {}
            }
        }
        let interfaces: Vec<String> = reader
            .interfaces()
            .iter()
            .map(|i| format!("{:?}", i.options))
            .collect();
        assert_eq!(interfaces.len(), 2, "{interfaces:?}");
        assert!(interfaces[0].contains("receive dfext0"), "{interfaces:?}");
        assert!(
            interfaces[0].contains(&format!("IfFilter({:?})", b"\0udp port 1812")),
            "{interfaces:?}"
        );
        assert!(
            interfaces[1].contains("tc egress vethc (ledger)"),
            "{interfaces:?}"
        );
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].data.as_ref(), &[2u8; 74][..]);
        // Event time plus the clock offset.
        assert_eq!(frames[0].timestamp, Duration::from_nanos(5_000_001_000));
        let options = format!("{:?}", frames[1].options);
        assert!(
            options.contains("dockflow packet 1 hop 2/2 (connection 1, request): dev   transmit"),
            "{options}"
        );
        assert!(
            options.contains("dst 10.199.0.1:1812 -> 10.213.5.10:1812"),
            "{options}"
        );
        assert!(options.contains(r#"\"packet\":1,"#), "{options}");
        assert!(options.contains(&format!("pen: {PEN}")), "{options}");
        assert!(
            drops.iter().any(|d| d.contains("IsbIfDrop(3)")),
            "{drops:?}"
        );
    }

    /// An Ethernet frame with `packet`'s IPv4 and UDP headers, as the kernel captures it.
    fn udp_frame(packet: &Packet) -> Vec<u8> {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (packet.src, packet.dst) else {
            unreachable!("IPv4 here")
        };
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 28, 0, 7, 0, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&src.octets());
        frame.extend_from_slice(&dst.octets());
        for port in [packet.sport.unwrap(), packet.dport.unwrap(), 8, 0] {
            frame.extend_from_slice(&port.to_be_bytes());
        }
        frame
    }

    fn json(value: impl Serialize) -> serde_json::Value {
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn a_frame_event_is_the_streams_event_with_the_headers_left_out_where_the_bytes_show_them() {
        // Every optional field set: a field Event gains and the frame leaves out shows here.
        let mut event = hop(5, ProbePoint::Netfilter, 2, udp("10.199.0.1"), 0);
        event.skb_id = Some(0xffff_8880_0000_1000);
        event.netns = Some(4026531840);
        event.netfilter = Some(NetfilterHop {
            family: Family::Ipv4,
            hook: Hook::Prerouting,
            hook_number: 0,
            priority: Some(-99),
            slot: dockflow_common::NfSlot::BeforeNat,
            in_ifindex: Some(2),
            out_ifindex: Some(4),
            okfn: Some("ip_rcv_finish".into()),
            from_bridge: false,
        });
        let tuple = crate::model::Tuple {
            src: "10.199.0.2".parse().unwrap(),
            sport: 40000,
            dst: "10.199.0.1".parse().unwrap(),
            dport: 1812,
            protocol: IpProto::UDP,
        };
        event.conntrack = Some(Conntrack {
            state: crate::model::CtState::New,
            direction: crate::model::CtDirection::Original,
            status: crate::model::CtStatus(0x8),
            original: tuple.clone(),
            reply: tuple,
        });
        event.drop = Some(Drop {
            reason: crate::model::DropReason::NoSocket,
            code: 3,
        });
        event.outer = Some(Box::new(Outer {
            src: "10.218.0.1".parse().unwrap(),
            sport: 40000,
            dst: "10.218.0.2".parse().unwrap(),
            dport: 4789,
            vni: 4097,
        }));
        event.sample = true;
        let mut stream = json(&event);

        // Bytes that are not these headers (a tunnel point's outer packet, say): all of it.
        assert_eq!(json(FrameEvent::of(&event)), stream);
        event.capture = None;
        assert_eq!(json(FrameEvent::of(&event)), stream);

        let packet = event.packet.clone().unwrap();
        event.capture = Some(Capture {
            bytes: udp_frame(&packet),
            wire_len: 42,
            synthetic_ethernet: false,
        });
        stream.as_object_mut().unwrap().remove("packet").unwrap();
        assert_eq!(json(FrameEvent::of(&event)), stream);

        // Cut short of the UDP header by --snaplen: the headers stay.
        event.capture.as_mut().unwrap().bytes.truncate(40);
        assert!(json(FrameEvent::of(&event)).get("packet").is_some());
    }

    #[test]
    fn a_frames_json_is_the_streams_hop_with_the_packets_place_in_it() {
        // A hop with every field of its own set (NAT rewrites, a hook kind): a field Hop gains
        // and the frame leaves out shows here.
        let (_, paths) = crate::path::tests_support::seed_paths();
        let path = &paths[0];
        let (i, hop) = path
            .hops
            .iter()
            .enumerate()
            .find(|(_, h)| !h.rewrites.is_empty())
            .expect("the seed's request is DNATed");
        let frame = FrameJson {
            packet: path.id,
            connection: path.connection,
            direction: path.direction,
            hop: i + 1,
            hops: path.hops.len(),
            layer: hop.layer,
            kind: &hop.kind,
            rewrites: &hop.rewrites,
            event: FrameEvent::of(&hop.event),
        };
        let mut stream = json(hop);
        let fields = stream.as_object_mut().unwrap();
        fields.insert("event".into(), json(FrameEvent::of(&hop.event)));
        for (key, value) in [
            ("packet", json(path.id)),
            ("connection", json(path.connection)),
            ("direction", json(path.direction)),
            ("hop", json(i + 1)),
            ("hops", json(path.hops.len())),
        ] {
            fields.insert(key.into(), value);
        }
        assert_eq!(json(frame), stream);
    }

    #[test]
    fn bytes_show_the_headers_only_with_the_same_protocol_addresses_and_ports() {
        let packet = udp("10.213.5.10");
        let frame = udp_frame(&packet);
        assert!(bytes_show(&packet, &frame));
        for other in [
            udp("10.213.5.11"),
            Packet {
                dport: Some(1813),
                ..packet.clone()
            },
            Packet {
                protocol: IpProto::TCP,
                ..packet.clone()
            },
            Packet {
                src: "fd00::1".parse().unwrap(),
                ..packet.clone()
            },
        ] {
            assert!(!bytes_show(&other, &frame), "{other:?}");
        }
        assert!(!bytes_show(&packet, &frame[..frame.len() - 1]));
        assert!(!bytes_show(&packet, &[]));
    }

    #[test]
    fn an_option_longer_than_its_16_bit_length_is_cut_at_a_character() {
        // Options start 4-aligned in a block.
        let mut block = vec![7u8; 4];
        option(&mut block, OPT_COMMENT, |b| {
            b.extend_from_slice("é".repeat(40_000).as_bytes());
        });
        let len = u16::from_ne_bytes([block[6], block[7]]) as usize;
        assert_eq!(len, 65_534, "two-byte characters: the last whole one");
        let text = std::str::from_utf8(&block[8..8 + len]).expect("still UTF-8");
        assert!(text.chars().all(|c| c == 'é'));
        assert_eq!(block.len(), 4 + 4 + 65_536, "padded to four bytes");
    }
}
