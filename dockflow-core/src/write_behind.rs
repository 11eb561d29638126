//! A file written by a thread of its own. Writing a file of gigabytes costs the kernel about as
//! much as making its bytes (the copy into the page cache, and any stall of the disk); with the
//! write behind, that runs beside the thread that makes the next bytes: the capture file's
//! renderers, or the thread that empties the kernel's ring buffer into a recording.

use std::{
    fs::File,
    io::{self, Write},
    os::fd::AsRawFd as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use bytes::{Bytes, BytesMut};

/// Bytes gathered before they go to the writing thread.
const CHUNK: usize = 1 << 20;
/// Chunks on their way before a write waits (the memory a slow disk may hold up), unless
/// [`WriteBehind::with_queue`] says otherwise.
const QUEUED_CHUNKS: usize = 16;
/// Written chunks kept for reuse (fresh megabytes cost a page fault every 4 KiB).
const SPARE_CHUNKS: usize = 4;
/// A file written [`WriteBehind::dropping_behind`] leaves the page cache in windows of this
/// size: one is written back while the next fills, the one before leaves.
const DROP_WINDOW: i64 = 16 << 20;

enum ToWriter {
    Data(Bytes),
    /// Everything before is written (and flushed): answer with the first error, if any.
    Flush(mpsc::SyncSender<io::Result<()>>),
    /// Run this on the writing thread (to give it a thread's priority, say).
    Run(Box<dyn FnOnce() + Send>),
}

pub struct WriteBehind {
    chunk: BytesMut,
    /// Chunks the writing thread is done with, back for reuse.
    spare: mpsc::Receiver<BytesMut>,
    /// The writing thread's failure, if it had one: the next write fails with it.
    failed: Arc<Failure>,
    to_writer: Option<mpsc::SyncSender<ToWriter>>,
    thread: Option<JoinHandle<()>>,
}

impl WriteBehind {
    pub fn new(file: File) -> Self {
        Self::with_queue(file, QUEUED_CHUNKS)
    }

    /// A writer for a file written once and read later by another program (a capture file):
    /// what is on disk leaves the page cache a window or two behind the writes, so that
    /// gigabytes of it do not push the host's own cached files out, and the next writes reuse
    /// the pages (half the writing thread's time on a VM whose fresh pages cost the host a
    /// fault each). The writes then keep the disk's pace, 32 MiB ahead at most: recordings,
    /// whose bursts the page cache absorbs while the ring buffer cannot wait, do not use it.
    pub fn dropping_behind(file: File) -> Self {
        Self::spawn(file, QUEUED_CHUNKS, true)
    }

    /// A writer whose thread may fall `chunks` chunks (of about 1 MiB) behind before a write
    /// waits for it.
    pub fn with_queue(file: File, chunks: usize) -> Self {
        Self::spawn(file, chunks, false)
    }

    fn spawn(file: File, chunks: usize, drop_behind: bool) -> Self {
        let (to_writer, queue) = mpsc::sync_channel(chunks);
        let (recycle, spare) = mpsc::sync_channel(SPARE_CHUNKS);
        let failed = Arc::new(Failure::default());
        let thread = {
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("dockflow-write".into())
                .spawn(move || write_chunks(file, drop_behind, &queue, &recycle, &failed))
                .expect("spawning the writing thread")
        };
        Self {
            chunk: BytesMut::with_capacity(CHUNK),
            spare,
            failed,
            to_writer: Some(to_writer),
            thread: Some(thread),
        }
    }

    /// Runs `f` on the writing thread, after what was written before.
    pub fn on_writer_thread(&mut self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.send(ToWriter::Run(Box::new(f)))
    }

    /// Hands what was written so far to the writing thread, without waiting for it.
    pub fn hand_over(&mut self) -> io::Result<()> {
        self.send_chunk()
    }

    fn send(&mut self, message: ToWriter) -> io::Result<()> {
        let to_writer = self.to_writer.as_ref().expect("writer running until drop");
        to_writer
            .send(message)
            .map_err(|_| io::Error::other("the writing thread ended"))
    }

    fn send_chunk(&mut self) -> io::Result<()> {
        self.failed.check()?;
        if self.chunk.is_empty() {
            return Ok(());
        }
        // A spare may be a handed-over buffer of another size: a write sends the chunk before
        // its length passes CHUNK, whatever its capacity.
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| BytesMut::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.chunk, next).freeze();
        self.send(ToWriter::Data(full))
    }
}

/// A writer that can take a whole buffer (a capture file's batch of frames: megabytes,
/// gigabytes in all) and give back an empty one for the next: by default a copy.
pub trait WriteOwned: Write {
    fn write_owned(&mut self, mut bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        self.write_all(&bytes)?;
        bytes.clear();
        Ok(bytes)
    }
}

impl WriteOwned for Vec<u8> {}

impl WriteOwned for WriteBehind {
    /// Hands `bytes` to the writing thread after what was written before, without copying
    /// them; the buffer given back is one the writing thread is done with, where there is one.
    fn write_owned(&mut self, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        self.send_chunk()?;
        // Where none is back yet, one as large (growing a buffer copies it, again and again).
        let size = bytes.len();
        self.send(ToWriter::Data(Bytes::from(bytes)))?;
        Ok(self
            .spare
            .try_recv()
            .map(Vec::from)
            .unwrap_or_else(|_| Vec::with_capacity(size)))
    }
}

impl Write for WriteBehind {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.failed.check()?;
        // Sent before it would outgrow its megabyte (growing copies it).
        if !self.chunk.is_empty() && self.chunk.len() + bytes.len() > CHUNK {
            self.send_chunk()?;
        }
        self.chunk.extend_from_slice(bytes);
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
    drop_behind: bool,
    queue: &mpsc::Receiver<ToWriter>,
    recycle: &mpsc::SyncSender<BytesMut>,
    failed: &Failure,
) {
    let mut failure: Option<io::Error> = None;
    let mut cached = drop_behind.then(CachedRange::default);
    for message in queue {
        match (message, &failure) {
            (ToWriter::Data(bytes), None) => {
                if let Err(error) = file.write_all(&bytes) {
                    // Shared only now: the writes themselves take no lock.
                    failed.set(&error);
                    failure = Some(error);
                } else if let Some(cached) = &mut cached {
                    cached.written(&file, bytes.len());
                }
                if let Ok(mut chunk) = bytes.try_into_mut() {
                    chunk.clear();
                    // Full (spares enough) or gone: dropped.
                    let _ = recycle.try_send(chunk);
                }
            }
            (ToWriter::Data(_), Some(_)) => {}
            (ToWriter::Flush(answer), None) => {
                let _ = answer.send(file.flush());
            }
            (ToWriter::Flush(answer), Some(error)) => {
                let _ = answer.send(Err(copy(error)));
            }
            (ToWriter::Run(f), _) => f(),
        }
    }
}

/// What of a file written [`WriteBehind::dropping_behind`] may still be in the page cache: the
/// bytes from `start` to `end`.
#[derive(Default)]
struct CachedRange {
    start: i64,
    end: i64,
}

impl CachedRange {
    /// After `len` more bytes: once two windows are cached, the newer one is handed to the
    /// disk, the older one (handed over a window ago) waited for and dropped. Best effort: a
    /// file these calls do not apply to (a pipe, /dev/null) is written all the same.
    fn written(&mut self, file: &File, len: usize) {
        self.end += len as i64;
        if self.end - self.start < 2 * DROP_WINDOW {
            return;
        }
        let (fd, older, newer) = (file.as_raw_fd(), self.start, self.start + DROP_WINDOW);
        // SAFETY: plain system calls on a descriptor this thread owns, with no pointers.
        unsafe {
            libc::sync_file_range(fd, newer, DROP_WINDOW, libc::SYNC_FILE_RANGE_WRITE);
            libc::sync_file_range(
                fd,
                older,
                DROP_WINDOW,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
            libc::posix_fadvise(fd, older, DROP_WINDOW, libc::POSIX_FADV_DONTNEED);
        }
        self.start = newer;
    }
}

/// The writing thread's failure, for the writes after it.
#[derive(Default)]
struct Failure {
    /// Checked on every write: no lock until something failed.
    happened: AtomicBool,
    error: Mutex<Option<io::Error>>,
}

impl Failure {
    fn set(&self, error: &io::Error) {
        *self.error.lock().expect("not poisoned") = Some(copy(error));
        self.happened.store(true, Ordering::Release);
    }

    fn check(&self) -> io::Result<()> {
        if !self.happened.load(Ordering::Acquire) {
            return Ok(());
        }
        match &*self.error.lock().expect("not poisoned") {
            Some(error) => Err(copy(error)),
            None => Ok(()),
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
    fn owned_buffers_go_in_order_with_the_copied_bytes_and_come_back_for_reuse() {
        let path = std::env::temp_dir().join(format!("dockflow-wb-owned-{}", std::process::id()));
        let mut writer = WriteBehind::new(File::create(&path).unwrap());
        let mut expected = Vec::new();
        let mut spare = Vec::new();
        let mut reused = false;
        for i in 0..200u32 {
            writer
                .write_all(format!("copied {i}\n").as_bytes())
                .unwrap();
            expected.extend_from_slice(format!("copied {i}\n").as_bytes());
            assert!(spare.is_empty(), "a spare comes back empty");
            reused |= spare.capacity() >= 100_000;
            spare.extend_from_slice(&vec![b'a' + (i % 26) as u8; 100_000]);
            expected.extend_from_slice(&spare);
            spare = writer.write_owned(spare).unwrap();
            if i % 50 == 0 {
                writer.flush().unwrap();
            }
        }
        writer.flush().unwrap();
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "bytes out of order"
        );
        assert!(reused, "no handed-over buffer came back");
        drop(writer);
        std::fs::remove_file(&path).unwrap();
    }

    /// Pages of `file` in the page cache (mincore on a mapping of it).
    fn cached_pages(file: &File, len: usize) -> usize {
        let page = 4096;
        // SAFETY: a read-only shared mapping of `len` bytes of an open file, unmapped below;
        // mincore writes one byte per page into a vector of that many bytes.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut resident = vec![0u8; len.div_ceil(page)];
            assert_eq!(libc::mincore(map, len, resident.as_mut_ptr()), 0);
            libc::munmap(map, len);
            resident.iter().filter(|r| **r & 1 == 1).count()
        }
    }

    #[test]
    fn a_file_written_dropping_behind_is_whole_and_leaves_the_page_cache_behind_the_writes() {
        let path = std::env::temp_dir().join(format!("dockflow-wb-drop-{}", std::process::id()));
        let mut writer = WriteBehind::dropping_behind(File::create(&path).unwrap());
        let mut expected = Vec::new();
        let mut spare = Vec::new();
        for i in 0..80u32 {
            spare.extend(std::iter::repeat_n(i as u8, 1 << 20));
            expected.extend_from_slice(&spare);
            spare = writer.write_owned(spare).unwrap();
        }
        writer.flush().unwrap();
        drop(writer);
        let file = File::open(&path).unwrap();
        let cached = cached_pages(&file, expected.len());
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "bytes out of order"
        );
        std::fs::remove_file(&path).unwrap();
        // tmpfs keeps every page (it has no disk to leave them on).
        // SAFETY: statfs fills the struct it is given, zeroed before.
        let on_tmpfs = unsafe {
            let mut fs: libc::statfs = std::mem::zeroed();
            let dir =
                std::ffi::CString::new(std::env::temp_dir().into_os_string().into_encoded_bytes())
                    .unwrap();
            libc::statfs(dir.as_ptr(), &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
        };
        if !on_tmpfs {
            // 80 MiB written: at most the last two windows and what followed them stay.
            assert!(cached * 4096 <= 48 << 20, "{cached} pages still cached");
        }
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
