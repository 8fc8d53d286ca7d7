//! How expert bytes get from storage into pool slots: one read-request type, one [`Backend`]
//! trait, three implementations (io_uring, a pread thread pool, mmap copies).
//!
//! TigerBeetle's shape: the caller owns each request until its completion is reaped;
//! completions are queued, never run inline, and every submitted request produces exactly one
//! completion (errors included), which keeps the cache's bookkeeping simple.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::pool::{SlotPool, ALIGN};
use super::source::Source;
use crate::Result;

/// One aligned read of file bytes into a pool slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    /// File offset, a multiple of [`ALIGN`].
    pub offset: u64,
    /// Bytes to read, a multiple of [`ALIGN`]; may run past the end of the file (the aligned
    /// superset of the last tensor), in which case only the bytes up to the end are read.
    pub len: usize,
    /// Destination slot.
    pub slot: usize,
    /// Destination offset inside the slot, a multiple of [`ALIGN`].
    pub slot_offset: usize,
    /// The caller's identifier, unique among requests in flight.
    pub tag: u64,
}

/// The outcome of one request.
#[derive(Debug)]
pub struct Completion {
    pub tag: u64,
    pub result: io::Result<()>,
}

/// Reads file ranges into pool slots.
pub trait Backend: Send + Sync {
    /// A short name for reports (`io_uring`, `pread`, `mmap`).
    fn name(&self) -> &'static str;

    /// Starts the reads. Never blocks on I/O; a request that cannot be started completes with
    /// an error.
    fn submit(&self, reqs: &[ReadRequest]);

    /// Like [`Backend::submit`], ahead of requests still queued in the backend (reads the
    /// forward pass is blocked on, passing speculative ones).
    fn submit_first(&self, reqs: &[ReadRequest]) {
        self.submit(reqs)
    }

    /// Whether reads run in the background. A synchronous backend (mmap copies) reads inside
    /// `submit`, so speculative reads would only stall the caller.
    fn is_async(&self) -> bool {
        true
    }

    /// Appends the completions that are ready, without blocking.
    fn reap(&self, out: &mut Vec<Completion>);

    /// Blocks until request `tag` completes and returns its result; it is not returned by a
    /// later `reap`. Completions of other requests seen meanwhile stay queued for `reap`.
    fn wait(&self, tag: u64) -> io::Result<()>;

    /// Blocks until request `tag` completes (`Some`, as [`Backend::wait`]) or another
    /// completion is ready to [`Backend::reap`] (`None`), so the caller can react to it (start
    /// the next speculative read) while it waits.
    fn wait_progress(&self, tag: u64) -> Option<io::Result<()>> {
        Some(self.wait(tag))
    }

    /// Asks that these requests stop: those not started complete at once with a
    /// [`cancelled`] error; those the device already works on may still complete normally.
    /// Each request still produces exactly one completion.
    fn cancel(&self, _tags: &[u64]) {}

    /// The pool now uses slots `0..active` (it was raised or lowered). A backend that pins
    /// slots (io_uring's fixed buffers) pins exactly those from now on, so lowered slots'
    /// memory can be given back.
    fn resize(&self, _active: usize) {}
}

/// The error a cancelled request completes with.
pub fn cancelled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}

/// Whether a request's error means it was cancelled rather than failed.
pub fn is_cancelled(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ECANCELED)
}

/// Where experts are served from: the one backend choice of every layer (load options, the
/// CLI's `--backend`, the C API's `EMOE_BACKEND_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// Streamed with the best I/O backend available when a memory budget is set (io_uring
    /// where the kernel allows it, else pread); every expert in memory without one.
    #[default]
    Auto,
    /// Every expert in memory (the mapped file): no streaming.
    Resident,
    /// io_uring with registered file and fixed buffers (Linux, not Android).
    IoUring,
    /// A small thread pool doing positioned reads (every Unix; the Apple backend).
    Pread,
    /// Copies out of a read-only mapping (llama.cpp's approach; the baseline).
    Mmap,
}

impl BackendKind {
    /// Parses `io_uring`/`uring`, `pread`, `mmap`, `auto`, `resident`.
    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
            "resident" => Some(BackendKind::Resident),
            "io_uring" | "uring" | "iouring" => Some(BackendKind::IoUring),
            "pread" => Some(BackendKind::Pread),
            "mmap" => Some(BackendKind::Mmap),
            "auto" => Some(BackendKind::Auto),
            _ => None,
        }
    }
}

/// What every backend reads from and into.
pub(crate) struct Target {
    pub path: PathBuf,
    pub file: File,
    pub file_len: u64,
    pub pool: Arc<SlotPool>,
}

impl Target {
    /// Checks a request against the file and the pool; returns the destination and the number
    /// of bytes that must be read (the request clipped to the end of the file).
    pub fn check(&self, r: &ReadRequest) -> io::Result<(*mut u8, usize)> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if r.offset % ALIGN != 0 || r.len as u64 % ALIGN != 0 || r.slot_offset as u64 % ALIGN != 0 {
            return bad(format!(
                "unaligned read: offset {} length {} slot offset {}",
                r.offset, r.len, r.slot_offset
            ));
        }
        if r.len == 0 || r.offset >= self.file_len {
            return bad(format!(
                "read of {} bytes at {} outside the file ({} bytes)",
                r.len, r.offset, self.file_len
            ));
        }
        let Some(dst) = self.pool.ptr(r.slot, r.slot_offset, r.len) else {
            return bad(format!(
                "read of {} bytes into slot {} at {} outside the pool",
                r.len, r.slot, r.slot_offset
            ));
        };
        let need = (self.file_len - r.offset).min(r.len as u64) as usize;
        Ok((dst, need))
    }
}

/// Builds a target reading `file`, a handle on `source`.
pub(crate) fn target(source: &Source, file: File, pool: Arc<SlotPool>) -> Result<Target> {
    Ok(Target {
        path: source.name().to_path_buf(),
        file,
        file_len: source.end()?,
        pool,
    })
}

/// Opens the backend `kind` over `source` writing into `pool`. Returns the backend and the
/// reasons for any fallback taken (io_uring refused, O_DIRECT refused, ...).
pub fn open_backend(
    kind: BackendKind,
    source: &Source,
    pool: Arc<SlotPool>,
    queue_depth: usize,
) -> Result<(Box<dyn Backend>, Vec<String>)> {
    let mut notes = Vec::new();
    let queue_depth = queue_depth.max(1);
    match kind {
        BackendKind::Resident => Err(crate::Error::InvalidArgument(
            "`resident` serves experts from memory: it is not a streaming backend".into(),
        )),
        BackendKind::Mmap => {
            let t = target(source, source.open()?, pool)?;
            Ok((Box::new(super::mmap::MmapBackend::new(t)?), notes))
        }
        BackendKind::Pread => {
            let (file, note) = source.open_uncached()?;
            notes.extend(note);
            let t = target(source, file, pool)?;
            Ok((
                Box::new(super::pread::PreadBackend::new(t, queue_depth)),
                notes,
            ))
        }
        BackendKind::IoUring | BackendKind::Auto => {
            #[cfg(all(target_os = "linux", not(target_os = "android")))]
            {
                match super::uring::UringBackend::open(source, pool.clone(), queue_depth) {
                    Ok((b, more)) => {
                        notes.extend(more);
                        return Ok((Box::new(b), notes));
                    }
                    Err(why) => notes.push(format!("io_uring unavailable ({why}); using pread")),
                }
            }
            #[cfg(not(all(target_os = "linux", not(target_os = "android"))))]
            notes.push("io_uring is not available on this platform; using pread".into());
            let (b, more) = open_backend(BackendKind::Pread, source, pool, queue_depth)?;
            notes.extend(more);
            Ok((b, notes))
        }
    }
}

/// Completions finished but not yet handed out, with a condition variable for `wait`.
#[derive(Default)]
pub(crate) struct DoneQueue {
    done: parking_lot::Mutex<std::collections::HashMap<u64, io::Result<()>>>,
    cond: parking_lot::Condvar,
}

impl DoneQueue {
    pub fn push(&self, tag: u64, result: io::Result<()>) {
        self.done.lock().insert(tag, result);
        self.cond.notify_all();
    }

    pub fn drain(&self, out: &mut Vec<Completion>) {
        out.extend(
            self.done
                .lock()
                .drain()
                .map(|(tag, result)| Completion { tag, result }),
        );
    }

    /// See [`Backend::wait_progress`].
    pub fn wait_progress(&self, tag: u64) -> Option<io::Result<()>> {
        let mut done = self.done.lock();
        loop {
            if let Some(r) = done.remove(&tag) {
                return Some(r);
            }
            if !done.is_empty() {
                return None;
            }
            self.cond.wait(&mut done);
        }
    }

    pub fn wait(&self, tag: u64) -> io::Result<()> {
        let mut done = self.done.lock();
        loop {
            if let Some(r) = done.remove(&tag) {
                return r;
            }
            self.cond.wait(&mut done);
        }
    }

    pub fn take(&self, tag: u64) -> Option<io::Result<()>> {
        self.done.lock().remove(&tag)
    }
}
