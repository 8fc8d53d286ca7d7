//! Decoding allocates nothing: once a session has evaluated its first tokens, every buffer a
//! decode step needs (KV cache, scores, scratch, activations) is already in place, whatever
//! the position, so a long generation does not touch the allocator. Counted with a global
//! allocator, on this test's thread and the kernel threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use edgemoe::engine::{LoadOptions, Model, Session};

mod common;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

static LAST_SIZE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread's allocations count: the test's own thread and the kernel threads,
    /// not the test harness's (which wakes up now and then while a test runs). 0: not decided
    /// yet, 1: counted, 2: not counted.
    static WATCHED: Cell<u8> = const { Cell::new(0) };
}

fn watched() -> bool {
    WATCHED.with(|w| match w.get() {
        1 => true,
        2 => false,
        _ => {
            // Decided once per thread; set first so that an allocation while deciding is not
            // counted (and does not recurse).
            w.set(2);
            let kernel = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("edgemoe-kernel"));
            w.set(if kernel { 1 } else { 2 });
            kernel
        }
    })
}

fn count_size(size: usize) {
    if COUNTING.load(Ordering::Relaxed) && watched() {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LAST_SIZE.store(size, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts them.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_size(layout.size());
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_size(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_size(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn decode_steps_do_not_allocate() {
    WATCHED.with(|w| w.set(1));
    let path = common::fixture("mixtral_k").join("stock-q4_k_m.gguf");
    for threads in [1, 2] {
        let opts = LoadOptions {
            threads,
            ..Default::default()
        };
        let model = Arc::new(Model::load_with(&path, opts).unwrap());
        let mut session = Session::new(model, Some(96)).unwrap();
        // A prompt and one decode step: buffers reach their working size.
        session.eval(&[1, 20, 30, 40], false).unwrap();
        session.eval(&[50], false).unwrap();
        // The kernel threads were spawned at load and may still be starting (a thread's own
        // start-up allocates once); give them time, so that only decoding is counted.
        std::thread::sleep(std::time::Duration::from_millis(200));
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.store(true, Ordering::SeqCst);
        // Far enough that position-sized buffers would have had to grow several times.
        for t in 0..80u32 {
            session.eval(&[(t * 37 + 11) % 500], false).unwrap();
        }
        COUNTING.store(false, Ordering::SeqCst);
        let n = ALLOCATIONS.load(Ordering::SeqCst);
        let last = LAST_SIZE.load(Ordering::SeqCst);
        assert_eq!(
            n, 0,
            "{n} allocations in 80 decode steps at {threads} threads (the last of {last} bytes)"
        );
    }
}
