//! How expert bytes get from storage into pool slots: one read-request type, one [`Backend`]
//! trait, three implementations (io_uring, a pread thread pool, mmap copies).
//!
//! TigerBeetle's shape: the caller owns each request until its completion is reaped;
//! completions are queued, never run inline, and every submitted request produces exactly one
//! completion (errors included), which keeps the cache's bookkeeping simple.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::pool::{SlotPool, ALIGN};
use crate::{Error, Result};

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

    /// Appends the completions that are ready, without blocking.
    fn reap(&self, out: &mut Vec<Completion>);

    /// Blocks until request `tag` completes and returns its result; it is not returned by a
    /// later `reap`. Completions of other requests seen meanwhile stay queued for `reap`.
    fn wait(&self, tag: u64) -> io::Result<()>;
}

/// Which backend to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring with registered file and fixed buffers (Linux, not Android).
    IoUring,
    /// A small thread pool doing positioned reads (every Unix; the Apple backend).
    Pread,
    /// Copies out of a read-only mapping (llama.cpp's approach; the baseline).
    Mmap,
    /// io_uring where the kernel allows it, else pread.
    Auto,
}

impl BackendKind {
    /// Parses `io_uring`/`uring`, `pread`, `mmap`, `auto`.
    pub fn parse(s: &str) -> Option<BackendKind> {
        match s {
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

/// Opens `path` for reading without the page cache where the platform allows (O_DIRECT on
/// Linux, F_NOCACHE on Apple); falls back to a buffered open and says why.
pub(crate) fn open_uncached(path: &Path) -> Result<(File, Option<String>)> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => return Ok((f, None)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::io(path, e)),
            Err(e) => {
                let f = File::open(path).map_err(|e| Error::io(path, e))?;
                return Ok((
                    f,
                    Some(format!("O_DIRECT refused ({e}); reads use the page cache")),
                ));
            }
        }
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        use std::os::fd::AsRawFd;
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: fcntl on a descriptor we own; F_NOCACHE takes an int argument.
        let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_NOCACHE, 1) };
        let note = (rc != 0).then(|| {
            format!(
                "F_NOCACHE refused ({}); reads use the page cache",
                io::Error::last_os_error()
            )
        });
        return Ok((f, note));
    }
    #[allow(unreachable_code)]
    {
        let f = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok((f, Some("no uncached reads on this platform".into())))
    }
}

/// Builds a target over `path`.
pub(crate) fn target(path: &Path, file: File, pool: Arc<SlotPool>) -> Result<Target> {
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    Ok(Target {
        path: path.to_path_buf(),
        file,
        file_len,
        pool,
    })
}

/// Opens the backend `kind` over `path` writing into `pool`. Returns the backend and the
/// reasons for any fallback taken (io_uring refused, O_DIRECT refused, ...).
pub fn open_backend(
    kind: BackendKind,
    path: &Path,
    pool: Arc<SlotPool>,
    queue_depth: usize,
) -> Result<(Box<dyn Backend>, Vec<String>)> {
    let mut notes = Vec::new();
    let queue_depth = queue_depth.max(1);
    match kind {
        BackendKind::Mmap => {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let t = target(path, file, pool)?;
            Ok((Box::new(super::mmap::MmapBackend::new(t)?), notes))
        }
        BackendKind::Pread => {
            let (file, note) = open_uncached(path)?;
            notes.extend(note);
            let t = target(path, file, pool)?;
            Ok((
                Box::new(super::pread::PreadBackend::new(t, queue_depth)),
                notes,
            ))
        }
        BackendKind::IoUring | BackendKind::Auto => {
            #[cfg(all(target_os = "linux", not(target_os = "android")))]
            {
                match super::uring::UringBackend::open(path, pool.clone(), queue_depth) {
                    Ok((b, more)) => {
                        notes.extend(more);
                        return Ok((Box::new(b), notes));
                    }
                    Err(why) => notes.push(format!("io_uring unavailable ({why}); using pread")),
                }
            }
            #[cfg(not(all(target_os = "linux", not(target_os = "android"))))]
            notes.push("io_uring is not available on this platform; using pread".into());
            let (b, more) = open_backend(BackendKind::Pread, path, pool, queue_depth)?;
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
