//! The pinned buffer pool: one page-aligned arena of equal slots that backends read experts
//! into and the cache hands out views of.
//!
//! One arena (not one allocation per slot) so io_uring can register every slot once as a fixed
//! buffer, and so one `mlock` call pins the whole pool. Slots are 4096-aligned, which O_DIRECT
//! needs on every device we target.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{Error, Result};

pub use crate::expert::plan::{align_down, align_up, ALIGN};

/// The reserve beyond the active slots costs address space only.
#[cfg(any(target_os = "linux", target_os = "android"))]
const NORESERVE: libc::c_int = libc::MAP_NORESERVE;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const NORESERVE: libc::c_int = 0;

/// A page-aligned arena of `n_slots` slots of `slot_size` bytes, of which the first `active`
/// are in use at open: the rest is reserved address space (no memory until written), so the
/// pool can grow while a model is loaded.
pub struct SlotPool {
    base: *mut u8,
    slot_size: usize,
    n_slots: usize,
    len: usize,
    locked: bool,
    lock_note: Option<String>,
    /// Leading slots io_uring holds as fixed buffers: the kernel keeps writing to their
    /// pinned physical pages, so those must never be dropped with `madvise`.
    registered: AtomicUsize,
    active_at_open: usize,
}

// SAFETY: the arena is plain memory owned by the pool; all access to slot contents goes
// through raw pointers whose exclusivity the cache guarantees (a slot is written by exactly one
// in-flight read and read only while pinned and not being written).
unsafe impl Send for SlotPool {}
// SAFETY: as above; the pool's own fields are immutable after construction.
unsafe impl Sync for SlotPool {}

impl SlotPool {
    /// Maps the arena; when `mlock`, pins it if `RLIMIT_MEMLOCK` allows (otherwise the pool
    /// stays pageable and [`SlotPool::lock_note`] says why).
    pub fn new(slot_size: usize, n_slots: usize, mlock: bool) -> Result<SlotPool> {
        SlotPool::with_capacity(slot_size, n_slots, n_slots, mlock)
    }

    /// Reserves `capacity` slots and pins the first `active` (see [`SlotPool::new`]). Where the
    /// platform refuses the reservation (a small address space), only `active` are mapped.
    pub fn with_capacity(
        slot_size: usize,
        capacity: usize,
        active: usize,
        mlock: bool,
    ) -> Result<SlotPool> {
        let active = active.min(capacity);
        let mut pool = match SlotPool::map(slot_size, capacity) {
            Ok(p) => p,
            Err(_) if active < capacity => SlotPool::map(slot_size, active)?,
            Err(e) => return Err(e),
        };
        pool.active_at_open = active.min(pool.n_slots);
        if mlock {
            match pool.try_mlock(active) {
                Ok(()) => pool.locked = true,
                Err(why) => pool.lock_note = Some(why),
            }
        } else {
            pool.lock_note = Some("mlock disabled by configuration".into());
        }
        Ok(pool)
    }

    fn map(slot_size: usize, n_slots: usize) -> Result<SlotPool> {
        if slot_size == 0 || slot_size as u64 % ALIGN != 0 || n_slots == 0 {
            return Err(Error::InvalidArgument(format!(
                "pool needs at least one slot of a positive multiple of {ALIGN} bytes \
                 (got {n_slots} slots of {slot_size} bytes)"
            )));
        }
        let len = slot_size
            .checked_mul(n_slots)
            .ok_or_else(|| Error::InvalidArgument("expert pool size overflows".into()))?;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked
        // against MAP_FAILED before use and unmapped exactly once in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANON | NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::io(
                "<expert pool>",
                io::Error::other(format!(
                    "cannot map {len} bytes: {}",
                    io::Error::last_os_error()
                )),
            ));
        }
        Ok(SlotPool {
            base: base.cast(),
            slot_size,
            n_slots,
            len,
            locked: false,
            lock_note: None,
            registered: AtomicUsize::new(0),
            active_at_open: n_slots,
        })
    }

    /// Checks `RLIMIT_MEMLOCK` first (a failed `mlock` of a large region can be slow, and on
    /// Android the limit is 64 KiB), then pins the first `active` slots.
    fn try_mlock(&self, active: usize) -> std::result::Result<(), String> {
        let len = active.min(self.n_slots) * self.slot_size;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit struct we own.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
        if rc != 0 {
            return Err(format!(
                "getrlimit(RLIMIT_MEMLOCK) failed: {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: geteuid has no preconditions.
        let privileged = unsafe { libc::geteuid() } == 0;
        // Root has CAP_IPC_LOCK, which bypasses the limit.
        if lim.rlim_cur != libc::RLIM_INFINITY && rlim_u64(lim.rlim_cur) < len as u64 && !privileged
        {
            return Err(format!(
                "RLIMIT_MEMLOCK is {} bytes, the pool needs {len}; the pool stays pageable",
                lim.rlim_cur
            ));
        }
        // SAFETY: the range is a prefix of our live mapping.
        let rc = unsafe { libc::mlock(self.base.cast(), len) };
        if rc != 0 {
            return Err(format!(
                "mlock of {len} bytes failed: {}; the pool stays pageable",
                io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }

    pub fn n_slots(&self) -> usize {
        self.n_slots
    }

    /// Bytes of the whole arena.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the arena is mlock'ed.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Why the arena is not mlock'ed, when it is not.
    pub fn lock_note(&self) -> Option<&str> {
        self.lock_note.as_deref()
    }

    /// Start of the arena (for registering it with io_uring).
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Records that the kernel pinned the arena (io_uring fixed buffers).
    /// Slots in use when the pool was made.
    pub fn active_at_open(&self) -> usize {
        self.active_at_open
    }

    /// Records that io_uring now holds slots `0..n` (and no others) as fixed buffers.
    pub fn set_registered(&self, n: usize) {
        self.registered.store(n, Ordering::SeqCst);
    }

    /// Whether [`SlotPool::release`] can give the memory of slots from `first` on back (not
    /// while io_uring pins them).
    pub fn can_release(&self, first: usize) -> bool {
        first >= self.registered.load(Ordering::SeqCst)
    }

    /// Pointer to `len` bytes at `offset` inside `slot`, or `None` when out of range.
    pub fn ptr(&self, slot: usize, offset: usize, len: usize) -> Option<*mut u8> {
        if slot >= self.n_slots || offset.checked_add(len)? > self.slot_size {
            return None;
        }
        // SAFETY: slot * slot_size + offset + len <= n_slots * slot_size = self.len, so the
        // pointer stays inside the mapping.
        Some(unsafe { self.base.add(slot * self.slot_size + offset) })
    }

    /// The bytes of `slot`.
    ///
    /// # Safety
    /// No read may be writing into `slot` while the returned slice lives (the cache ensures
    /// this by handing out views only of loaded, pinned slots).
    pub unsafe fn slot(&self, slot: usize) -> &[u8] {
        // SAFETY: the caller's contract covers the whole slot.
        unsafe { self.bytes(slot, 0, self.slot_size) }
    }

    /// The `len` bytes at `offset` inside `slot`.
    ///
    /// # Safety
    /// No read may be writing into that range while the returned slice lives.
    pub unsafe fn bytes(&self, slot: usize, offset: usize, len: usize) -> &[u8] {
        let ptr = self
            .ptr(slot, offset, len)
            .unwrap_or_else(|| panic!("{len} bytes at {offset} of slot {slot} out of range"));
        // SAFETY: in bounds (checked by `ptr`); no concurrent writer per the caller's contract.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// Gives the memory of slots `first..first + count` back to the OS (after the pool was
    /// lowered); it is faulted in again, zeroed, when a read next writes there.
    pub fn release(&self, first: usize, count: usize) {
        let Some(ptr) = self.ptr(first, 0, 0) else {
            return;
        };
        let count = count.min(self.n_slots - first);
        let len = count * self.slot_size;
        if len == 0 || !self.can_release(first) {
            return;
        }
        // SAFETY: the range lies inside our mapping (checked above) and is page aligned (slot
        // size is a multiple of 4096 on 4 KiB-page systems; on 16 KiB-page systems madvise
        // rounds inward and only whole pages are dropped). The caller guarantees no slot in
        // it is pinned or being read into.
        unsafe {
            if self.locked {
                libc::munlock(ptr.cast(), len);
            }
            libc::madvise(ptr.cast(), len, libc::MADV_DONTNEED);
        }
    }

    /// Pins slots `first..first + count` again after they were released and the pool raised.
    pub fn recommit(&self, first: usize, count: usize) {
        let Some(ptr) = self.ptr(first, 0, 0) else {
            return;
        };
        let len = count.min(self.n_slots - first) * self.slot_size;
        if self.locked && len > 0 {
            // SAFETY: the range lies inside our mapping; mlock faults the pages in.
            unsafe {
                libc::mlock(ptr.cast(), len);
            }
        }
    }
}

/// `rlim_t` is 32 bits on some targets and 64 on others.
#[allow(clippy::unnecessary_cast)]
fn rlim_u64(v: libc::rlim_t) -> u64 {
    v as u64
}

impl Drop for SlotPool {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; no views outlive the pool
        // because they borrow the streamed source that owns it.
        unsafe {
            libc::munmap(self.base.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_aligned_and_bounded() {
        let pool = SlotPool::new(8192, 3, true).unwrap();
        assert_eq!(pool.len(), 3 * 8192);
        for s in 0..3 {
            let p = pool.ptr(s, 0, 8192).unwrap();
            assert_eq!(p as usize % ALIGN as usize, 0);
        }
        assert!(pool.ptr(3, 0, 1).is_none());
        assert!(pool.ptr(2, 4096, 4097).is_none());
        pool.release(1, 2);
        pool.recommit(1, 2);
        assert!(SlotPool::new(100, 1, false).is_err());
    }

    #[test]
    fn alignment_helpers() {
        assert_eq!(align_up(0), 0);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_down(4097), 4096);
    }
}
