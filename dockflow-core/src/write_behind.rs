//! A file written by a thread of its own. Writing a capture file of gigabytes costs the kernel
//! about as much as making its bytes (the copy into the page cache); with the write behind,
//! that copy runs beside the thread that makes the next frames.

use std::{
    fs::File,
    io::{self, Write},
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
};

use bytes::{Bytes, BytesMut};

/// Bytes gathered before they go to the writing thread.
const CHUNK: usize = 1 << 20;
/// Chunks on their way before a write waits (the memory a slow disk may hold up).
const QUEUED_CHUNKS: usize = 16;

enum ToWriter {
    Data(Bytes),
    /// Everything before is written (and flushed): answer with the first error, if any.
    Flush(mpsc::SyncSender<io::Result<()>>),
}

pub struct WriteBehind {
    chunk: BytesMut,
    /// The writing thread's failure, if it had one: the next write fails with it.
    failed: Arc<Mutex<Option<io::Error>>>,
    to_writer: Option<mpsc::SyncSender<ToWriter>>,
    thread: Option<JoinHandle<()>>,
}

impl WriteBehind {
    pub fn new(file: File) -> Self {
        let (to_writer, queue) = mpsc::sync_channel(QUEUED_CHUNKS);
        let failed = Arc::new(Mutex::new(None));
        let thread = {
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("dockflow-write".into())
                .spawn(move || write_chunks(file, &queue, &failed))
                .expect("spawning the writing thread")
        };
        Self {
            chunk: BytesMut::with_capacity(CHUNK),
            failed,
            to_writer: Some(to_writer),
            thread: Some(thread),
        }
    }

    fn send(&mut self, message: ToWriter) -> io::Result<()> {
        let to_writer = self.to_writer.as_ref().expect("writer running until drop");
        to_writer
            .send(message)
            .map_err(|_| io::Error::other("the writing thread ended"))
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        if let Some(error) = &*self.failed.lock().expect("not poisoned") {
            return Err(copy(error));
        }
        if self.chunk.is_empty() {
            return Ok(());
        }
        let full = self.chunk.split().freeze();
        self.chunk.reserve(CHUNK);
        self.send(ToWriter::Data(full))
    }
}

impl Write for WriteBehind {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.chunk.extend_from_slice(bytes);
        if self.chunk.len() >= CHUNK {
            self.send_chunk()?;
        }
        Ok(bytes.len())
    }

    /// Waits until everything written so far is in the file; a failed write shows here (or
    /// at the write after it).
    fn flush(&mut self) -> io::Result<()> {
        self.send_chunk()?;
        let (answer, answered) = mpsc::sync_channel(1);
        self.send(ToWriter::Flush(answer))?;
        answered
            .recv()
            .map_err(|_| io::Error::other("the writing thread ended"))?
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        let _ = self.send_chunk();
        self.to_writer = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes the chunks in order. After a failure it writes nothing more, and answers every
/// flush with the failure until the queue closes.
fn write_chunks(
    mut file: File,
    queue: &mpsc::Receiver<ToWriter>,
    failed: &Mutex<Option<io::Error>>,
) {
    let mut failure: Option<io::Error> = None;
    for message in queue {
        match (message, &failure) {
            (ToWriter::Data(bytes), None) => {
                if let Err(error) = file.write_all(&bytes) {
                    // Shared only now: the writes themselves take no lock.
                    *failed.lock().expect("not poisoned") = Some(copy(&error));
                    failure = Some(error);
                }
            }
            (ToWriter::Data(_), Some(_)) => {}
            (ToWriter::Flush(answer), None) => {
                let _ = answer.send(file.flush());
            }
            (ToWriter::Flush(answer), Some(error)) => {
                let _ = answer.send(Err(copy(error)));
            }
        }
    }
}

/// io::Error is not Clone: the same kind and words.
fn copy(error: &io::Error) -> io::Error {
    match error.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(error.kind(), error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_everything_in_order_and_flush_waits_for_it() {
        let path = std::env::temp_dir().join(format!("dockflow-wb-{}", std::process::id()));
        let mut writer = WriteBehind::new(File::create(&path).unwrap());
        let mut expected = Vec::new();
        for i in 0..5000u32 {
            let line = format!("line {i} {}\n", "x".repeat((i % 700) as usize));
            writer.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        writer.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        drop(writer);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_failed_write_shows_at_flush() {
        // /dev/full fails every write with ENOSPC.
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            return;
        };
        let mut writer = WriteBehind::new(full);
        writer.write_all(&[0; 3 * CHUNK]).unwrap_or(());
        let error = writer.flush().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
        // And every write after it.
        let error = writer.write_all(&[0; 2 * CHUNK]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::StorageFull, "{error}");
    }
}
