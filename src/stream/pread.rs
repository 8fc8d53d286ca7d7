//! A small thread pool doing positioned reads: the portable backend (macOS/iOS, and Linux
//! where io_uring is refused).

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};

use super::backend::{cancelled, Backend, Completion, DoneQueue, ReadRequest, Target};

struct Shared {
    target: Target,
    queue: Mutex<Jobs>,
    cond: Condvar,
    done: DoneQueue,
}

#[derive(Default)]
struct Jobs {
    pending: VecDeque<ReadRequest>,
    shutdown: bool,
}

/// Worker threads pulling requests off one queue.
pub struct PreadBackend {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl PreadBackend {
    /// `threads` is clamped to 1..=4: more threads than that only add contention on the
    /// devices we target, and the compute thread needs a core.
    pub(crate) fn new(target: Target, threads: usize) -> PreadBackend {
        let shared = Arc::new(Shared {
            target,
            queue: Mutex::new(Jobs::default()),
            cond: Condvar::new(),
            done: DoneQueue::default(),
        });
        let workers = (0..threads.clamp(1, 4))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("edgemoe-pread-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawning an I/O thread")
            })
            .collect();
        PreadBackend { shared, workers }
    }
}

fn worker(s: &Shared) {
    loop {
        let req = {
            let mut q = s.queue.lock();
            loop {
                if let Some(r) = q.pending.pop_front() {
                    break r;
                }
                if q.shutdown {
                    return;
                }
                s.cond.wait(&mut q);
            }
        };
        let result = read_one(&s.target, &req);
        s.done.push(req.tag, result);
    }
}

/// Reads the request, resubmitting short reads until the needed bytes are in.
fn read_one(t: &Target, r: &ReadRequest) -> io::Result<()> {
    let (dst, need) = t.check(r)?;
    // SAFETY: `check` proved dst..dst+len lies inside the pool; the cache gives each in-flight
    // request exclusive use of its slot range until the completion is reaped.
    let buf = unsafe { std::slice::from_raw_parts_mut(dst, r.len) };
    let mut done = 0usize;
    while done < need {
        match t.file.read_at(&mut buf[done..], r.offset + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file ended after {} of {need} bytes at offset {}",
                        done, r.offset
                    ),
                ))
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Backend for PreadBackend {
    fn name(&self) -> &'static str {
        "pread"
    }

    fn submit(&self, reqs: &[ReadRequest]) {
        let mut q = self.shared.queue.lock();
        q.pending.extend(reqs.iter().copied());
        drop(q);
        if reqs.len() == 1 {
            self.shared.cond.notify_one();
        } else {
            self.shared.cond.notify_all();
        }
    }

    fn submit_first(&self, reqs: &[ReadRequest]) {
        let mut q = self.shared.queue.lock();
        for r in reqs.iter().rev() {
            q.pending.push_front(*r);
        }
        drop(q);
        self.shared.cond.notify_all();
    }

    fn reap(&self, out: &mut Vec<Completion>) {
        self.shared.done.drain(out);
    }

    fn wait(&self, tag: u64) -> io::Result<()> {
        self.shared.done.wait(tag)
    }

    fn wait_progress(&self, tag: u64) -> Option<io::Result<()>> {
        self.shared.done.wait_progress(tag)
    }

    fn cancel(&self, tags: &[u64]) {
        let mut q = self.shared.queue.lock();
        let mut dropped = Vec::new();
        q.pending.retain(|r| {
            let hit = tags.contains(&r.tag);
            if hit {
                dropped.push(r.tag);
            }
            !hit
        });
        drop(q);
        for tag in dropped {
            self.shared.done.push(tag, Err(cancelled()));
        }
    }
}

impl Drop for PreadBackend {
    fn drop(&mut self) {
        self.shared.queue.lock().shutdown = true;
        self.shared.cond.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
