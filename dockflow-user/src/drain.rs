//! The hot end of the pipeline, on a thread of its own: it empties the kernel's ring buffer in
//! batches, appends every record to the recording, and hands the batches to the display. It is
//! the recording's only writer: what else goes into it (nftables traces, topology changes)
//! comes to it as [`Note`]s, so nothing on the hot path waits for a lock. The
//! display may fall behind under a flood; the ring buffer never waits for it. When the queue to
//! the display is full, a batch is not shown (the recording still has it) and the display is
//! told exactly which records it missed, so the packets they belonged to are marked incomplete.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc as std_mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::maps::{MapData, RingBuf};
use bytes::{BufMut as _, Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::{
    model::{RuleTrace, topology::Topology},
    record::Recorder,
};

/// What the display receives.
pub enum Drained {
    /// Whole kernel records, back to back (each of the run's record size).
    Records(Bytes),
    /// Records the display did not get because it was behind: how many, and the span of their
    /// kernel timestamps.
    Skipped {
        records: u64,
        from_ns: u64,
        to_ns: u64,
    },
}

/// What the main thread adds to the recording, written by the drain thread in its next pass.
pub enum Note {
    Trace(RuleTrace),
    Topology(Topology),
}

/// Records per batch handed over: small enough to keep latency low, large enough that the
/// handover costs nothing per record.
const BATCH_RECORDS: usize = 1024;
/// How long records gather in the ring buffer after a wakeup, when the last pass had caught up:
/// at most a thousand wakeups a second under a flood; the default ring (--ring-size 64 MiB)
/// holds about 100 ms of events at 2 million a second.
const GATHER: Duration = Duration::from_millis(1);
/// Batches the display may be behind before batches are skipped (about 50 MiB).
pub const QUEUE_BATCHES: usize = 256;

pub struct Drain {
    stop: Arc<AtomicBool>,
    /// Records taken from the ring buffer so far.
    drained: Arc<AtomicU64>,
    /// To the recording, when there is one.
    notes: Option<std_mpsc::Sender<Note>>,
    /// Gives the recording back when it ends, for its closing records.
    thread: Option<JoinHandle<Result<Option<Recorder>>>>,
}

impl Drain {
    /// Starts draining `ring`, whose records are `record_size` bytes, into `recorder` (if any)
    /// and `to_display` (if `display`).
    pub fn start(
        ring: RingBuf<MapData>,
        record_size: usize,
        recorder: Option<Recorder>,
        to_display: Option<mpsc::Sender<Drained>>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let drained = Arc::new(AtomicU64::new(0));
        let (notes, noted) = std_mpsc::channel();
        let notes = recorder.is_some().then_some(notes);
        let thread = {
            let (stop, drained) = (stop.clone(), drained.clone());
            let to = Destinations {
                recorder,
                noted,
                to_display,
            };
            std::thread::Builder::new()
                .name("dockflow-drain".into())
                .spawn(move || drain(ring, record_size, to, &stop, &drained))
                .expect("spawning the drain thread")
        };
        Self {
            stop,
            drained,
            notes,
            thread: Some(thread),
        }
    }

    /// Adds `note` to the recording, if there is one.
    pub fn record(&self, note: Note) {
        if let Some(notes) = &self.notes {
            // Fails only once the thread has ended; join tells why.
            let _ = notes.send(note);
        }
    }

    /// Whether the thread has ended before it was asked to (writing the recording failed).
    pub fn has_ended(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Records taken from the ring buffer so far (shown or not).
    pub fn drained(&self) -> u64 {
        self.drained.load(Ordering::Relaxed)
    }

    /// Asks the thread to empty the ring one last time, hand the rest over and end (closing
    /// the queue to the display).
    pub fn request_stop(&self) {
        // Release: the notes sent before are seen by the pass that sees the stop.
        self.stop.store(true, Ordering::Release);
    }

    /// Waits for the thread (asking it to stop first, and writing the notes still coming);
    /// returns how many records it took from the ring buffer in all, and the recording, for its
    /// closing records.
    pub fn join(mut self) -> Result<(u64, Option<Recorder>)> {
        self.request_stop();
        // The last notes are in: the thread writes what is queued and ends.
        self.notes = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map(|recorder| (self.drained(), recorder)),
            Some(Err(_)) => anyhow::bail!("the drain thread panicked"),
            None => Ok((self.drained(), None)),
        }
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.notes = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Nice value of the drain thread: ahead of the display and of ordinary processes for the CPU,
/// so that a busy moment makes the display fall behind (and say so), never the ring buffer.
const DRAIN_NICE: i32 = -5;

/// Gives the calling thread [`DRAIN_NICE`]. Best effort: without CAP_SYS_NICE it stays as it
/// was, and only loses the head start.
fn favour_this_thread() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, DRAIN_NICE);
    }
}

/// Where the drain thread puts what it takes.
struct Destinations {
    recorder: Option<Recorder>,
    /// The main thread's notes for the recording.
    noted: std_mpsc::Receiver<Note>,
    to_display: Option<mpsc::Sender<Drained>>,
}

fn drain(
    mut ring: RingBuf<MapData>,
    record_size: usize,
    to: Destinations,
    stop: &AtomicBool,
    drained: &AtomicU64,
) -> Result<Option<Recorder>> {
    favour_this_thread();
    let Destinations {
        mut recorder,
        noted,
        to_display,
    } = to;
    if let Some(recorder) = recorder.as_mut() {
        // The recording's writing thread is part of the way to disk: favoured alike, or the
        // display's threads starve it until its queue is full and this thread waits on it.
        recorder
            .on_writer_thread(favour_this_thread)
            .context("writing the recording")?;
    }
    let mut handover = Handover {
        to_display,
        record_size,
        batch: BytesMut::with_capacity(BATCH_RECORDS * record_size),
        skipped: None,
    };
    let mut taken = 0;
    loop {
        let stopping = stop.load(Ordering::Acquire);
        if !stopping {
            wait_readable(&ring, Duration::from_millis(50));
            if taken < BATCH_RECORDS as u64 {
                // Caught up last time: let records gather before taking them, or a flood
                // wakes this thread for every few records (a context switch each).
                std::thread::sleep(GATHER);
            }
        }
        taken = 0;
        while let Some(record) = ring.next() {
            taken += 1;
            if let Some(recorder) = recorder.as_mut() {
                recorder.record(&record).context("writing the recording")?;
            }
            handover.push(&record, stopping);
        }
        drained.fetch_add(taken, Ordering::Relaxed);
        handover.hand_over(stopping);
        if let Some(recorder) = recorder.as_mut() {
            for note in noted.try_iter() {
                write_note(recorder, note)?;
            }
            recorder.flush_if_due().context("writing the recording")?;
        }
        if stopping {
            // The display has everything: its queue closes, so it can finish (and the main
            // thread send its last notes and join).
            drop(handover);
            // Notes may still come after the stop (traces of the last packets): they are
            // written until join closes the channel.
            if let Some(recorder) = recorder.as_mut() {
                for note in noted.iter() {
                    write_note(recorder, note)?;
                }
            }
            return Ok(recorder);
        }
    }
}

fn write_note(recorder: &mut Recorder, note: Note) -> Result<()> {
    match note {
        Note::Trace(trace) => recorder.record_trace(&trace),
        Note::Topology(topology) => recorder.record_topology(&topology),
    }
    .context("writing the recording")
}

/// Batches on their way to the display.
struct Handover {
    to_display: Option<mpsc::Sender<Drained>>,
    record_size: usize,
    batch: BytesMut,
    /// Records not shown since the display last had room: (count, first ts, last ts).
    skipped: Option<(u64, u64, u64)>,
}

impl Handover {
    fn push(&mut self, record: &[u8], stopping: bool) {
        if self.to_display.is_none() || record.len() != self.record_size {
            return;
        }
        self.batch.put_slice(record);
        if self.batch.len() >= BATCH_RECORDS * self.record_size {
            self.hand_over(stopping);
        }
    }

    /// Sends the batch, or counts it as skipped when the display is behind. At the end
    /// (`stopping`) it waits for room instead: nothing left over is skipped.
    fn hand_over(&mut self, stopping: bool) {
        let Some(tx) = self.to_display.clone() else {
            return;
        };
        if let Some((records, from_ns, to_ns)) = self.skipped {
            let note = Drained::Skipped {
                records,
                from_ns,
                to_ns,
            };
            if tx.try_send(note).is_ok() {
                self.skipped = None;
            }
        }
        if self.batch.is_empty() {
            return;
        }
        let batch = Drained::Records(self.batch.split().freeze());
        if stopping {
            // The display is gone only if it failed; then there is no one to tell.
            let _ = tx.blocking_send(batch);
        } else if let Err(mpsc::error::TrySendError::Full(Drained::Records(bytes))) =
            tx.try_send(batch)
        {
            self.skip(&bytes);
        }
    }

    fn skip(&mut self, records: &Bytes) {
        let ts = |at: usize| u64::from_ne_bytes(records[at..at + 8].try_into().unwrap());
        let n = records.len() / self.record_size;
        let (first, last) = (ts(0), ts((n - 1) * self.record_size));
        let (count, from, to) = self.skipped.unwrap_or((0, first, last));
        self.skipped = Some((count + n as u64, from.min(first), to.max(last)));
    }
}

/// Blocks until the ring buffer has data or `timeout` passes.
fn wait_readable(ring: &RingBuf<MapData>, timeout: Duration) {
    let mut pollfd = libc::pollfd {
        fd: ring.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pollfd` is one valid pollfd, and the count passed is 1.
    unsafe { libc::poll(&mut pollfd, 1, timeout.as_millis() as i32) };
}
