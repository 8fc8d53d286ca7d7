//! A small persistent thread pool for the kernels.
//!
//! Decoding runs hundreds of short matrix-vector products per token, each a few to a few
//! hundred microseconds, so handing work to threads must cost about a microsecond. As in ggml,
//! the workers stay alive for the model's lifetime and, after a job, spin for a while waiting
//! for the next one before they park on a condition variable; the calling thread does a share
//! of every job itself.
//!
//! Work is split into chunks whose boundaries depend only on the data, never on the number of
//! threads, and threads take chunks from a shared counter (whoever is free takes the next), so
//! a busy core does not hold the others up and results are the same whatever the thread count.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Spins (pause instructions, tens of nanoseconds each) before a worker parks: long enough to
/// span the gap between two matrix products of one decode step, short enough (about a
/// millisecond) not to burn a core for long once decoding stops.
const SPIN_ITERATIONS: u32 = 1 << 14;

/// The job being run: a call per worker index, with the lifetime of the caller's closure
/// erased (see [`ThreadPool::run`] for why that is sound).
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync`, and `run` keeps it alive until every worker is done with it.
unsafe impl Send for Job {}

struct Shared {
    /// Incremented to publish a job.
    epoch: AtomicU64,
    job: Mutex<Option<Job>>,
    /// The epoch of the job workers may still join; 0 once the caller is done with its share.
    open: AtomicU64,
    /// Workers that joined the current job and have not finished it.
    active: AtomicUsize,
    shutdown: AtomicBool,
    /// Workers parked on `wake` (guarded by this mutex).
    sleepers: Mutex<usize>,
    wake: Condvar,
    /// Set when a job panicked on a worker; the caller re-raises it.
    panicked: AtomicBool,
}

/// A fixed set of kernel threads. `threads()` includes the calling thread: a pool of 1 has no
/// workers and runs everything inline.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Held while a job runs. A second caller (another session on the same model) does not
    /// wait for it: it runs its job on its own thread instead.
    dispatch: Mutex<()>,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads())
            .finish()
    }
}

impl ThreadPool {
    /// A pool of `threads` threads in all (0: [`default_threads`]), at most [`max_threads`]
    /// (more only oversubscribe the cores). Falls back to fewer threads when the OS refuses
    /// to start one.
    pub fn new(threads: usize) -> ThreadPool {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads.min(max_threads())
        };
        let shared = Arc::new(Shared {
            epoch: AtomicU64::new(0),
            job: Mutex::new(None),
            open: AtomicU64::new(0),
            active: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
            panicked: AtomicBool::new(false),
        });
        let mut workers = Vec::with_capacity(threads.saturating_sub(1));
        for index in 1..threads {
            let s = shared.clone();
            match std::thread::Builder::new()
                .name(format!("edgemoe-kernel-{index}"))
                .spawn(move || worker(&s, index))
            {
                Ok(h) => workers.push(h),
                Err(_) => break,
            }
        }
        ThreadPool {
            shared,
            workers,
            dispatch: Mutex::new(()),
        }
    }

    /// A pool that runs everything on the calling thread.
    pub fn single() -> ThreadPool {
        ThreadPool::new(1)
    }

    /// Threads that work on a job, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for thread indices `i` in `0..threads()`, concurrently, and returns when
    /// every call made has returned. Index 0 always runs, on the calling thread; the others run
    /// on workers that are ready before `f(0)` returns. Not every index need run (a worker
    /// still waking, or the pool busy with another caller's job), so `f` must share out work
    /// dynamically rather than assume every index runs.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            f(0);
            return;
        }
        let Ok(_busy) = self.dispatch.try_lock() else {
            f(0);
            return;
        };
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased. The pointer is published below, and this
        // function does not return (even if `f` panics here: see the guard) until the job is
        // closed and no worker is active in it; a worker joins only while the job is open and
        // reads the pointer only after joining (see `worker`).
        let job = Job(unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
                f as *const _,
            )
        });
        *lock(&s.job) = Some(job);
        let epoch = s.epoch.load(Ordering::SeqCst) + 1;
        s.open.store(epoch, Ordering::SeqCst);
        s.epoch.store(epoch, Ordering::SeqCst);
        if *lock(&s.sleepers) > 0 {
            s.wake.notify_all();
        }
        // Closes the job once the caller's share is done (even if `f(0)` unwinds) and waits
        // for the workers that joined it. Workers that have not woken up by then skip it
        // rather than make the caller wait for them: the work is shared out dynamically, so
        // whatever was left has been done by the threads that were there.
        struct CloseJob<'a>(&'a Shared);
        impl Drop for CloseJob<'_> {
            fn drop(&mut self) {
                self.0.open.store(0, Ordering::SeqCst);
                let mut spins = 0u32;
                while self.0.active.load(Ordering::SeqCst) != 0 {
                    spins += 1;
                    if spins < SPIN_ITERATIONS {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
                *lock(&self.0.job) = None;
            }
        }
        {
            let _close = CloseJob(s);
            f(0);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a kernel thread panicked");
        }
    }

    /// Splits `data` into chunks of `chunk` elements (the last may be shorter) and calls
    /// `f(offset, chunk)` for each, spread over the pool's threads. Chunk boundaries depend
    /// only on `data.len()` and `chunk`.
    pub fn for_each_chunk<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        self.for_each_chunk_on_thread(data, chunk, &|_, offset, part| f(offset, part));
    }

    /// [`for_each_chunk`](Self::for_each_chunk), also telling `f` the index (in
    /// `0..threads()`) of the thread running it, so that it can use that thread's scratch
    /// space: no two calls with the same index run at once.
    pub fn for_each_chunk_on_thread<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: &(dyn Fn(usize, usize, &mut [T]) + Sync),
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.for_each_index(len.div_ceil(chunk), &|thread, i| {
            let start = i * chunk;
            let end = (start + chunk).min(len);
            // SAFETY: `base` points at `data`, which outlives this call; each index `i` is
            // handed out exactly once (`for_each_index`), so the ranges `start..end` are
            // disjoint and inside `data`.
            let part =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(start), end - start) };
            f(thread, start, part);
        });
    }

    /// Calls `f(thread, i)` for every `i` in `0..count`, each exactly once, spread over the
    /// threads: whoever is free takes the next index. One index, or no workers: all inline.
    fn for_each_index(&self, count: usize, f: &(dyn Fn(usize, usize) + Sync)) {
        if count <= 1 || self.workers.is_empty() {
            (0..count).for_each(|i| f(0, i));
            return;
        }
        let next = AtomicUsize::new(0);
        self.run(&|thread| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                break;
            }
            f(thread, i);
        });
    }

    /// Calls `f` with slabs of `slab_rows` rows (the last may be shorter) of `out`, a
    /// vector-major `vectors x rows` matrix (`out[t * rows + r]`), spread over the threads:
    /// each thread stores the products of its rows for every vector straight into place.
    pub fn for_each_row_slab(
        &self,
        out: &mut [f32],
        rows: usize,
        slab_rows: usize,
        f: &(dyn Fn(RowSlab<'_>) + Sync),
    ) {
        let vectors = out.len().checked_div(rows).unwrap_or(0);
        let slab_rows = slab_rows.max(1);
        let base = SendPtr(out.as_mut_ptr());
        self.for_each_index(rows.div_ceil(slab_rows), &|_, i| {
            f(RowSlab {
                base: base.get(),
                rows,
                vectors,
                start: i * slab_rows,
                end: ((i + 1) * slab_rows).min(rows),
                _out: PhantomData,
            })
        });
    }
}

/// Rows `start..end` of every vector of a vector-major matrix (see
/// [`ThreadPool::for_each_row_slab`]): the part of a matrix product one thread stores. The
/// slabs of one call never overlap.
pub struct RowSlab<'a> {
    base: *mut f32,
    rows: usize,
    vectors: usize,
    start: usize,
    end: usize,
    _out: PhantomData<&'a mut [f32]>,
}

impl RowSlab<'_> {
    /// The matrix rows this slab holds.
    pub fn rows(&self) -> std::ops::Range<usize> {
        self.start..self.end
    }
}

impl crate::quant::ProductSink for RowSlab<'_> {
    fn holds(&self, rows: usize, vectors: usize) -> bool {
        rows <= self.end - self.start && vectors <= self.vectors
    }

    #[inline]
    fn put(&mut self, row: usize, vector: usize, value: f32) {
        assert!(
            row < self.end - self.start && vector < self.vectors,
            "row slab overrun"
        );
        // SAFETY: `base` points at `out`, which holds `vectors * rows` values and outlives
        // the slab; `start + row < end <= rows` and `vector < vectors` keep the index inside
        // it, and no other slab of the call holds rows `start..end`.
        unsafe { *self.base.add(vector * self.rows + self.start + row) = value }
    }
}

/// A raw pointer that may cross threads; the code using it proves disjoint access.
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: only used by `for_each_chunk` and `for_each_row_slab`, which hand each thread a
// disjoint part of a `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        let s = &*self.shared;
        s.shutdown.store(true, Ordering::SeqCst);
        {
            let _g = lock(&s.sleepers);
            s.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins += 1;
            if spins < SPIN_ITERATIONS {
                std::hint::spin_loop();
                continue;
            }
            // Park. The epoch is re-checked under the lock that `run` takes before notifying,
            // so a job published in between is not missed.
            let mut sleepers = lock(&s.sleepers);
            *sleepers += 1;
            while s.epoch.load(Ordering::Acquire) == seen && !s.shutdown.load(Ordering::Acquire) {
                sleepers = s.wake.wait(sleepers).unwrap_or_else(|p| p.into_inner());
            }
            *sleepers -= 1;
            spins = 0;
        }
        // Join the job unless the caller already closed it. Joining before checking means
        // the caller, which closes before it waits for `active` to drop to 0, either sees
        // this worker as active or this worker sees the job closed.
        s.active.fetch_add(1, Ordering::SeqCst);
        if s.open.load(Ordering::SeqCst) == seen {
            if let Some(Job(f)) = *lock(&s.job) {
                // SAFETY: the job is open and this worker is counted in `active`, so `run`
                // keeps the closure alive until this call returns.
                let f = unsafe { &*f };
                if catch_unwind(AssertUnwindSafe(|| f(index))).is_err() {
                    s.panicked.store(true, Ordering::SeqCst);
                }
            }
        }
        s.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The most kernel threads a pool starts: four per logical CPU this process may use.
pub fn max_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(4)
        .max(1)
}

/// Kernel threads to use by default: the number of physical cores (hyper-threads share one
/// core's execution units and memory port, so they add contention, not speed).
pub fn default_threads() -> usize {
    physical_cores()
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
        .max(1)
}

/// Physical cores, counted as distinct (package, core) pairs among the CPUs this process may
/// run on (Linux sysfs); `None` where that is not available.
pub fn physical_cores() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let dir = std::fs::read_dir("/sys/devices/system/cpu").ok()?;
        let mut cores = std::collections::BTreeSet::new();
        for entry in dir.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(id) = name.strip_prefix("cpu") else {
                continue;
            };
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let topo = entry.path().join("topology");
            let read = |f: &str| -> Option<i64> {
                std::fs::read_to_string(topo.join(f))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            if let (Some(pkg), Some(core)) = (read("physical_package_id"), read("core_id")) {
                cores.insert((pkg, core));
            }
        }
        let found = cores.len();
        // Never more than the CPUs this process is allowed on (containers, taskset).
        let allowed = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(found);
        (found > 0).then_some(found.min(allowed))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_is_visited_once() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for len in [0usize, 1, 7, 64, 1000] {
                let mut data = vec![0u32; len];
                pool.for_each_chunk(&mut data, 16, &|off, c| {
                    for (i, v) in c.iter_mut().enumerate() {
                        *v += (off + i) as u32 + 1;
                    }
                });
                assert!(data.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
            }
        }
    }

    #[test]
    fn concurrent_callers_share_one_pool() {
        let pool = Arc::new(ThreadPool::new(2));
        std::thread::scope(|s| {
            for _ in 0..3 {
                let pool = pool.clone();
                s.spawn(move || {
                    for _ in 0..200 {
                        let mut d = vec![1u64; 300];
                        pool.for_each_chunk(&mut d, 7, &|_, c| c.iter_mut().for_each(|v| *v *= 3));
                        assert!(d.iter().all(|&v| v == 3));
                    }
                });
            }
        });
    }

    /// Runs a job in which the caller's share waits (up to 10 s) for worker 1 to join.
    fn run_with_worker(pool: &ThreadPool, work: &(dyn Fn(usize) + Sync)) -> bool {
        let joined = AtomicBool::new(false);
        pool.run(&|i| {
            if i == 1 {
                joined.store(true, Ordering::SeqCst);
            } else {
                let t = std::time::Instant::now();
                while !joined.load(Ordering::SeqCst) && t.elapsed().as_secs() < 10 {
                    std::thread::yield_now();
                }
            }
            work(i);
        });
        joined.load(Ordering::SeqCst)
    }

    #[test]
    fn parked_workers_wake_up() {
        let pool = ThreadPool::new(2);
        assert!(run_with_worker(&pool, &|_| {}));
        // Long enough for the worker to stop spinning and park.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(run_with_worker(&pool, &|_| {}));
    }

    #[test]
    fn a_panicking_job_is_reported_and_the_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            run_with_worker(&pool, &|i| {
                if i == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        let mut d = vec![0u8; 100];
        pool.for_each_chunk(&mut d, 10, &|_, c| c.fill(1));
        assert!(d.iter().all(|&v| v == 1));
    }

    #[test]
    fn default_threads_is_at_least_one() {
        assert!(default_threads() >= 1);
    }
}
