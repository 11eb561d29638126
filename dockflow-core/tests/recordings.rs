//! The recording reader against cut, random and bit-flipped files: it never panics, never
//! allocates more than the file could hold, and a file cut at any byte gives back every whole
//! record before the cut. Cases proptest finds failing are kept in proptest-regressions/; the
//! files in tests/corpus/ are kept ones too, replayed on every run.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

use dockflow_common::PACKET_EVENT_SIZE;
use dockflow_core::{
    decode::Decoder,
    model::topology::Topology,
    record::{Header, ReadError, Record, Recorder, Replay},
};
use proptest::prelude::*;

/// The largest single allocation this thread made since the last reset (tests run in
/// parallel threads).
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

// SAFETY: every method forwards to the system allocator with the same arguments; it only
// counts sizes on the side.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwards the caller's own GlobalAlloc contract to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwards the caller's own GlobalAlloc contract to the system allocator unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwards the caller's own GlobalAlloc contract to the system allocator unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

fn header() -> Header {
    Header {
        target: "container fuzz".into(),
        record_size: PACKET_EVENT_SIZE,
        decoder: Decoder::default(),
        topology: Topology::default(),
        origin: Default::default(),
    }
}

/// A recording of `n` kernel records (each filled with its index), and where each ends.
fn recording(n: usize) -> (Vec<u8>, Vec<usize>) {
    let path = std::env::temp_dir().join(format!(
        "dockflow-fuzz-{}-{n}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut recorder = Recorder::create(&path, &header()).unwrap();
    for i in 0..n {
        recorder.record(&[i as u8; PACKET_EVENT_SIZE]).unwrap();
    }
    recorder.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let first = bytes.len() - n * (5 + PACKET_EVENT_SIZE);
    let ends = (1..=n)
        .map(|i| first + i * (5 + PACKET_EVENT_SIZE))
        .collect();
    (bytes, ends)
}

/// Reads a whole file: the records, and how it ended (None: cleanly).
fn read_all(bytes: &[u8]) -> Result<(Vec<Record>, Option<ReadError>), anyhow::Error> {
    let mut replay = Replay::from_reader(bytes)?;
    let mut records = Vec::new();
    loop {
        match replay.next_record() {
            Ok(Some(r)) => records.push(r),
            Ok(None) => return Ok((records, None)),
            Err(e) => return Ok((records, Some(e))),
        }
    }
}

/// Reads `bytes` and checks that no single allocation exceeded what the file could justify:
/// twice its size (a growing buffer doubles) plus the reader's fixed 8 KiB start.
fn read_bounded(bytes: &[u8]) {
    LARGEST.with(|l| l.set(0));
    let _ = read_all(bytes);
    let largest = LARGEST.with(Cell::get);
    assert!(
        largest <= 2 * bytes.len() + 8 * 1024,
        "allocated {largest} bytes for a {}-byte file",
        bytes.len()
    );
}

#[test]
fn a_recording_cut_at_any_byte_gives_back_every_whole_record_before_the_cut() {
    let (bytes, ends) = recording(3);
    let header_end = bytes.len() - 3 * (5 + PACKET_EVENT_SIZE);
    for cut in 0..=bytes.len() {
        let result = read_all(&bytes[..cut]);
        if cut < header_end {
            assert!(result.is_err(), "cut at {cut} inside the header");
            continue;
        }
        let (records, end) = result.unwrap();
        let whole = ends.iter().filter(|e| **e <= cut).count();
        assert_eq!(records.len(), whole, "cut at {cut}");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r, &Record::Kernel(vec![i as u8; PACKET_EVENT_SIZE]));
        }
        let at_boundary = cut == header_end || ends.contains(&cut);
        match end {
            None => assert!(at_boundary, "cut at {cut} must be reported"),
            Some(ReadError::Cut { record, offset }) => {
                assert!(!at_boundary);
                assert_eq!(record as usize, whole + 1);
                assert_eq!(
                    offset as usize,
                    if whole == 0 {
                        header_end
                    } else {
                        ends[whole - 1]
                    }
                );
            }
            Some(other) => panic!("cut at {cut}: {other}"),
        }
    }
}

#[test]
fn the_kept_corpus_reads_without_panic_or_unbounded_allocation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        read_bounded(&bytes);
        seen += 1;
    }
    assert!(seen > 0, "no corpus in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        read_bounded(&bytes);
    }

    #[test]
    fn random_bytes_after_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..2048)
    ) {
        let (mut bytes, _) = recording(0);
        bytes.extend_from_slice(&tail);
        read_bounded(&bytes);
    }

    #[test]
    fn flipped_bits_never_panic(flips in proptest::collection::vec((any::<usize>(), 0u8..8), 1..8)) {
        let (mut bytes, _) = recording(4);
        for (at, bit) in flips {
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
        }
        read_bounded(&bytes);
    }
}
