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
    fmt::Write as _,
    io::{self, Write},
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use pcap_file::{
    DataLink, Endianness,
    pcapng::{
        PcapNgWriter,
        blocks::{
            custom::CustomUtf8Option,
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
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
        Event, Family, Hook, ProbePoint, priority_words, slot_word,
        topology::{Place, Topology},
    },
    path::hop::{Direction, Hop, PacketPath},
    record,
    render::paths::hop_lines,
    write_behind::WriteBehind,
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

/// A hop's frame as JSON, in the custom option.
#[derive(Serialize)]
struct FrameJson<'a> {
    packet: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<Direction>,
    hop: usize,
    hops: usize,
    #[serde(flatten)]
    detail: &'a Hop,
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
        Self::new(WriteBehind::new(file), section, snaplen, clock_offset_ns)
            .with_context(|| format!("writing {}", path.display()))
    }
}

impl<W: Write> PcapngWriter<W> {
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
        let mut texts = FrameTexts::default();
        texts.push(path, topology);
        self.write_frames(path, &texts, 0, topology)
    }

    /// One frame per hop of a finished packet, with the texts [`FrameTexts::push`] made for it
    /// (maybe on another thread: they are most of a frame's cost), from frame `first` on.
    pub fn write_frames(
        &mut self,
        path: &PacketPath,
        texts: &FrameTexts,
        first: usize,
        topology: &Topology,
    ) -> io::Result<()> {
        for (i, hop) in path.hops.iter().enumerate() {
            let (comment, json) = texts.frame(first + i);
            let interface_id = self.interface(&hop.event, topology)?;
            let (data, original_len) = match &hop.event.capture {
                Some(capture) => (capture.bytes.as_slice(), capture.wire_len),
                None => (&[][..], 0),
            };
            self.last_ts = self.last_ts.max(hop.event.ts_ns);
            let block = EnhancedPacketBlock {
                interface_id,
                timestamp: wall_clock(self.clock_offset_ns, hop.event.ts_ns),
                original_len,
                data: Cow::Borrowed(data),
                options: vec![
                    EnhancedPacketOption::Common(CommonOption::Comment(Cow::Borrowed(comment))),
                    EnhancedPacketOption::Common(CommonOption::CustomUtf8Copiable(
                        CustomUtf8Option {
                            pen: PEN,
                            value: Cow::Borrowed(json),
                        },
                    )),
                ],
            };
            self.writer
                .write_pcapng_block(block)
                .map_err(io::Error::other)?;
        }
        Ok(())
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

    /// The interface id for where `event` was taken, declared on first use.
    fn interface(&mut self, event: &Event, topology: &Topology) -> io::Result<u32> {
        let key = InterfaceKey::of(event);
        if let Some(id) = self.interfaces.get(&key) {
            return Ok(*id);
        }
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

/// Frames' texts, one after the other in one buffer (millions of frames in a conversion: two
/// allocations per batch, not two per frame): for each, the comment with its hop line and the
/// hop as JSON (the custom option).
#[derive(Clone, Debug, Default)]
pub struct FrameTexts {
    text: String,
    /// Where each frame's comment and JSON end in `text`.
    ends: Vec<(usize, usize)>,
}

impl FrameTexts {
    /// Adds the texts of a finished packet's frames, hop by hop. Pure: the frames' most costly
    /// part, made wherever there is a free core.
    pub fn push(&mut self, path: &PacketPath, topology: &Topology) {
        let lines = hop_lines(path, topology);
        let role = match (path.connection, path.direction) {
            (Some(c), Some(Direction::Request)) => format!(" (connection {c}, request)"),
            (Some(c), Some(Direction::Reply)) => format!(" (connection {c}, reply)"),
            _ => String::new(),
        };
        let hops = path.hops.len();
        for (i, (hop, line)) in path.hops.iter().zip(&lines).enumerate() {
            let _ = write!(
                self.text,
                "dockflow packet {} hop {}/{hops}{role}: {line}",
                path.id,
                i + 1
            );
            let comment_end = self.text.len();
            let frame = FrameJson {
                packet: path.id,
                connection: path.connection,
                direction: path.direction,
                hop: i + 1,
                hops,
                detail: hop,
            };
            // SAFETY: serde_json writes only UTF-8, so the String stays valid UTF-8.
            serde_json::to_writer(unsafe { self.text.as_mut_vec() }, &frame)
                .expect("hops serialize");
            self.ends.push((comment_end, self.text.len()));
        }
    }

    /// Frame `i`'s (comment, JSON).
    pub fn frame(&self, i: usize) -> (&str, &str) {
        let start = i.checked_sub(1).map_or(0, |before| self.ends[before].1);
        let (comment_end, json_end) = self.ends[i];
        (
            &self.text[start..comment_end],
            &self.text[comment_end..json_end],
        )
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }
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
}
