//! Where the output's inputs come from. A live run (the ring buffer, the nftables trace
//! reader, the clock, the Docker watcher) and a replay (a recording, in recorded time) are both
//! a [`Source`] of the same [`Input`]s, and [`feed`] is the one loop that hands them on.

use std::io::Write;

use anyhow::{Context as _, Result};

use super::Output;
use crate::{
    decode::Decoder,
    model::{Event, ProbePoint, RuleTrace, topology::Topology},
    record::{ReadError, Record, Replay},
};

/// One thing that happened, in the order a source saw it.
#[derive(Debug)]
pub enum Input {
    /// A kernel event, decoded.
    Event(Event),
    /// An nftables rule evaluation.
    Trace(RuleTrace),
    /// New interface names and roles (a followed container came back on a new veth).
    Topology(Topology),
    /// The clock reached this time (kernel monotonic ns): packets idle since are finished.
    Tick(u64),
    /// The display skipped `records` events from `from_ns` to `to_ns` (it was behind).
    NotShown {
        records: u64,
        from_ns: u64,
        to_ns: u64,
    },
    /// The kernel lost events between these times (its ring buffer was full).
    LostBetween { from_ns: u64, to_ns: u64 },
}

/// A stream of inputs: live or recorded.
pub trait Source {
    /// The next input, or `None` once the source has ended. `shown` is what the inputs so
    /// far made of the output (a live source shows its counts in a status line).
    fn next_input(&mut self, shown: &Output<impl Write>) -> Result<Option<Input>>;

    /// The run has what it asked for (--count): from now on the source hands out only what
    /// completes the inputs already taken (a live run's last rule traces), then ends.
    fn stop(&mut self);
}

/// Hands every input of `source` to `output`; once `enough` says the output has what it
/// needs, stops the source and takes what it still completes.
pub fn feed<W: Write>(
    source: &mut impl Source,
    output: &mut Output<W>,
    enough: impl Fn(&Output<W>) -> bool,
) -> Result<()> {
    let mut stopped = false;
    while let Some(input) = source.next_input(output)? {
        output.take(input)?;
        if !stopped && enough(output) {
            source.stop();
            stopped = true;
        }
    }
    Ok(())
}

impl<W: Write> Output<W> {
    /// Takes one input from a source.
    pub fn take(&mut self, input: Input) -> std::io::Result<()> {
        match input {
            Input::Event(event) => self.event(event)?,
            Input::Trace(trace) => self.trace(trace)?,
            Input::Topology(topology) => self.set_topology(topology)?,
            Input::Tick(now_ns) => self.tick(now_ns)?,
            Input::NotShown {
                records,
                from_ns,
                to_ns,
            } => self.not_shown(records, from_ns, to_ns),
            Input::LostBetween { from_ns, to_ns } => self.lost_between(from_ns, to_ns),
        }
        Ok(())
    }
}

/// A recording's inputs in recorded time: its events, traces and topology changes, with a
/// tick every [`RECORDED_TICK_NS`] of recorded time, as the clock ticked live.
pub struct Recorded<R: std::io::Read> {
    replay: Replay<R>,
    /// How the recording's kernel events decode (its header's decoder, maybe asked to keep
    /// the packet bytes).
    decoder: Decoder,
    /// The file's name, for errors.
    name: String,
    next_tick: u64,
    /// The tick that follows the input just handed out.
    tick: Option<u64>,
    stopped: bool,
    /// The kernel's losses per probe point, from the recording's end.
    pub lost: Vec<(ProbePoint, u64)>,
    /// Where the recording was cut short (a killed run, a full disk), if it was.
    pub cut: Option<ReadError>,
}

/// How often a replay finishes idle packets, in recorded time.
pub const RECORDED_TICK_NS: u64 = 10_000_000;

impl<R: std::io::Read> Recorded<R> {
    pub fn new(replay: Replay<R>, decoder: Decoder, name: String) -> Self {
        Self {
            replay,
            decoder,
            name,
            next_tick: 0,
            tick: None,
            stopped: false,
            lost: Vec::new(),
            cut: None,
        }
    }

    /// The next input in the file, with the time it happened (None for a topology change).
    fn read(&mut self) -> Result<Option<(Input, Option<u64>)>> {
        loop {
            let record = match self.replay.next_record() {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(None),
                Err(cut @ ReadError::Cut { .. }) => {
                    self.cut = Some(cut);
                    return Ok(None);
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", self.name)),
            };
            return Ok(Some(match record {
                Record::Kernel(bytes) => {
                    let event = self
                        .decoder
                        .decode(&bytes)
                        .with_context(|| format!("{} holds an undecodable event", self.name))?;
                    let ts = event.ts_ns;
                    (Input::Event(event), Some(ts))
                }
                Record::Trace(trace) => {
                    let ts = trace.ts_ns;
                    (Input::Trace(trace), Some(ts))
                }
                Record::Topology(topology) => (Input::Topology(*topology), None),
                Record::Losses(counts) => {
                    self.lost = counts;
                    continue;
                }
            }));
        }
    }
}

impl<R: std::io::Read> Recorded<R> {
    /// The next input, ticks included; what [`Source::next_input`] hands out, for a reader
    /// with no output of its own (the merge of several nodes' recordings).
    pub fn next_recorded(&mut self) -> Result<Option<Input>> {
        if self.stopped {
            return Ok(None);
        }
        if let Some(now_ns) = self.tick.take() {
            return Ok(Some(Input::Tick(now_ns)));
        }
        let Some((input, ts)) = self.read()? else {
            return Ok(None);
        };
        // Checked every few milliseconds of recorded time, not per record.
        if let Some(ts) = ts.filter(|ts| *ts >= self.next_tick) {
            self.tick = Some(ts);
            self.next_tick = ts.saturating_add(RECORDED_TICK_NS);
        }
        Ok(Some(input))
    }
}

impl<R: std::io::Read> Source for Recorded<R> {
    fn next_input(&mut self, _shown: &Output<impl Write>) -> Result<Option<Input>> {
        self.next_recorded()
    }

    fn stop(&mut self) {
        self.stopped = true;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::{model::topology::Topology, output::Mode, render::Style};

    /// A scripted source: its inputs, then after `stop` only `completing` ones.
    struct Script {
        inputs: VecDeque<Input>,
        completing: VecDeque<Input>,
        stops: u32,
    }

    impl Source for Script {
        fn next_input(&mut self, _shown: &Output<impl Write>) -> Result<Option<Input>> {
            Ok(if self.stops > 0 {
                self.completing.pop_front()
            } else {
                self.inputs.pop_front()
            })
        }

        fn stop(&mut self) {
            self.stops += 1;
        }
    }

    fn event(ts_ns: u64) -> Input {
        Input::Event(Event {
            ts_ns,
            skb_id: None,
            probe: ProbePoint::TcIngress,
            ifindex: 7,
            netns: None,
            packet: None,
            netfilter: None,
            conntrack: None,
            drop: None,
            capture: None,
            outer: None,
            sample: false,
        })
    }

    fn raw_output() -> Output<Vec<u8>> {
        Output::new(
            Mode::Raw,
            false,
            Style { color: false },
            Topology::default(),
            Vec::new(),
        )
    }

    #[test]
    fn feeding_stops_the_source_once_and_takes_only_what_completes_the_run() {
        let mut script = Script {
            inputs: (1..=5).map(event).collect(),
            completing: [Input::Tick(9)].into(),
            stops: 0,
        };
        let mut output = raw_output();
        feed(&mut script, &mut output, |output| output.stats.events >= 2).unwrap();
        assert_eq!(script.stops, 1);
        assert_eq!(output.stats.events, 2);
        assert!(
            script.completing.is_empty(),
            "the completing input was not taken"
        );
    }

    #[test]
    fn a_source_that_ends_on_its_own_is_never_stopped() {
        let mut script = Script {
            inputs: (1..=3).map(event).collect(),
            completing: VecDeque::new(),
            stops: 0,
        };
        let mut output = raw_output();
        feed(&mut script, &mut output, |_| false).unwrap();
        assert_eq!((script.stops, output.stats.events), (0, 3));
        assert_eq!(output.latest_ts(), 3);
    }
}
