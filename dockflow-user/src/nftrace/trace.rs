//! Reading nftables trace messages (NFT_MSG_TRACE on NFNLGRP_NFTRACE) and naming them.

use std::{collections::HashMap, io};

use anyhow::{Context as _, Result};

use super::{
    ruleset::{ChainKey, Ruleset},
    table::TABLE_PREFIX,
};
use crate::{
    model::{Hook, NftFamily, Packet, RuleTrace, TraceKind, Verdict},
    netlink::{NetlinkSocket, attributes, messages},
};

const NFNLGRP_NFTRACE: u32 = 9;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_TRACE: u16 = 17;
const NFGENMSG_LEN: usize = 4;
const NFT_TRACETYPE_RULE: u32 = 3;

const NFTA_TRACE_TABLE: u16 = 1;
const NFTA_TRACE_CHAIN: u16 = 2;
const NFTA_TRACE_RULE_HANDLE: u16 = 3;
const NFTA_TRACE_TYPE: u16 = 4;
const NFTA_TRACE_VERDICT: u16 = 5;
const NFTA_TRACE_ID: u16 = 6;
const NFTA_TRACE_NETWORK_HEADER: u16 = 8;
const NFTA_TRACE_TRANSPORT_HEADER: u16 = 9;
const NFTA_TRACE_POLICY: u16 = 16;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// One trace message as the kernel sent it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RawTrace {
    pub family: u8,
    pub id: u32,
    pub table: String,
    pub chain: String,
    pub handle: Option<u64>,
    pub trace_type: u32,
    pub verdict: Option<i32>,
    pub verdict_chain: Option<String>,
    pub network_header: Vec<u8>,
    pub transport_header: Vec<u8>,
}

/// The subscription to trace messages.
pub struct TraceSocket(NetlinkSocket);

impl TraceSocket {
    pub fn open() -> Result<Self> {
        let socket =
            NetlinkSocket::open(libc::NETLINK_NETFILTER).context("opening an nfnetlink socket")?;
        socket
            .join_group(NFNLGRP_NFTRACE)
            .context("subscribing to nftables traces")?;
        Ok(Self(socket))
    }

    /// Waits for the next datagram and returns its trace messages; `buf` is reused from call
    /// to call (a trace datagram is small, and zeroing a fresh buffer per read costs more than
    /// parsing it).
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Vec<RawTrace>> {
        loop {
            match self.0.recv(buf) {
                Ok(n) => return Ok(parse_datagram(&buf[..n])),
                // The kernel dropped messages we were too slow for: go on with what comes next.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads on a thread of its own (blocking reads; the thread ends with the process), naming
    /// each trace with `tracer` and delivering batches to the event loop. When the loop is
    /// behind, batches are dropped rather than queued without bound (a flood traces every
    /// packet); the count of traces dropped so goes with the next batch that fits.
    pub fn spawn_reader(self, mut tracer: Tracer) -> tokio::sync::mpsc::Receiver<TraceBatch> {
        let (tx, rx) = tokio::sync::mpsc::channel(TRACE_QUEUE);
        std::thread::Builder::new()
            .name("dockflow-nftrace".into())
            .spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut dropped = 0;
                while let Ok(raw) = self.read(&mut buf) {
                    let now = crate::kernel::monotonic_now();
                    let traces: Vec<RuleTrace> = raw
                        .into_iter()
                        .filter_map(|t| tracer.name(t, now))
                        .collect();
                    if traces.is_empty() {
                        continue;
                    }
                    let n = traces.len() as u64;
                    match tx.try_send(TraceBatch { traces, dropped }) {
                        Ok(()) => dropped = 0,
                        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => dropped += n,
                        Err(_) => break,
                    }
                }
            })
            .expect("spawning the nftables trace reader");
        rx
    }
}

/// Trace batches the event loop may be behind by.
const TRACE_QUEUE: usize = 4096;

/// Named trace messages for the event loop, and how many were dropped before them.
pub struct TraceBatch {
    pub traces: Vec<RuleTrace>,
    pub dropped: u64,
}

fn be_u32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

fn string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

pub fn parse_datagram(buf: &[u8]) -> Vec<RawTrace> {
    messages(buf)
        .filter(|(t, _)| *t == (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE))
        .filter_map(|(_, payload)| parse_trace(payload))
        .collect()
}

fn parse_trace(payload: &[u8]) -> Option<RawTrace> {
    let mut t = RawTrace {
        family: *payload.first()?,
        ..RawTrace::default()
    };
    for (attr, value) in attributes(payload.get(NFGENMSG_LEN..)?) {
        match attr {
            NFTA_TRACE_TABLE => t.table = string(value),
            NFTA_TRACE_CHAIN => t.chain = string(value),
            NFTA_TRACE_RULE_HANDLE => {
                t.handle = Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
            }
            NFTA_TRACE_TYPE => t.trace_type = be_u32(value)?,
            NFTA_TRACE_ID => t.id = be_u32(value)?,
            NFTA_TRACE_NETWORK_HEADER => t.network_header = value.to_vec(),
            // A base chain's policy verdict comes here, not in NFTA_TRACE_VERDICT.
            NFTA_TRACE_POLICY => t.verdict = be_u32(value).map(|c| c as i32),
            NFTA_TRACE_TRANSPORT_HEADER => t.transport_header = value.to_vec(),
            NFTA_TRACE_VERDICT => {
                for (inner, v) in attributes(value) {
                    match inner {
                        NFTA_VERDICT_CODE => t.verdict = be_u32(v).map(|c| c as i32),
                        NFTA_VERDICT_CHAIN => t.verdict_chain = Some(string(v)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(t)
}

fn verdict_words(code: Option<i32>, chain: Option<&str>) -> String {
    let chain = chain.unwrap_or("?");
    match code {
        Some(0) => "drop".into(),
        Some(1) => "accept".into(),
        Some(2) => "stolen".into(),
        Some(3) => "queue".into(),
        Some(-1) | None => "continue".into(),
        Some(-2) => "break".into(),
        Some(-3) => format!("jump {chain}"),
        Some(-4) => format!("goto {chain}"),
        Some(-5) => "return".into(),
        Some(other) => format!("verdict {other}"),
    }
}

/// Names raw traces with the ruleset and remembers which base chain (hook) each trace id is in.
pub struct Tracer {
    ruleset: Ruleset,
    /// Per trace id (one hook traversal): the base chain's hook, and the packet, which the
    /// kernel dumps only in the first message of each base chain it runs.
    traces: HashMap<u32, (Option<Hook>, Option<Packet>)>,
}

/// Trace ids remembered at most; older ones are forgotten (their traversals are long over).
const MAX_TRACES: usize = 4096;

impl Tracer {
    pub fn new() -> Result<Self> {
        Ok(Self::with_ruleset(Ruleset::load()?))
    }

    pub fn with_ruleset(ruleset: Ruleset) -> Self {
        Self {
            ruleset,
            traces: HashMap::new(),
        }
    }

    /// Remembers what this message tells about its trace id (hook, packet).
    fn learn(&mut self, raw: &RawTrace) {
        if self.traces.len() >= MAX_TRACES && !self.traces.contains_key(&raw.id) {
            self.traces.clear();
        }
        let chain: ChainKey = (
            NftFamily::from_number(raw.family).name().to_string(),
            raw.table.clone(),
            raw.chain.clone(),
        );
        let hook = self
            .ruleset
            .hook(&chain)
            .map(|(hook, _)| Hook::from_word(hook));
        let entry = self.traces.entry(raw.id).or_default();
        if hook.is_some() {
            entry.0 = hook;
        }
        // The kernel derives a trace id from the skb's address, so a later packet in a reused
        // skb gets the same id: a fresh dump always names the packet now being traced.
        if let Some(packet) =
            super::headers::packet_from_headers(&raw.network_header, &raw.transport_header)
        {
            entry.1 = Some(packet);
        }
    }

    /// A named trace, or None for our own marking table and for the packet dump a trace starts
    /// each chain with (a "rule" message without a rule).
    pub fn name(&mut self, raw: RawTrace, ts_ns: u64) -> Option<RuleTrace> {
        self.learn(&raw);
        if raw.table.starts_with(TABLE_PREFIX)
            || (raw.trace_type == NFT_TRACETYPE_RULE && raw.handle.is_none())
        {
            return None;
        }
        let family = NftFamily::from_number(raw.family);
        let chain: ChainKey = (
            family.name().to_string(),
            raw.table.clone(),
            raw.chain.clone(),
        );
        let mut rule = raw
            .handle
            .and_then(|h| self.ruleset.rule(&chain, h).map(str::to_string));
        if rule.is_none() && raw.handle.is_some() {
            // Docker (or a user) changed the ruleset since we read it.
            if let Ok(fresh) = Ruleset::load() {
                self.ruleset = fresh;
                rule = raw
                    .handle
                    .and_then(|h| self.ruleset.rule(&chain, h).map(str::to_string));
            }
        }
        let kind = match raw.trace_type {
            1 => TraceKind::Policy,
            2 => TraceKind::Return,
            _ => TraceKind::Rule,
        };
        let (hook, packet) = self.traces.get(&raw.id).cloned().unwrap_or_default();
        Some(RuleTrace {
            ts_ns,
            trace_id: raw.id,
            family,
            table: raw.table,
            chain: raw.chain,
            hook,
            kind,
            handle: raw.handle,
            rule,
            verdict: Verdict::from(verdict_words(raw.verdict, raw.verdict_chain.as_deref())),
            packet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::NLMSG_HDRLEN;

    fn attr(t: u16, v: &[u8]) -> Vec<u8> {
        let mut out = ((4 + v.len()) as u16).to_ne_bytes().to_vec();
        out.extend_from_slice(&t.to_ne_bytes());
        out.extend_from_slice(v);
        out.resize(crate::netlink::align4(out.len()), 0);
        out
    }

    #[test]
    fn parses_a_trace_message() {
        let mut payload = vec![2u8, 0, 0, 0];
        payload.extend(attr(NFTA_TRACE_TABLE, b"nat\0"));
        payload.extend(attr(NFTA_TRACE_CHAIN, b"DOCKER\0"));
        payload.extend(attr(NFTA_TRACE_RULE_HANDLE, &14u64.to_be_bytes()));
        payload.extend(attr(NFTA_TRACE_TYPE, &3u32.to_be_bytes()));
        payload.extend(attr(NFTA_TRACE_ID, &0x3490d4e6u32.to_be_bytes()));
        let mut verdict = attr(NFTA_VERDICT_CODE, &(-3i32 as u32).to_be_bytes());
        verdict.extend(attr(NFTA_VERDICT_CHAIN, b"DOCKER\0"));
        payload.extend(attr(NFTA_TRACE_VERDICT | 0x8000, &verdict));
        let mut msg = ((NLMSG_HDRLEN + payload.len()) as u32)
            .to_ne_bytes()
            .to_vec();
        msg.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE).to_ne_bytes());
        msg.extend_from_slice(&[0u8; 10]);
        msg.extend(payload);
        let traces = parse_datagram(&msg);
        assert_eq!(traces.len(), 1);
        let t = &traces[0];
        assert_eq!(
            (
                t.family,
                t.id,
                t.table.as_str(),
                t.chain.as_str(),
                t.handle,
                t.trace_type
            ),
            (2, 0x3490d4e6, "nat", "DOCKER", Some(14), 3)
        );
        assert_eq!(
            verdict_words(t.verdict, t.verdict_chain.as_deref()),
            "jump DOCKER"
        );
    }

    /// An IPv4 + UDP header dump with this IP id.
    fn udp_headers(ip_id: u16) -> (Vec<u8>, Vec<u8>) {
        let mut ip = vec![0x45, 0, 0, 28];
        ip.extend(ip_id.to_be_bytes());
        ip.extend([0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let udp = [0x30, 0x39, 0x07, 0x14, 0, 8, 0, 0].to_vec();
        (ip, udp)
    }

    #[test]
    fn a_reused_trace_id_names_the_packet_of_its_latest_dump() {
        let mut tracer = Tracer::with_ruleset(Ruleset::parse(
            "table ip raw {\n\tchain PREROUTING {\n\t\ttype filter hook prerouting priority raw; policy accept;\n\t}\n}\n",
        ));
        let policy = |ip_id: Option<u16>| {
            let (network_header, transport_header) = ip_id.map(udp_headers).unwrap_or_default();
            RawTrace {
                family: 2,
                id: 7,
                table: "raw".into(),
                chain: "PREROUTING".into(),
                trace_type: 1,
                verdict: Some(1),
                network_header,
                transport_header,
                ..RawTrace::default()
            }
        };
        let first = tracer.name(policy(Some(100)), 1).unwrap();
        let again = tracer.name(policy(None), 2).unwrap();
        let reused = tracer.name(policy(Some(101)), 3).unwrap();
        assert_eq!(first.packet.unwrap().ip_id, 100);
        assert_eq!(
            again.packet.unwrap().ip_id,
            100,
            "no dump: the trace's packet"
        );
        assert_eq!(
            reused.packet.unwrap().ip_id,
            101,
            "a new dump: the new packet"
        );
        assert_eq!(reused.hook, Some(Hook::Prerouting));
    }

    #[test]
    fn names_verdicts() {
        assert_eq!(verdict_words(Some(0), None), "drop");
        assert_eq!(verdict_words(Some(1), None), "accept");
        assert_eq!(verdict_words(Some(-5), None), "return");
        assert_eq!(verdict_words(None, None), "continue");
    }
}
