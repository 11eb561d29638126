//! Rendering on threads of their own. A busy run spends most of its time making text: the
//! stream's packet blocks or JSON lines, --raw lines, the capture file's frame comments and
//! JSON. Each item renders from nothing but itself and the topology, so the front hands
//! batches of finished items to [`Workers`] and writes what comes back in the order the
//! batches were made; the files' bytes are the same as rendering them one by one.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
};

use super::{pipeline::Produced, sinks::StreamFormat};
use crate::{
    model::{Event, RuleTrace, topology::Topology},
    pcapng::Frames,
    render::Renderer,
};

/// What is rendered: the pipeline's items, or --raw's events and traces.
pub enum Shown {
    Item(Produced),
    Event(Event),
    Trace(RuleTrace),
}

/// Items to render together, with what they are rendered for.
pub struct Batch {
    pub shown: Vec<Shown>,
    /// The topology the items were made with (names and roles).
    pub topology: Arc<Topology>,
    /// The stream's format, when the stream shows anything.
    pub stream: Option<StreamFormat>,
    /// The capture file's clock offset, when it takes the packets' frames.
    pub frames: Option<i64>,
    /// --raw text times count from this event time (the first event shown).
    pub first_ts: Option<u64>,
    /// Where it is rendered to (empty; reused from an earlier batch if there was one).
    pub buffers: Buffers,
}

/// A batch's rendering: the stream's bytes, and (with --pcapng) its packets' frames' texts.
#[derive(Default)]
pub struct Buffers {
    pub stream: Vec<u8>,
    /// The frames of the packets among the batch's items, hop by hop, in order.
    pub frames: Frames,
}

impl Buffers {
    pub fn clear(&mut self) {
        self.stream.clear();
        self.frames.clear();
    }
}

/// A batch rendered.
pub struct Rendered {
    /// The items, back for the capture file's blocks.
    pub shown: Vec<Shown>,
    pub topology: Arc<Topology>,
    pub buffers: Buffers,
}

impl Batch {
    pub fn render(self) -> Rendered {
        let Buffers {
            mut stream,
            mut frames,
        } = self.buffers;
        let mut raw: Option<Renderer> = None;
        for shown in &self.shown {
            match (shown, &self.stream) {
                (Shown::Item(produced), format) => {
                    if let Some(format) = format {
                        format.item(&produced.item(), &self.topology, &mut stream);
                    }
                    if let (Some(clock_offset_ns), Produced::Packet(path)) = (self.frames, produced)
                    {
                        frames.push(path, &self.topology, clock_offset_ns);
                    }
                }
                (Shown::Event(event), Some(format)) => {
                    let renderer = raw.get_or_insert_with(|| {
                        Renderer::starting_at(
                            format.json,
                            self.topology.names.clone(),
                            self.first_ts,
                        )
                    });
                    renderer
                        .write_line(event, &mut stream)
                        .expect("writing to memory");
                }
                (Shown::Trace(trace), Some(format)) => format.raw_trace(trace, &mut stream),
                (Shown::Event(_) | Shown::Trace(_), None) => {}
            }
        }
        Rendered {
            shown: self.shown,
            topology: self.topology,
            buffers: Buffers { stream, frames },
        }
    }
}

type Job = (u64, Batch);
type Done = (u64, std::thread::Result<Rendered>);

/// Threads rendering batches; what they render comes back in the order it was sent.
pub struct Workers {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    /// Batches sent so far (the next one's number).
    sent: u64,
    /// The number of the next batch to hand back.
    next: u64,
    /// Batches back before their turn.
    arrived: BTreeMap<u64, Rendered>,
}

impl Workers {
    pub fn start(count: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel::<Done>();
        let queue = Arc::new(Mutex::new(queue));
        let threads = (0..count.max(1))
            .map(|_| {
                let (queue, finished) = (queue.clone(), finished.clone());
                std::thread::Builder::new()
                    .name("dockflow-render".into())
                    .spawn(move || render_jobs(&queue, &finished))
                    .expect("spawning a render thread")
            })
            .collect();
        Self {
            jobs: Some(jobs),
            done,
            threads,
            sent: 0,
            next: 0,
            arrived: BTreeMap::new(),
        }
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Batches sent and not handed back yet.
    pub fn in_flight(&self) -> u64 {
        self.sent - self.next
    }

    pub fn send(&mut self, batch: Batch) {
        let jobs = self.jobs.as_ref().expect("workers running");
        jobs.send((self.sent, batch))
            .expect("render threads outlive their queue");
        self.sent += 1;
    }

    /// The next batch in order: if it is back already, or (with `wait`) once it is. A panic
    /// on a render thread goes on here.
    pub fn next(&mut self, wait: bool) -> Option<Rendered> {
        loop {
            if let Some(rendered) = self.arrived.remove(&self.next) {
                self.next += 1;
                return Some(rendered);
            }
            if self.in_flight() == 0 {
                return None;
            }
            let (number, result) = if wait {
                self.done.recv().expect("render threads answer every batch")
            } else {
                self.done.try_recv().ok()?
            };
            match result {
                Ok(rendered) => {
                    self.arrived.insert(number, rendered);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends each thread after its current batch.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn render_jobs(queue: &Mutex<mpsc::Receiver<Job>>, finished: &mpsc::Sender<Done>) {
    loop {
        // The lock is held only while waiting for a job, not while rendering it.
        let job = queue.lock().map(|queue| queue.recv());
        let Ok(Ok((number, batch))) = job else {
            return;
        };
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch.render()));
        if finished.send((number, rendered)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::{Mode, Output, source::Input};
    use crate::{
        path::tests_support::{seed_events, seed_paths},
        pcapng::{PcapngWriter, Section},
        render::Style,
    };

    /// The seed's exchange `n` times, a millisecond apart, with a tick now and then (so that
    /// batches come in all sizes, some rendered here, some on the threads).
    fn inputs(n: u64) -> Vec<Input> {
        let mut inputs = Vec::new();
        for k in 0..n {
            for mut event in seed_events() {
                event.ts_ns += k * 1_000_000;
                inputs.push(Input::Event(event));
            }
            if k % 7 == 0 || k % 50 > 40 {
                inputs.push(Input::Tick(k * 1_000_000 + 500_000));
            }
        }
        inputs
    }

    /// What `inputs` make of the stream (and, with `capture`, of a capture file) in `mode`,
    /// rendered on `threads` threads.
    fn rendered(mode: Mode, json: bool, threads: usize, capture: bool) -> (Vec<u8>, Vec<u8>) {
        let file = std::env::temp_dir().join(format!(
            "dockflow-workers-{}-{threads}-{json}-{mode:?}.pcapng",
            std::process::id()
        ));
        let mut output = Output::new(
            mode,
            json,
            Style { color: false },
            seed_paths().0,
            Vec::new(),
        )
        .with_render_threads(threads);
        if capture {
            let section = Section {
                target: "network infranet".into(),
                networks: Vec::new(),
                kernel: "6.1".into(),
                started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                filter: None,
            };
            output = output.with_pcapng(PcapngWriter::create(&file, &section, 128, 0).unwrap());
        }
        for input in inputs(400) {
            output.take(input).unwrap();
        }
        output.finish().unwrap();
        output.finish_pcapng(&[]).unwrap();
        let captured = if capture {
            let bytes = std::fs::read(&file).unwrap();
            std::fs::remove_file(&file).unwrap();
            bytes
        } else {
            Vec::new()
        };
        (output.stream.writer.clone(), captured)
    }

    #[test]
    fn render_threads_write_the_same_bytes_in_the_same_order() {
        for (mode, json) in [
            (Mode::Paths, false),
            (Mode::Paths, true),
            (Mode::Raw, false),
            (Mode::Raw, true),
        ] {
            let capture = mode == Mode::Paths;
            let (stream, captured) = rendered(mode, json, 0, capture);
            assert!(
                stream.len() > 100_000,
                "{mode:?} json {json}: too little to compare"
            );
            for threads in [1, 3] {
                let (threaded, threaded_capture) = rendered(mode, json, threads, capture);
                assert!(
                    threaded == stream,
                    "{mode:?} json {json}, {threads} threads: the stream differs"
                );
                assert!(
                    threaded_capture == captured,
                    "{mode:?} json {json}, {threads} threads: the capture file differs"
                );
            }
        }
    }
}
