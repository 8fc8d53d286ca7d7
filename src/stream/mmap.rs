//! Copies out of a read-only mapping of the file: what llama.cpp does (minus the copy), kept
//! as the baseline the other backends are measured against. Reads happen synchronously in
//! `submit`, as page faults.

use std::io;

use memmap2::Mmap;

use super::backend::{Backend, Completion, DoneQueue, ReadRequest, Target};
use crate::{Error, Result};

pub struct MmapBackend {
    target: Target,
    map: Mmap,
    done: DoneQueue,
}

impl MmapBackend {
    pub(crate) fn new(target: Target) -> Result<MmapBackend> {
        // SAFETY: a read-only shared mapping; the model file is not modified while loaded
        // (the same assumption the resident source makes).
        let map = unsafe { Mmap::map(&target.file) }.map_err(|e| Error::io(&target.path, e))?;
        Ok(MmapBackend {
            target,
            map,
            done: DoneQueue::default(),
        })
    }

    fn copy(&self, r: &ReadRequest) -> io::Result<()> {
        let (dst, need) = self.target.check(r)?;
        let start = r.offset as usize;
        let src = self.map.get(start..start + need).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank under its mapping",
            )
        })?;
        // SAFETY: `check` proved dst..dst+len (len >= need) lies inside the pool, and the
        // cache gives this request exclusive use of that range; the map is a distinct region.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, need) };
        // The copy is what the budget counts: unmap the source pages again, or the mapping
        // would grow the process by the whole file. Requests start page-aligned; the last
        // partial page stays mapped until the next request covers it.
        let whole = need / super::ALIGN as usize * super::ALIGN as usize;
        if whole > 0 && start % super::ALIGN as usize == 0 {
            // SAFETY: the range lies inside our own read-only mapping (checked by `get` above)
            // and starts at a page boundary; dropping clean file pages from a mapping only
            // makes the next access fault them in again.
            unsafe {
                libc::madvise(
                    src.as_ptr() as *mut libc::c_void,
                    whole,
                    libc::MADV_DONTNEED,
                )
            };
        }
        // And out of the page cache: the budget is the memory the device has, so a later miss
        // of this expert must go to storage, not to cached pages outside the budget.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
            unsafe {
                libc::posix_fadvise(
                    self.target.file.as_raw_fd(),
                    start as libc::off_t,
                    need as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
        Ok(())
    }
}

impl Backend for MmapBackend {
    fn name(&self) -> &'static str {
        "mmap"
    }

    fn submit(&self, reqs: &[ReadRequest]) {
        for r in reqs {
            self.done.push(r.tag, self.copy(r));
        }
    }

    fn is_async(&self) -> bool {
        false
    }

    fn reap(&self, out: &mut Vec<Completion>) {
        self.done.drain(out);
    }

    fn wait(&self, tag: u64) -> io::Result<()> {
        self.done.take(tag).unwrap_or_else(|| {
            Err(io::Error::other(format!(
                "request {tag} was never submitted"
            )))
        })
    }
}
