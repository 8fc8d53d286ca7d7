//! io_uring backend (Linux, never Android: its seccomp filter kills the process on these
//! syscalls). The file is opened with O_DIRECT and registered once; every pool slot is
//! registered once as a fixed buffer, so a read costs one SQE and no page pinning.
//!
//! The ring lives behind one mutex. `wait` holds it while blocked in the kernel; that only
//! delays other threads' submits until the next completion, and the cache never holds its own
//! lock while calling `wait`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use io_uring::{opcode, types, IoUring, Probe};
use parking_lot::Mutex;

use super::backend::{cancelled, target, Backend, Completion, ReadRequest, Target};
use super::pool::SlotPool;
use super::source::Source;

/// io_uring refuses more registered buffers than this.
const MAX_FIXED_BUFFERS: usize = 1 << 14;

struct Op {
    req: ReadRequest,
    /// Destination address (an address, not a pointer, so the ring state stays `Send`).
    dst: usize,
    need: usize,
    done: usize,
}

struct Ring {
    ring: IoUring,
    fixed_file: bool,
    /// Slots `0..registered` are fixed buffers; reads into others are plain reads.
    registered: usize,
    /// Whether the kernel took fixed buffers at open (if not, never try again).
    fixed_buffers: bool,
    depth: usize,
    inflight: HashMap<u64, Op>,
    /// Requests waiting for room in the queue.
    pending: VecDeque<Op>,
    done: HashMap<u64, io::Result<()>>,
}

pub struct UringBackend {
    target: Target,
    ring: Mutex<Ring>,
}

impl UringBackend {
    /// Sets up the ring, probes that it works and that the opcodes exist, registers the file
    /// and the pool. `Err` carries the reason io_uring cannot be used here.
    pub(crate) fn open(
        source: &Source,
        pool: Arc<SlotPool>,
        queue_depth: usize,
    ) -> Result<(UringBackend, Vec<String>), String> {
        let depth = queue_depth.max(8);
        let entries = depth.next_power_of_two() as u32;
        let mut ring = IoUring::new(entries).map_err(|e| format!("io_uring_setup: {e}"))?;
        let mut probe = Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| format!("probe: {e}"))?;
        if !probe.is_supported(opcode::ReadFixed::CODE) || !probe.is_supported(opcode::Read::CODE) {
            return Err("the kernel lacks IORING_OP_READ_FIXED or IORING_OP_READ".into());
        }
        // A NOP round trip: catches filters that allow setup but refuse io_uring_enter.
        // SAFETY: a NOP references no memory.
        unsafe {
            ring.submission()
                .push(&opcode::Nop::new().build().user_data(u64::MAX))
                .map_err(|_| "submission queue full at setup".to_string())?;
        }
        ring.submit_and_wait(1)
            .map_err(|e| format!("io_uring_enter: {e}"))?;
        ring.completion().for_each(drop);

        let mut notes = Vec::new();
        let (file, note) = source.open_uncached().map_err(|e| e.to_string())?;
        notes.extend(note);
        let fixed_file = match ring.submitter().register_files(&[file.as_raw_fd()]) {
            Ok(()) => true,
            Err(e) => {
                notes.push(format!("io_uring refused to register the file ({e})"));
                false
            }
        };
        let active = pool.active_at_open();
        let registered = if active > MAX_FIXED_BUFFERS {
            notes.push(format!(
                "{active} slots exceed io_uring's {MAX_FIXED_BUFFERS} fixed buffers; plain reads"
            ));
            0
        } else {
            match register(&ring, &pool, active) {
                Ok(()) => active,
                Err(e) => {
                    notes.push(format!(
                        "io_uring refused to register the pool as fixed buffers ({e}); plain reads"
                    ));
                    0
                }
            }
        };
        let target = target(source, file, pool).map_err(|e| e.to_string())?;
        Ok((
            UringBackend {
                target,
                ring: Mutex::new(Ring {
                    ring,
                    fixed_file,
                    registered,
                    fixed_buffers: registered > 0,
                    depth,
                    inflight: HashMap::new(),
                    pending: VecDeque::new(),
                    done: HashMap::new(),
                }),
            },
            notes,
        ))
    }
}

/// Registers slots `0..n` of `pool` as the ring's fixed buffers.
fn register(ring: &IoUring, pool: &SlotPool, n: usize) -> io::Result<()> {
    let iovecs: Vec<libc::iovec> = (0..n)
        .filter_map(|s| pool.ptr(s, 0, pool.slot_size()))
        .map(|p| libc::iovec {
            iov_base: p.cast(),
            iov_len: pool.slot_size(),
        })
        .collect();
    // SAFETY: every iovec covers one slot of the pool, which stays mapped for as long as the
    // ring exists (the backend holds an Arc to the pool through `target`, and the ring,
    // dropped first, unregisters the buffers).
    unsafe { ring.submitter().register_buffers(&iovecs) }?;
    pool.set_registered(n);
    Ok(())
}

impl Ring {
    /// Pushes one SQE for the unread remainder of `op`. Returns false when the queue is full.
    fn push(&mut self, op: &Op, fd: i32) -> bool {
        let dst = (op.dst + op.done) as *mut u8;
        let len = (op.req.len - op.done) as u32;
        let offset = op.req.offset + op.done as u64;
        let fixed_buffer = op.req.slot < self.registered;
        let entry = match (self.fixed_file, fixed_buffer) {
            (true, true) => opcode::ReadFixed::new(types::Fixed(0), dst, len, op.req.slot as u16)
                .offset(offset)
                .build(),
            (false, true) => opcode::ReadFixed::new(types::Fd(fd), dst, len, op.req.slot as u16)
                .offset(offset)
                .build(),
            (true, false) => opcode::Read::new(types::Fixed(0), dst, len)
                .offset(offset)
                .build(),
            (false, false) => opcode::Read::new(types::Fd(fd), dst, len)
                .offset(offset)
                .build(),
        }
        .user_data(op.req.tag);
        // SAFETY: the destination lies inside the pool (checked at submit) and, for fixed
        // buffers, inside registered buffer `slot`; the cache keeps the slot untouched until
        // this request's completion is reaped, and the pool outlives the ring.
        unsafe { self.ring.submission().push(&entry).is_ok() }
    }

    /// Moves pending requests into the queue while there is room, then tells the kernel.
    fn pump(&mut self, fd: i32) {
        while self.inflight.len() < self.depth {
            let Some(op) = self.pending.pop_front() else {
                break;
            };
            if !self.push(&op, fd) {
                self.pending.push_front(op);
                break;
            }
            self.inflight.insert(op.req.tag, op);
        }
        // Errors here (EAGAIN, EBUSY) leave the entries queued; the next enter retries.
        let _ = self.ring.submit();
    }

    /// Consumes ready CQEs: finished requests go to `done`, short reads are resubmitted.
    fn drain(&mut self, fd: i32) {
        let cqes: Vec<(u64, i32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (tag, res) in cqes {
            let Some(mut op) = self.inflight.remove(&tag) else {
                continue;
            };
            let outcome = if res < 0 {
                let err = io::Error::from_raw_os_error(-res);
                match err.kind() {
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => None,
                    _ => Some(Err(err)),
                }
            } else if res == 0 && op.done < op.need {
                Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file ended after {} of {} bytes at offset {}",
                        op.done, op.need, op.req.offset
                    ),
                )))
            } else {
                op.done += res as usize;
                (op.done >= op.need).then_some(Ok(()))
            };
            match outcome {
                Some(r) => {
                    self.done.insert(tag, r);
                }
                // Short read or retryable error: read the rest.
                None => self.pending.push_front(op),
            }
        }
        self.pump(fd);
    }
}

impl Backend for UringBackend {
    fn name(&self) -> &'static str {
        "io_uring"
    }

    fn submit(&self, reqs: &[ReadRequest]) {
        self.enqueue(reqs, false);
    }

    fn submit_first(&self, reqs: &[ReadRequest]) {
        self.enqueue(reqs, true);
    }

    fn reap(&self, out: &mut Vec<Completion>) {
        let fd = self.target.file.as_raw_fd();
        let mut ring = self.ring.lock();
        ring.drain(fd);
        out.extend(
            ring.done
                .drain()
                .map(|(tag, result)| Completion { tag, result }),
        );
    }

    fn wait(&self, tag: u64) -> io::Result<()> {
        loop {
            if let Some(r) = self.wait_for(tag, false) {
                return r;
            }
        }
    }

    fn wait_progress(&self, tag: u64) -> Option<io::Result<()>> {
        self.wait_for(tag, true)
    }

    fn resize(&self, active: usize) {
        let mut r = self.ring.lock();
        let n = active.min(MAX_FIXED_BUFFERS);
        if !r.fixed_buffers || n == r.registered {
            return;
        }
        // The kernel keeps buffers that reads in flight use until those complete (or waits for
        // them), so replacing the table is safe with reads outstanding; holding the ring lock
        // keeps new reads from being pushed against the old table meanwhile.
        if r.ring.submitter().unregister_buffers().is_err() {
            return;
        }
        r.registered = 0;
        self.target.pool.set_registered(0);
        if register(&r.ring, &self.target.pool, n).is_ok() {
            r.registered = n;
        }
    }

    fn cancel(&self, tags: &[u64]) {
        let mut ring = self.ring.lock();
        let ring = &mut *ring;
        // Not yet handed to the kernel: complete them here.
        let (dropped, kept): (VecDeque<Op>, VecDeque<Op>) = ring
            .pending
            .drain(..)
            .partition(|op| tags.contains(&op.req.tag));
        ring.pending = kept;
        for op in dropped {
            ring.done.insert(op.req.tag, Err(cancelled()));
        }
        // In the kernel: ask it to cancel; a read it cannot stop completes normally.
        for tag in tags {
            if !ring.inflight.contains_key(tag) {
                continue;
            }
            let entry = opcode::AsyncCancel::new(*tag)
                .build()
                .user_data(Self::CANCEL_TAG);
            // SAFETY: a cancel request references no memory.
            if unsafe { ring.ring.submission().push(&entry) }.is_err() {
                break; // queue full: the remaining reads just finish
            }
        }
        let _ = ring.ring.submit();
    }
}

impl UringBackend {
    /// The user_data of cancel requests; never a read's tag (tags count up from 1).
    const CANCEL_TAG: u64 = u64::MAX - 1;

    /// Queues requests behind (or, `first`, ahead of) those waiting for room in the ring.
    fn enqueue(&self, reqs: &[ReadRequest], first: bool) {
        let fd = self.target.file.as_raw_fd();
        let mut ring = self.ring.lock();
        let mut ops = Vec::with_capacity(reqs.len());
        for r in reqs {
            match self.target.check(r) {
                Ok((dst, need)) => ops.push(Op {
                    req: *r,
                    dst: dst as usize,
                    need,
                    done: 0,
                }),
                Err(e) => {
                    ring.done.insert(r.tag, Err(e));
                }
            }
        }
        if first {
            for op in ops.into_iter().rev() {
                ring.pending.push_front(op);
            }
        } else {
            ring.pending.extend(ops);
        }
        ring.pump(fd);
    }

    /// Blocks until `tag` completes (`Some`) or, with `progress`, until another completion is
    /// ready for `reap` (`None`).
    fn wait_for(&self, tag: u64, progress: bool) -> Option<io::Result<()>> {
        let fd = self.target.file.as_raw_fd();
        let mut ring = self.ring.lock();
        loop {
            if let Some(r) = ring.done.remove(&tag) {
                return Some(r);
            }
            ring.drain(fd);
            if let Some(r) = ring.done.remove(&tag) {
                return Some(r);
            }
            if progress && !ring.done.is_empty() {
                return None;
            }
            if !ring.inflight.contains_key(&tag) && !ring.pending.iter().any(|o| o.req.tag == tag) {
                return Some(Err(io::Error::other(format!(
                    "request {tag} was never submitted"
                ))));
            }
            match ring.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Drop for UringBackend {
    /// Waits for reads still in flight: the kernel must not write into the pool after it is
    /// unmapped.
    fn drop(&mut self) {
        let fd = self.target.file.as_raw_fd();
        let ring = self.ring.get_mut();
        for _ in 0..10_000 {
            ring.pending.clear();
            if ring.inflight.is_empty() {
                break;
            }
            if ring.ring.submit_and_wait(1).is_err() {
                break;
            }
            ring.drain(fd);
        }
    }
}
