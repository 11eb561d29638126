//! Event files: the raw ring-buffer records of a trace, with everything needed to decode and
//! explain them later on another machine, without root or a kernel (pcap-like: a header, then
//! length-prefixed records).
//!
//! Layout: magic `DOCKFLOW`, u32 format version, u32 header length, header (JSON), then per
//! record a u32 length, a kind byte and the record's bytes: kind 1 a kernel record (a
//! `dockflow_common::PacketEvent`), kind 2 an nftables rule evaluation (JSON), kind 3 the
//! host's topology from that point on (JSON; written when a followed container restarts or
//! containers come and go, so replay names interfaces as the live run did then), kind 4 the
//! kernel's loss counters at the end (JSON). A kernel record may carry the packet's first bytes
//! after the event (--snaplen): the header's record size says how many are reserved. Integers
//! are little-endian.

use std::{
    fs::File,
    io::{self, BufReader, Read, Write},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use dockflow_common::{MAX_SNAPLEN, PACKET_EVENT_SIZE, SNAP_RESERVES};
use serde::{Deserialize, Serialize};

use crate::{
    decode::Decoder,
    model::{ProbePoint, RuleTrace, topology::Topology},
    write_behind::WriteBehind,
};

const MAGIC: &[u8; 8] = b"DOCKFLOW";
/// Bumped whenever the header or the record layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 4;
/// Version 3 is version 4 without topology records: still read.
const OLDEST_READABLE: u32 = 3;
const KIND_KERNEL: u8 = 1;
const KIND_TRACE: u8 = 2;
const KIND_TOPOLOGY: u8 = 3;
const KIND_LOSSES: u8 = 4;
/// Headers are small (names, symbols); anything bigger is a corrupt file, not a header.
const MAX_HEADER: u32 = 64 * 1024 * 1024;

/// What a reader needs besides the records.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Header {
    /// "container radius", ...
    pub target: String,
    pub record_size: usize,
    pub decoder: Decoder,
    pub topology: Topology,
    /// Where and when it was captured, for capture files made from the recording (absent in
    /// recordings of older versions).
    #[serde(default)]
    pub origin: Origin,
}

/// The capture's circumstances, as a capture file's section header states them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The target's Docker networks.
    pub networks: Vec<String>,
    /// `uname -r` of the capturing host.
    pub kernel: String,
    /// Wall-clock minus monotonic time at the start, in ns: turns event times into dates.
    pub clock_offset_ns: i64,
    /// Seconds since the epoch at the start.
    pub started_unix_s: u64,
    /// --snaplen of the run.
    pub snaplen: u32,
    /// The run's filter expression: the kernel kept only packets it might match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// --trace-rules of the run (absent in recordings of older versions: every packet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_rules: Option<crate::model::TraceRules>,
    /// --per-connection of the run (absent: every packet, as in older versions' recordings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_connection: Option<u32>,
    /// The node it was recorded on (--node, else the engine's name and swarm address), to
    /// tell nodes apart when recordings of several are merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node's address in its swarm (what VXLAN packets between nodes come from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address: Option<std::net::IpAddr>,
}

/// Writes records to a file through one batch buffer: records are appended to memory as the
/// ring buffer hands them over and go to disk in large writes, at least once a second.
pub struct Recorder {
    /// Written by a thread of its own: the page cache's copy and a stall of the disk do not
    /// hold up the thread that empties the kernel's ring buffer.
    file: WriteBehind,
    last_flush: Instant,
}

impl Recorder {
    /// What was recorded goes to the disk at least this often.
    const FLUSH_EVERY: Duration = Duration::from_secs(1);
    /// Megabytes the writing thread may be behind: as much again as the default ring buffer,
    /// so that a stall of the disk costs memory before it costs events.
    const QUEUED_MIB: usize = 64;

    pub fn create(path: &Path, header: &Header) -> Result<Self> {
        let mut file = create_private(path)?;
        // Written at once: from its first moment the file is a recording, if an empty one
        // (readable while the run goes on, and after a kill within the first second).
        let header = serde_json::to_vec(header)?;
        let mut start = Vec::with_capacity(16 + header.len());
        start.extend_from_slice(MAGIC);
        start.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        start.extend_from_slice(&(header.len() as u32).to_le_bytes());
        start.extend_from_slice(&header);
        file.write_all(&start)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(Self {
            file: WriteBehind::with_queue(file, Self::QUEUED_MIB),
            last_flush: Instant::now(),
        })
    }

    /// Runs `f` on the thread that writes the recording (to give it the drain's priority).
    pub fn on_writer_thread(&mut self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.file.on_writer_thread(f)
    }

    /// A kernel ring-buffer record, as it came.
    pub fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.append(KIND_KERNEL, bytes)
    }

    /// An nftables rule evaluation.
    pub fn record_trace(&mut self, trace: &RuleTrace) -> io::Result<()> {
        self.append(
            KIND_TRACE,
            &serde_json::to_vec(trace).expect("traces serialize"),
        )
    }

    /// The kernel's loss counters at the end: (probe point, events lost) each.
    pub fn record_losses(&mut self, lost: &[(ProbePoint, u64)]) -> io::Result<()> {
        let lost: Vec<(u8, u64)> = lost.iter().map(|(p, n)| (*p as u8, *n)).collect();
        self.append(
            KIND_LOSSES,
            &serde_json::to_vec(&lost).expect("losses serialize"),
        )
    }

    /// The topology from here on (the header holds the first).
    pub fn record_topology(&mut self, topology: &Topology) -> io::Result<()> {
        self.append(
            KIND_TOPOLOGY,
            &serde_json::to_vec(topology).expect("topologies serialize"),
        )
    }

    fn append(&mut self, kind: u8, bytes: &[u8]) -> io::Result<()> {
        let [a, b, c, d] = (bytes.len() as u32).to_le_bytes();
        self.file.write_all(&[a, b, c, d, kind])?;
        self.file.write_all(bytes)
    }

    /// Hands what was recorded to the writing thread if the last handover is a second old or
    /// more, so that a run killed without warning loses at most its last second.
    pub fn flush_if_due(&mut self) -> io::Result<()> {
        if self.last_flush.elapsed() >= Self::FLUSH_EVERY {
            self.file.hand_over()?;
            self.last_flush = Instant::now();
        }
        Ok(())
    }

    /// Writes what is left and waits until it is in the file (a failed write shows here).
    pub fn finish(mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// One record read back.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    Kernel(Vec<u8>),
    Trace(RuleTrace),
    Topology(Box<Topology>),
    /// Events lost per probe point, at the end of the run.
    Losses(Vec<(ProbePoint, u64)>),
}

pub struct Replay<R: Read> {
    reader: R,
    pub header: Header,
    records: u64,
    /// Bytes read so far: where the next record starts.
    offset: u64,
}

/// Why a recording could not be read on.
#[derive(Debug)]
pub enum ReadError {
    /// The file ends inside a record (a killed run, a full disk): everything before it is
    /// whole and was returned.
    Cut { record: u64, offset: u64 },
    /// The bytes are not a dockflow recording's.
    Corrupt(anyhow::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Cut { record, offset } => write!(
                f,
                "the recording is cut short in record {record}, which starts at byte {offset}"
            ),
            ReadError::Corrupt(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl Replay<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        Self::from_reader(BufReader::new(file))
            .with_context(|| format!("{} is not a usable dockflow recording", path.display()))
    }
}

impl<R: Read> Replay<R> {
    pub fn from_reader(mut reader: R) -> Result<Self> {
        let mut magic = [0u8; 8];
        reader
            .read_exact(&mut magic)
            .context("file too short for a header")?;
        if &magic != MAGIC {
            bail!("wrong magic (not written by dockflow --record)");
        }
        let version = read_u32(&mut reader).context("file too short for a header")?;
        if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&version) {
            bail!(
                "format version {version}, this dockflow reads versions {OLDEST_READABLE} to {FORMAT_VERSION}"
            );
        }
        let len = read_u32(&mut reader).context("file too short for a header")?;
        if len > MAX_HEADER {
            bail!("header length {len} is implausible");
        }
        let header = read_exactly(&mut reader, len as usize)
            .ok()
            .flatten()
            .context("header truncated")?;
        let header: Header = serde_json::from_slice(&header).context("header is not valid")?;
        if !is_record_size(header.record_size) {
            bail!(
                "records of {} bytes, this dockflow reads {PACKET_EVENT_SIZE} bytes and up to {MAX_SNAPLEN} of packet",
                header.record_size
            );
        }
        Ok(Self {
            reader,
            header,
            records: 0,
            offset: 16 + len as u64,
        })
    }

    /// The next record, None at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, ReadError> {
        let n = self.records + 1;
        let cut = ReadError::Cut {
            record: n,
            offset: self.offset,
        };
        let corrupt = |what: String| ReadError::Corrupt(anyhow::anyhow!("record {n} {what}"));
        let Some(prefix) = read_exactly(&mut self.reader, 5).map_err(|e| corrupt(e.to_string()))?
        else {
            return Err(cut);
        };
        if prefix.is_empty() {
            return Ok(None);
        }
        let len = u32::from_le_bytes(prefix[..4].try_into().unwrap()) as usize;
        let kind = prefix[4];
        let expected = match kind {
            KIND_KERNEL => self.header.record_size,
            KIND_TRACE | KIND_TOPOLOGY | KIND_LOSSES if len <= MAX_HEADER as usize => len,
            other => {
                return Err(corrupt(format!(
                    "has unknown kind {other}: the file is corrupt"
                )));
            }
        };
        if len != expected {
            return Err(corrupt(format!(
                "has length {len}, expected {expected}: the file is corrupt"
            )));
        }
        // Grown as bytes arrive: a corrupt length allocates no more than the file holds.
        let bytes = match read_exactly(&mut self.reader, len) {
            Ok(Some(bytes)) if bytes.len() == len => bytes,
            Ok(_) => return Err(cut),
            Err(e) => return Err(corrupt(e.to_string())),
        };
        self.records += 1;
        self.offset += 5 + len as u64;
        Ok(Some(match kind {
            KIND_KERNEL => Record::Kernel(bytes),
            KIND_TRACE => Record::Trace(
                serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(format!("is not a valid trace: {e}")))?,
            ),
            KIND_TOPOLOGY => Record::Topology(
                serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(format!("is not a valid topology: {e}")))?,
            ),
            _ => Record::Losses(
                serde_json::from_slice::<Vec<(u8, u64)>>(&bytes)
                    .map_err(|e| corrupt(format!("is not a valid loss count: {e}")))?
                    .into_iter()
                    .filter_map(|(p, n)| Some((ProbePoint::from_u8(p)?, n)))
                    .collect(),
            ),
        }))
    }
}

/// A kernel record's size: the event, and the bytes reserved for some --snaplen.
fn is_record_size(size: usize) -> bool {
    size.checked_sub(PACKET_EVENT_SIZE)
        .is_some_and(|bytes| SNAP_RESERVES.contains(&bytes))
}

/// Creates (or truncates) `path` readable by its owner only: recordings hold packet headers.
pub fn create_private(path: &Path) -> Result<File> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    // An existing file keeps its mode through open(); make it private too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    Ok(file)
}

/// Reads `len` bytes: Some(all of them), Some(empty) at a clean end before the first byte, or
/// None when the input ends part-way. The buffer grows with what is read, never to a length
/// the input does not have.
fn read_exactly(reader: &mut impl Read, len: usize) -> io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::with_capacity(len.min(8 * 1024));
    reader.take(len as u64).read_to_end(&mut bytes)?;
    Ok(match bytes.len() {
        n if n == len => Some(bytes),
        0 => Some(bytes),
        _ => None,
    })
}

fn read_u32(reader: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    reader.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Hook, TraceKind, Verdict};

    fn header() -> Header {
        Header {
            target: "container radius".into(),
            record_size: PACKET_EVENT_SIZE,
            decoder: Decoder::default(),
            topology: Topology::default(),
            origin: Default::default(),
        }
    }

    fn file_with(records: &[Vec<u8>]) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!(
            "dockflow-record-test-{}-{}",
            std::process::id(),
            records.len()
        ));
        let mut recorder = Recorder::create(&dir, &header()).unwrap();
        for r in records {
            recorder.record(r).unwrap();
        }
        recorder.finish().unwrap();
        let bytes = std::fs::read(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        bytes
    }

    #[test]
    fn round_trips_topology_changes_and_reads_version_3() {
        let path =
            std::env::temp_dir().join(format!("dockflow-record-topo-{}", std::process::id()));
        let mut topology = Topology::default();
        topology.bridges.push(3);
        topology.port_owner.insert(7, "ledger".into());
        let mut recorder = Recorder::create(&path, &header()).unwrap();
        recorder.record_topology(&topology).unwrap();
        recorder.finish().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut replay = Replay::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(
            replay.next_record().unwrap(),
            Some(Record::Topology(Box::new(topology)))
        );
        // A version 3 file (no topology records) reads as before.
        bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(Replay::from_reader(bytes.as_slice()).is_ok());
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(Replay::from_reader(bytes.as_slice()).is_err());
    }

    #[test]
    fn a_recording_is_readable_from_its_creation_on() {
        // A run killed in its first second, or read while it runs: a recording, if empty.
        let path =
            std::env::temp_dir().join(format!("dockflow-record-early-{}", std::process::id()));
        let mut recorder = Recorder::create(&path, &header()).unwrap();
        recorder.record(&[1u8; PACKET_EVENT_SIZE]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let mut replay = Replay::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(replay.header.target, "container radius");
        assert_eq!(replay.next_record().unwrap(), None);
        drop(recorder);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn files_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt as _;
        let path =
            std::env::temp_dir().join(format!("dockflow-record-mode-{}", std::process::id()));
        Recorder::create(&path, &header())
            .unwrap()
            .finish()
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[test]
    fn round_trips_traces() {
        let path =
            std::env::temp_dir().join(format!("dockflow-record-trace-{}", std::process::id()));
        let trace = RuleTrace {
            ts_ns: 7,
            trace_id: 1,
            family: crate::model::NftFamily::Ip,
            table: "nat".into(),
            chain: "DOCKER".into(),
            hook: Some(Hook::Prerouting),
            kind: TraceKind::Rule,
            handle: Some(14),
            rule: Some("udp dport 1812 dnat to 172.20.0.2:1812".into()),
            verdict: Verdict::Accept,
            packet: None,
        };
        let mut recorder = Recorder::create(&path, &header()).unwrap();
        recorder.record_trace(&trace).unwrap();
        recorder.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let mut replay = Replay::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(replay.next_record().unwrap(), Some(Record::Trace(trace)));
    }

    #[test]
    fn round_trips_header_and_records() {
        let records = vec![vec![1u8; PACKET_EVENT_SIZE], vec![2u8; PACKET_EVENT_SIZE]];
        let bytes = file_with(&records);
        let mut replay = Replay::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(replay.header.target, "container radius");
        assert_eq!(
            replay.next_record().unwrap(),
            Some(Record::Kernel(records[0].clone()))
        );
        assert_eq!(
            replay.next_record().unwrap(),
            Some(Record::Kernel(records[1].clone()))
        );
        assert_eq!(replay.next_record().unwrap(), None);
    }

    #[test]
    fn refuses_corrupt_files_with_a_reason() {
        let err =
            |bytes: &[u8]| format!("{:#}", Replay::from_reader(bytes).err().expect("must fail"));
        assert!(err(b"hello").contains("too short"));
        assert!(err(b"NOTDOCKFLOWxxxxxxxxx").contains("wrong magic"));
        let mut wrong_version = file_with(&[]);
        wrong_version[8] = 99;
        assert!(err(&wrong_version).contains("format version 99"));
        let good = file_with(&[]);
        assert!(err(&good[..good.len() - 3]).contains("header truncated"));

        let bytes = file_with(&[vec![7u8; PACKET_EVENT_SIZE]]);
        let mut truncated = Replay::from_reader(&bytes[..bytes.len() - 10]).unwrap();
        assert!(matches!(
            truncated.next_record().unwrap_err(),
            ReadError::Cut { record: 1, .. }
        ));
        let mut bad_len = bytes.clone();
        let at = bytes.len() - PACKET_EVENT_SIZE - 5;
        bad_len[at] = 3;
        let mut replay = Replay::from_reader(bad_len.as_slice()).unwrap();
        assert!(format!("{:#}", replay.next_record().unwrap_err()).contains("corrupt"));
        let mut bad_kind = bytes.clone();
        bad_kind[bytes.len() - PACKET_EVENT_SIZE - 1] = 9;
        let mut replay = Replay::from_reader(bad_kind.as_slice()).unwrap();
        assert!(format!("{:#}", replay.next_record().unwrap_err()).contains("unknown kind 9"));
    }
}
