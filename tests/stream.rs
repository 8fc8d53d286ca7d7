//! Streamed experts give bit-identical results to the resident model for every backend, pool
//! size and eviction policy, on stock llama.cpp files and edgemoe's packed layout; I/O errors
//! fail a token with a typed error and leave the session usable.

mod common;

use common::*;
use edgemoe::convert::{convert, ConvertOptions};
use edgemoe::engine::{ExpertDirectory, ExpertSource, Model, ModelConfig, Precision, Session};
use edgemoe::format::GgufFile;
use edgemoe::stream::{
    Backend, BackendKind, Completion, PolicyKind, ReadRequest, StreamConfig, StreamedExperts,
};
use edgemoe::tensor::GgmlType;
use edgemoe::Error;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const GREEDY: usize = 16;

/// edgemoe's packed layout of a family's fixture, converted once per test process.
fn packed(family: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let dir = std::env::temp_dir().join(format!("edgemoe-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(format!("{family}-packed-f32.gguf"));
    if !out.exists() {
        let opts = ConvertOptions {
            matrix_type: Some(GgmlType::F32),
            expert_types: None,
            progress: None,
            ..Default::default()
        };
        convert(&fixture(family).join("hf"), &out, &opts).unwrap();
    }
    out
}

/// Both layouts of every family.
fn files() -> Vec<(String, PathBuf)> {
    FAMILIES
        .iter()
        .flat_map(|f| {
            [
                (format!("{f}/stock"), fixture(f).join("stock-f32.gguf")),
                (format!("{f}/packed"), packed(f)),
            ]
        })
        .collect()
}

/// Everything a run produces: per prompt, the logits of every prompt position, then the
/// logits of each greedy step and the tokens chosen.
#[derive(Debug, PartialEq)]
struct Run {
    logits: Vec<Vec<f32>>,
    tokens: Vec<Vec<u32>>,
}

/// Evaluates every reference prompt and a greedy continuation; `after_step(step)` runs
/// between greedy steps (to resize the pool mid-generation).
fn run(model: &Arc<Model>, family: &str, mut after_step: impl FnMut(usize)) -> Run {
    let vocab = model.config.vocab;
    let mut out = Run {
        logits: Vec::new(),
        tokens: Vec::new(),
    };
    for p in &reference(family).prompts {
        let mut s = Session::new(model.clone(), Some(64)).unwrap();
        let mut logits = s.eval(&p.ids, true).unwrap().to_vec();
        let mut next = argmax(&logits[(p.ids.len() - 1) * vocab..]);
        let mut tokens = vec![next];
        for step in 0..GREEDY {
            after_step(step);
            let l = s.eval(&[next], false).unwrap();
            logits.extend_from_slice(l);
            next = argmax(l);
            tokens.push(next);
        }
        out.logits.push(logits);
        out.tokens.push(tokens);
    }
    out
}

fn parts(path: &Path) -> (Arc<GgufFile>, ModelConfig, Arc<ExpertDirectory>) {
    let file = Arc::new(GgufFile::open(path).unwrap());
    let config = ModelConfig::from_gguf(&file.header, path).unwrap();
    let directory = Arc::new(ExpertDirectory::from_gguf(&file.header, &config, path).unwrap());
    (file, config, directory)
}

fn cfg(backend: BackendKind, policy: PolicyKind, pool_bytes: u64) -> StreamConfig {
    StreamConfig {
        pool_bytes,
        backend,
        policy,
        queue_depth: 8,
        mlock: true,
        ..Default::default()
    }
}

/// A model over a streamed source, and a handle to the source.
fn streamed(
    path: &Path,
    cfg: &StreamConfig,
    wrap: impl FnOnce(Box<dyn Backend>) -> Box<dyn Backend>,
) -> (Arc<Model>, Arc<StreamedExperts>) {
    let (file, config, directory) = parts(path);
    let n_layers = config.n_layers;
    let src =
        Arc::new(StreamedExperts::open_with(path, directory.clone(), n_layers, cfg, wrap).unwrap());
    let model = Model::from_parts(file, config, directory, Box::new(src.clone())).unwrap();
    (Arc::new(model), src)
}

/// Pool sizes to test: the minimum, half the experts, all of them.
fn pool_sizes(path: &Path) -> Vec<u64> {
    let (_, config, directory) = parts(path);
    let slot = edgemoe::stream::slot_bytes(&directory);
    let all = (config.n_layers * config.n_experts) as u64;
    let min = edgemoe::stream::min_pool_bytes(&directory);
    vec![
        min,
        (all / 2).max(config.n_experts_used as u64) * slot,
        all * slot,
    ]
}

fn bit_identical_for(backend: BackendKind) {
    let mut printed = false;
    for (name, path) in files() {
        let family = name.split('/').next().unwrap();
        let want = run(&Arc::new(Model::load(&path).unwrap()), family, |_| {});
        for pool in pool_sizes(&path) {
            for policy in PolicyKind::ALL {
                let (model, src) = streamed(&path, &cfg(backend, policy, pool), |b| b);
                if !printed {
                    eprintln!(
                        "{backend:?}: backend `{}`, slot {} bytes, notes {:?}",
                        src.backend_name(),
                        src.slot_bytes(),
                        src.notes()
                    );
                    printed = true;
                }
                let got = run(&model, family, |_| {});
                assert!(
                    got == want,
                    "{name}: {backend:?} {policy:?} pool {pool} differs from resident"
                );
                let st = src.stats();
                assert_eq!(st.hits + st.preload_hits + st.misses, st.gets, "{st:?}");
                assert!(st.waits <= st.gets);
                assert!(st.gets > 0 && st.bytes_read > 0 && st.read_errors == 0);
                assert!(st.bytes_read % 4096 == 0);
                eprintln!(
                    "{name:16} {:8} {policy:?}: pool {pool:>8} hit rate {:.3}, {} reads, \
                     {} bytes, {} preloads ({} wasted)",
                    src.backend_name(),
                    st.hit_rate(),
                    st.reads,
                    st.bytes_read,
                    st.preloads,
                    st.wasted_preloads
                );
            }
        }
    }
}

#[test]
fn io_uring_is_bit_identical_to_resident() {
    bit_identical_for(BackendKind::IoUring);
}

#[test]
fn pread_is_bit_identical_to_resident() {
    bit_identical_for(BackendKind::Pread);
}

#[test]
fn mmap_is_bit_identical_to_resident() {
    bit_identical_for(BackendKind::Mmap);
}

#[cfg(all(target_os = "linux", not(target_os = "android")))]
#[test]
fn io_uring_is_used_where_the_kernel_allows_it() {
    let path = fixture("mixtral").join("stock-f32.gguf");
    let pool = pool_sizes(&path)[0];
    let (_, src) = streamed(&path, &cfg(BackendKind::Auto, PolicyKind::Lru, pool), |b| b);
    // Capability-gated: where io_uring is refused the fallback must say why.
    if src.backend_name() != "io_uring" {
        assert!(
            src.notes().iter().any(|n| n.contains("io_uring")),
            "{:?}",
            src.notes()
        );
        eprintln!("io_uring unavailable here: {:?}", src.notes());
    }
}

/// Fails every read from the `fail_from`-th one on until healed.
struct Faulty {
    inner: Box<dyn Backend>,
    seen: Arc<AtomicUsize>,
    fail_from: usize,
    healed: Arc<AtomicBool>,
    failed: Mutex<HashSet<u64>>,
}

fn injected() -> io::Error {
    io::Error::other("injected read failure")
}

impl Backend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    fn submit(&self, reqs: &[ReadRequest]) {
        let mut pass = Vec::new();
        for r in reqs {
            let n = self.seen.fetch_add(1, Ordering::SeqCst);
            if n >= self.fail_from && !self.healed.load(Ordering::SeqCst) {
                self.failed.lock().unwrap().insert(r.tag);
            } else {
                pass.push(*r);
            }
        }
        self.inner.submit(&pass);
    }
    fn reap(&self, out: &mut Vec<Completion>) {
        self.inner.reap(out);
        out.extend(self.failed.lock().unwrap().drain().map(|tag| Completion {
            tag,
            result: Err(injected()),
        }));
    }
    fn wait(&self, tag: u64) -> io::Result<()> {
        if self.failed.lock().unwrap().remove(&tag) {
            return Err(injected());
        }
        self.inner.wait(tag)
    }
}

#[test]
fn read_errors_fail_the_token_and_leave_the_session_usable() {
    for backend in [BackendKind::IoUring, BackendKind::Pread, BackendKind::Mmap] {
        for (name, path) in files() {
            let family = name.split('/').next().unwrap();
            let resident = Arc::new(Model::load(&path).unwrap());
            let p = &reference(family).prompts[0];
            let vocab = resident.config.vocab;
            let mut rs = Session::new(resident.clone(), Some(64)).unwrap();
            let want_prompt = rs.eval(&p.ids, true).unwrap().to_vec();
            let next = argmax(&want_prompt[(p.ids.len() - 1) * vocab..]);
            let want_next = rs.eval(&[next], false).unwrap().to_vec();

            let pool = pool_sizes(&path)[0];
            let faulty = |fail_from: usize| {
                let seen = Arc::new(AtomicUsize::new(0));
                let healed = Arc::new(AtomicBool::new(false));
                let (s2, h2) = (seen.clone(), healed.clone());
                let (model, src) =
                    streamed(&path, &cfg(backend, PolicyKind::Lru, pool), move |inner| {
                        Box::new(Faulty {
                            inner,
                            seen: s2,
                            fail_from,
                            healed: h2,
                            failed: Mutex::new(HashSet::new()),
                        })
                    });
                (model, src, seen, healed)
            };
            // Count the reads of the prompt, then fail from the first read, from one in the
            // middle of the prompt, and from the first read of the decode step.
            let (model, _, seen, _) = faulty(usize::MAX);
            Session::new(model, Some(64))
                .unwrap()
                .eval(&p.ids, true)
                .unwrap();
            let prompt_reads = seen.load(Ordering::SeqCst);
            for fail_from in [0, prompt_reads / 2, prompt_reads] {
                let (model, src, seen, healed) = faulty(fail_from);
                let mut s = Session::new(model.clone(), Some(64)).unwrap();
                let first = s.eval(&p.ids, true).map(|l| l.to_vec());
                let decoded = match first {
                    Err(e) => {
                        assert!(matches!(e, Error::Io { .. }), "{name}: {e}");
                        assert_eq!(s.position(), 0);
                        healed.store(true, Ordering::SeqCst);
                        let l = s.eval(&p.ids, true).unwrap();
                        assert!(l == &want_prompt[..], "{name}: logits after a failed eval");
                        s.eval(&[next], false).unwrap().to_vec()
                    }
                    Ok(l) => {
                        // The failure lands in the decode step.
                        assert!(l == want_prompt, "{name}: prompt logits");
                        let pos = s.position();
                        let e = s.eval(&[next], false).unwrap_err();
                        assert!(matches!(e, Error::Io { .. }), "{name}: {e}");
                        assert_eq!(s.position(), pos);
                        healed.store(true, Ordering::SeqCst);
                        s.eval(&[next], false).unwrap().to_vec()
                    }
                };
                assert!(
                    decoded == want_next,
                    "{name} {backend:?} fail_from {fail_from}"
                );
                let st = src.stats();
                assert!(st.read_errors > 0, "{name}: {st:?}");
                assert!(seen.load(Ordering::SeqCst) > fail_from);
            }
        }
    }
}

#[test]
fn a_pool_too_small_is_refused_with_the_minimum() {
    let path = fixture("olmoe").join("stock-f32.gguf");
    let (_, config, directory) = parts(&path);
    let min = edgemoe::stream::min_pool_bytes(&directory);
    let err = StreamedExperts::open(
        &path,
        directory.clone(),
        config.n_layers,
        &cfg(BackendKind::Pread, PolicyKind::Lru, min - 1),
    )
    .err()
    .expect("a pool one byte short of the minimum must be refused");
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains(&min.to_string()), "{err}");

    let src = StreamedExperts::open(
        &path,
        directory,
        config.n_layers,
        &cfg(BackendKind::Pread, PolicyKind::Lru, min),
    )
    .unwrap();
    assert_eq!(src.min_pool_bytes(), min);
    let err = src.set_pool_bytes(min - 1).unwrap_err();
    assert!(err.to_string().contains(&min.to_string()), "{err}");
}

#[test]
fn lowering_the_pool_mid_generation_keeps_results_identical() {
    for backend in [BackendKind::IoUring, BackendKind::Pread, BackendKind::Mmap] {
        for (name, path) in files() {
            let family = name.split('/').next().unwrap();
            let want = run(&Arc::new(Model::load(&path).unwrap()), family, |_| {});
            let sizes = pool_sizes(&path);
            let (min, all) = (sizes[0], sizes[2]);
            let (model, src) = streamed(&path, &cfg(backend, PolicyKind::EdgeMoe, all), |b| b);
            let handle = src.clone();
            let got = run(&model, family, |step| match step {
                4 => {
                    handle.set_pool_bytes(min).unwrap();
                    assert_eq!(handle.pool_bytes(), min);
                }
                10 => handle.set_pool_bytes(sizes[1]).unwrap(),
                14 => handle.set_pool_bytes(all).unwrap(),
                _ => {}
            });
            assert!(
                got == want,
                "{name} {backend:?}: resizing changed the results"
            );
            assert_eq!(src.pool_bytes(), all);
        }
    }
}

/// The pool opened at its minimum grows to hold every expert (address space is reserved at
/// open; io_uring re-registers its fixed buffers), shrinks again and regrows, mid-generation.
#[test]
fn raising_the_pool_past_its_size_at_open_keeps_results_identical() {
    for backend in [BackendKind::IoUring, BackendKind::Pread, BackendKind::Mmap] {
        let path = packed("mixtral");
        let want = run(&Arc::new(Model::load(&path).unwrap()), "mixtral", |_| {});
        let sizes = pool_sizes(&path);
        let (min, all) = (sizes[0], sizes[2]);
        let (model, src) = streamed(&path, &cfg(backend, PolicyKind::Lru, min), |b| b);
        assert_eq!(src.pool_bytes(), min);
        assert!(src.max_pool_bytes() >= all, "{backend:?}: nothing reserved");
        let handle = src.clone();
        let got = run(&model, "mixtral", |step| match step {
            3 => {
                handle.set_pool_bytes(all).unwrap();
                assert_eq!(handle.pool_bytes(), all);
            }
            9 => handle.set_pool_bytes(min).unwrap(),
            13 => handle.set_pool_bytes(sizes[1]).unwrap(),
            _ => {}
        });
        assert!(got == want, "{backend:?}: resizing changed the results");
        assert_eq!(
            src.pool_bytes(),
            sizes[1] / src.slot_bytes() * src.slot_bytes()
        );
    }
}

#[test]
fn stats_count_hits_misses_and_preloads() {
    let path = packed("mixtral");
    let sizes = pool_sizes(&path);
    let (model, src) = streamed(
        &path,
        &cfg(BackendKind::Pread, PolicyKind::Lru, sizes[2]),
        |b| b,
    );
    let _ = run(&model, "mixtral", |_| {});
    let st = src.stats();
    let n = (model.config.n_layers * model.config.n_experts) as u64;
    // With room for every expert each is read at most once.
    assert!(st.reads <= n, "{st:?}");
    assert!(st.hits > st.misses, "{st:?}");
    assert!(st.preload_hits <= st.gets && st.preloads <= n);
    assert!(st.read_bandwidth() > 0.0);
    for l in 0..model.config.n_layers {
        for e in 0..model.config.n_experts {
            if src.is_ready(l, e, Precision::High) {
                assert!(src
                    .get(l, e, Precision::High, &AtomicBool::new(false))
                    .is_ok());
            }
        }
    }
    src.reset_stats();
    assert_eq!(src.stats().gets, 0);
    assert!(src
        .get(99, 0, Precision::High, &AtomicBool::new(false))
        .is_err());
}

/// Holds every read until the gate opens; cancelled reads complete at once, as a backend's
/// queued requests do.
struct Gate {
    inner: Box<dyn Backend>,
    open: Arc<AtomicBool>,
    held: Arc<(Mutex<Vec<ReadRequest>>, std::sync::Condvar)>,
    cancelled: Mutex<HashSet<u64>>,
}

impl Gate {
    /// Forwards the held reads once the gate is open.
    fn release(&self) {
        if self.open.load(Ordering::SeqCst) {
            let held: Vec<ReadRequest> = std::mem::take(&mut *self.held.0.lock().unwrap());
            self.inner.submit(&held);
        }
    }
}

impl Backend for Gate {
    fn name(&self) -> &'static str {
        "gate"
    }
    fn submit(&self, reqs: &[ReadRequest]) {
        self.held.0.lock().unwrap().extend_from_slice(reqs);
        self.held.1.notify_all();
        self.release();
    }
    fn reap(&self, out: &mut Vec<Completion>) {
        self.release();
        self.inner.reap(out);
        out.extend(
            self.cancelled
                .lock()
                .unwrap()
                .drain()
                .map(|tag| Completion {
                    tag,
                    result: Err(edgemoe::stream::backend::cancelled()),
                }),
        );
    }
    fn wait(&self, tag: u64) -> io::Result<()> {
        let (held, cond) = &*self.held;
        let mut h = held.lock().unwrap();
        loop {
            if self.cancelled.lock().unwrap().remove(&tag) {
                return Err(edgemoe::stream::backend::cancelled());
            }
            if self.open.load(Ordering::SeqCst) {
                drop(h);
                self.release();
                return self.inner.wait(tag);
            }
            h = cond
                .wait_timeout(h, std::time::Duration::from_millis(10))
                .unwrap()
                .0;
        }
    }
    fn cancel(&self, tags: &[u64]) {
        let (held, cond) = &*self.held;
        let mut h = held.lock().unwrap();
        h.retain(|r| {
            let hit = tags.contains(&r.tag);
            if hit {
                self.cancelled.lock().unwrap().insert(r.tag);
            }
            !hit
        });
        cond.notify_all();
    }
}

/// A cancel from another thread while the prompt waits on expert reads stops those reads,
/// returns `Cancelled`, and leaves the session and the cache usable: the next run equals the
/// resident model's.
#[test]
fn cancel_stops_reads_in_flight_and_the_session_stays_usable() {
    let path = fixture("mixtral").join("stock-f32.gguf");
    let p = &reference("mixtral").prompts[0];
    let mut rs = Session::new(Arc::new(Model::load(&path).unwrap()), Some(64)).unwrap();
    let want = rs.eval(&p.ids, true).unwrap().to_vec();

    let open = Arc::new(AtomicBool::new(false));
    let held = Arc::new((Mutex::new(Vec::new()), std::sync::Condvar::new()));
    let (o2, h2) = (open.clone(), held.clone());
    let pool = pool_sizes(&path)[1];
    let (model, src) = streamed(
        &path,
        &cfg(BackendKind::Pread, PolicyKind::Lru, pool),
        move |inner| {
            Box::new(Gate {
                inner,
                open: o2,
                held: h2,
                cancelled: Mutex::new(HashSet::new()),
            })
        },
    );
    let mut s = Session::new(model.clone(), Some(64)).unwrap();
    let cancel = s.cancel_handle();
    let ids = p.ids.clone();
    let worker = std::thread::spawn(move || {
        let r = s.eval(&ids, true).map(|_| ());
        (s, r)
    });
    // Wait until the prompt is blocked on held reads, then cancel.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while held.0.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no read was issued");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    cancel.cancel();
    let (mut s, r) = worker.join().unwrap();
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
    assert_eq!(s.position(), 0);
    let st = src.stats();
    assert!(st.cancelled_reads > 0, "{st:?}");
    assert_eq!(st.read_errors, 0, "{st:?}");
    assert!(
        held.0.lock().unwrap().is_empty(),
        "cancelled reads left queued"
    );

    open.store(true, Ordering::SeqCst);
    let got = s.eval(&p.ids, true).unwrap().to_vec();
    assert!(got == want, "logits after a cancelled eval");
}

/// Every backend's `cancel` keeps the contract: each request completes exactly once, either
/// read or cancelled, and reads that completed hold the file's bytes.
#[test]
fn backends_complete_every_request_once_when_cancelled() {
    let path = fixture("olmoe").join("stock-f32.gguf");
    let bytes = std::fs::read(&path).unwrap();
    let n = 64usize;
    let len = 4096usize;
    let size = (bytes.len() / 4096 * 4096).min(n * len);
    for kind in [BackendKind::IoUring, BackendKind::Pread, BackendKind::Mmap] {
        let pool = Arc::new(edgemoe::stream::SlotPool::new(len, n, false).unwrap());
        let (backend, _) = edgemoe::stream::open_backend(
            kind,
            &edgemoe::stream::Source::path(&path),
            pool.clone(),
            8,
        )
        .unwrap();
        let reqs: Vec<ReadRequest> = (0..n)
            .map(|i| ReadRequest {
                offset: ((i * len) % size) as u64,
                len,
                slot: i,
                slot_offset: 0,
                tag: i as u64 + 1,
            })
            .collect();
        backend.submit(&reqs);
        let tags: Vec<u64> = reqs.iter().map(|r| r.tag).collect();
        backend.cancel(&tags);
        let mut outcomes = std::collections::HashMap::new();
        let mut done = Vec::new();
        backend.reap(&mut done);
        for c in done.drain(..) {
            assert!(
                outcomes.insert(c.tag, c.result).is_none(),
                "{kind:?}: twice"
            );
        }
        for r in &reqs {
            outcomes.entry(r.tag).or_insert_with(|| backend.wait(r.tag));
        }
        backend.reap(&mut done);
        assert!(done.is_empty(), "{kind:?}: completions after all were seen");
        let mut cancelled = 0;
        for r in &reqs {
            match &outcomes[&r.tag] {
                Ok(()) => {
                    // SAFETY: every read completed and none is in flight: nothing writes the pool.
                    let got = unsafe { pool.slot(r.slot) };
                    let at = r.offset as usize;
                    assert_eq!(&got[..len], &bytes[at..at + len], "{kind:?}");
                }
                Err(e) if edgemoe::stream::backend::is_cancelled(e) => cancelled += 1,
                Err(e) => panic!("{kind:?}: {e}"),
            }
        }
        eprintln!("{kind:?}: {cancelled}/{n} reads cancelled");
    }
}

/// Fill-ahead: with room for every expert, the experts the first token does not ask for are
/// read into the empty slots ahead of need (never evicting: at most one read per slot), later
/// tokens find them as preload hits, and the results stay bit-identical to resident, for every
/// backend; the synchronous mmap backend does not fill, and neither does a source with
/// fill-ahead off.
#[test]
fn fill_ahead_reads_into_empty_slots_and_keeps_results_identical() {
    let path = packed("mixtral");
    let want = run(&Arc::new(Model::load(&path).unwrap()), "mixtral", |_| {});
    let sizes = pool_sizes(&path);
    for backend in [BackendKind::IoUring, BackendKind::Pread, BackendKind::Mmap] {
        for (pool, fill) in [(sizes[2], true), (sizes[1], true), (sizes[2], false)] {
            let config = StreamConfig {
                fill_ahead: fill,
                ..cfg(backend, PolicyKind::Lru, pool)
            };
            let (model, src) = streamed(&path, &config, |b| b);
            let got = run(&model, "mixtral", |_| {});
            assert!(got == want, "{backend:?} pool {pool} fill {fill}: differs");
            let st = src.stats();
            let n = (model.config.n_layers * model.config.n_experts) as u64;
            assert!(st.fill_reads <= src.slots() as u64, "{st:?}");
            assert!(
                st.fill_reads <= st.preloads && st.read_errors == 0,
                "{st:?}"
            );
            if fill && backend != BackendKind::Mmap {
                assert!(
                    st.fill_reads > 0 && st.preload_hits > 0,
                    "{backend:?}: {st:?}"
                );
                if pool == sizes[2] {
                    // Room for all: each expert read once, by a demand read or a fill.
                    assert_eq!(st.reads, n, "{st:?}");
                    assert_eq!(st.misses + st.fill_reads, n, "{st:?}");
                    assert_eq!(st.wasted_preloads, 0, "{st:?}");
                }
            } else {
                assert_eq!(st.fill_reads, 0, "{backend:?} fill {fill}: {st:?}");
            }
        }
    }
}
