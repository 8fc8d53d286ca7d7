//! Expert streaming: experts are read from storage into a fixed, pinned pool of slots that is
//! also the expert cache (the EdgeMoE design), so a model larger than memory runs within a
//! fixed budget.
//!
//! [`StreamedExperts`] implements [`ExpertSource`]. Each expert has a precomputed *read plan*:
//! one aligned read of its span in edgemoe's packed layout, or three (gate, up, down) in
//! llama.cpp's merged layout, each the 4096-aligned superset of the bytes wanted, laid out in
//! the slot so a view can start at the right offset inside it.
//!
//! Concurrency: one mutex over the cache state, never held while waiting for I/O; a second
//! mutex serialises consumption of completions (whoever waits for a read holds it, others
//! reap opportunistically with `try_lock`), so no completion is lost between threads.

pub mod backend;
pub mod cache;
mod mmap;
pub mod pool;
mod pread;
pub mod rawread;
pub mod source;
#[cfg(all(target_os = "linux", not(target_os = "android")))]
mod uring;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub use crate::expert::{min_pool_bytes, slot_bytes};
pub use backend::{open_backend, Backend, BackendKind, Completion, ReadRequest};
pub use cache::{
    belady, compare_policies, compare_policies_with_preloads, replay, replay_with_preloads,
    AccessInfo, EvictionPolicy, FutureMin, Key, PolicyContext, PolicyKind, ReplayStats, ReplayStep,
};
pub use pool::{SlotPool, ALIGN};
pub use source::Source;

use crate::expert::{
    ExpertDirectory, ExpertLoc, ExpertSource, ExpertView, MatrixLoc, Precision, ReadKind,
    ReadPlan as Plan,
};
use crate::{Error, Result};

/// How to stream experts.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Bytes of the expert pool (rounded down to whole slots).
    pub pool_bytes: u64,
    pub backend: BackendKind,
    pub policy: PolicyKind,
    /// Reads in flight at once (io_uring uses at least 8; the pread pool uses up to 4
    /// threads).
    pub queue_depth: usize,
    /// Pin the pool in RAM where `RLIMIT_MEMLOCK` allows.
    pub mlock: bool,
    /// While the pool has empty slots, keep reading the experts of the layers ahead into them
    /// (a read into an empty slot evicts nothing), so a cold cache fills at full bandwidth,
    /// overlapped with compute. Not with synchronous backends (mmap).
    pub fill_ahead: bool,
    /// Preloads that would evict another expert wait until no demand read is in flight (a
    /// speculative read only competes with demand reads that keep the device busy), and are
    /// dropped when a layer pass leaves the device no idle time for what wrong predictions
    /// waste. Off: every prediction is preloaded at once, evicting if need be.
    pub budget_aware_preloads: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            pool_bytes: 256 << 20,
            backend: BackendKind::Auto,
            policy: PolicyKind::Lru,
            queue_depth: 16,
            mlock: true,
            fill_ahead: true,
            budget_aware_preloads: true,
        }
    }
}

/// What streaming did, cumulative since open or the last [`StreamedExperts::reset_stats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Expert fetches by the forward pass: `hits + preload_hits + misses`.
    pub gets: u64,
    /// Fetches served by the cache: the expert stayed loaded since an earlier use.
    pub hits: u64,
    /// Fetches served by a preload (already loaded or still in flight).
    pub preload_hits: u64,
    /// Fetches that issued a demand read.
    pub misses: u64,
    /// Fetches that had to wait for a read (a miss, or a preload still in flight).
    pub waits: u64,
    /// Experts read because of `prefetch`.
    pub preloads: u64,
    /// Preloaded experts evicted without being used. (A prediction that missed its layer but
    /// whose expert a later pass uses counts as a preload hit then: the read was needed.)
    pub wasted_preloads: u64,
    /// Of `preloads`, experts read into empty slots ahead of need ([`StreamConfig::fill_ahead`]).
    pub fill_reads: u64,
    /// Predicted experts not preloaded: put off while demand reads ran until their layer came,
    /// or not worth evicting another expert for ([`StreamConfig::budget_aware_preloads`]).
    pub dropped_preloads: u64,
    /// Completed read requests and their bytes (aligned, as read from storage).
    pub reads: u64,
    pub bytes_read: u64,
    /// Reads that failed.
    pub read_errors: u64,
    /// Reads stopped by a cancellation before they finished.
    pub cancelled_reads: u64,
    /// Fetches of low-precision copies (lower precision on a miss fired): counted in `gets`
    /// and in `hits`/`misses` like any fetch.
    pub low_gets: u64,
    /// Low-precision copies read (a miss, or a preload of one).
    pub low_reads: u64,
    /// Bytes those reads saved over reading the same experts at high precision.
    pub low_bytes_saved: u64,
    /// Time the forward pass spent blocked on I/O.
    pub io_wait: Duration,
    /// Wall time with at least one read in flight.
    pub io_busy: Duration,
}

impl StreamStats {
    /// Fraction of fetches the cache served without reading (preloads excluded).
    pub fn hit_rate(&self) -> f64 {
        if self.gets == 0 {
            0.0
        } else {
            self.hits as f64 / self.gets as f64
        }
    }

    /// Achieved read bandwidth in bytes per second (bytes read over time with reads in
    /// flight).
    pub fn read_bandwidth(&self) -> f64 {
        let t = self.io_busy.as_secs_f64();
        if t > 0.0 {
            self.bytes_read as f64 / t
        } else {
            0.0
        }
    }
}

/// Bytes of speculative reads (preloads, fill-ahead) kept in flight at most (one read at
/// least): enough to keep the device streaming, few enough that a demand read, which the
/// device serves after them, does not wait long. Their number is also held to half the
/// backend's queue, so a demand read always finds room in it.
const SPECULATIVE_INFLIGHT_BYTES: u64 = 24 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Empty,
    Loading,
    Ready,
}

#[derive(Debug)]
struct Slot {
    key: Option<usize>,
    phase: Phase,
    /// Views in use + waiters + one while reads are in flight.
    pins: u32,
    parts_left: u32,
    /// Tags of this slot's reads still in flight.
    tags: Vec<u64>,
    /// The first error of the current load.
    failed: Option<(io::ErrorKind, String)>,
    /// After a failed load, the error for threads that were waiting on it.
    error: Option<(io::ErrorKind, String)>,
    /// Predicted for this layer and not used yet: not evicted while other candidates exist.
    protected: Option<usize>,
    /// Read by a prefetch and not used yet.
    preloaded: bool,
    /// Read because the current layer needs it (`request`), not fetched yet: the fetch counts
    /// as a miss, not as a preload hit.
    demanded: bool,
    /// A demand read is in flight.
    urgent: bool,
    /// Bytes of the speculative read in flight (a preload or fill-ahead), else 0.
    speculative: u64,
    /// Preloaded for a prediction not yet scored (used, or its layer passed).
    predicted: bool,
}

const NONE: u32 = u32::MAX;

struct State {
    pool: Arc<SlotPool>,
    /// The cache's entries, `per_slot` to a pool slot: entry `e` lies in pool slot
    /// `e / per_slot`, `e % per_slot` strides of `sub_bytes` in. A high-precision copy takes a
    /// whole pool slot (its first entry, the others empty); low-precision copies, several
    /// times smaller, share one. Without low copies an entry is a pool slot.
    slots: Vec<Slot>,
    per_slot: usize,
    sub_bytes: usize,
    /// Key to slot, or NONE. A key is `layer * n_experts + expert` for the high-precision copy,
    /// plus `n_keys` for the low-precision one: a slot knows which copy it holds.
    map: Vec<u32>,
    /// In-flight tag to (slot, bytes).
    tags: HashMap<u64, (usize, usize)>,
    next_tag: u64,
    /// Pool slots in use; `active..` are retired (the pool was lowered).
    active: usize,
    n_layers: usize,
    n_experts: usize,
    /// Experts per copy: `n_layers * n_experts`.
    n_keys: usize,
    info: Vec<AccessInfo>,
    max_freq: u64,
    clock: u64,
    current_layer: usize,
    policy: Box<dyn EvictionPolicy>,
    stats: StreamStats,
    busy_since: Option<Instant>,
    scratch: Vec<Completion>,
    fill_ahead: bool,
    /// A read failed or was cancelled, and none has succeeded since: fill-ahead pauses rather
    /// than retry into a failing device.
    fill_paused: bool,
    /// Fetches waiting for a slot to free up: speculative reads must not take it first.
    starved: usize,
    /// Speculative reads in flight (slots, bytes), and the most allowed.
    speculative_slots: usize,
    speculative_inflight: u64,
    speculative_slot_cap: usize,
    speculative_cap: u64,
    /// Slots with a demand read in flight.
    demand_inflight: usize,
    budget_aware_preloads: bool,
    /// Predicted (layer, key) put off while demand reads are in flight.
    deferred: Vec<(usize, usize)>,
    /// What decides whether a preload may evict (see [`State::eviction_pays`]).
    pace: Pace,
}

/// Running estimates of the pipeline's pace, per layer pass (one layer of one batch), for
/// deciding whether a speculative read that evicts an expert pays for itself.
#[derive(Debug)]
struct Pace {
    /// When the running layer pass began, with the I/O wait total then.
    pass_start: Instant,
    wait_at_start: Duration,
    /// Bytes of demand reads issued in this pass, and of preloads that evicted.
    demand_bytes: u64,
    evicting_bytes: u64,
    /// Moving averages: seconds a pass spends computing (not waiting), demand bytes a pass.
    compute: f64,
    demand: f64,
    /// Predicted preloads used, and passed over (their layer ran without them).
    used: u64,
    missed: u64,
}

impl Pace {
    /// Weight of the newest pass in the moving averages.
    const NEW: f64 = 0.125;

    fn new() -> Self {
        Pace {
            pass_start: Instant::now(),
            wait_at_start: Duration::ZERO,
            demand_bytes: 0,
            evicting_bytes: 0,
            compute: 0.0,
            demand: 0.0,
            used: 0,
            missed: 0,
        }
    }

    /// Closes the running pass; `io_wait` is the source's total wait so far.
    fn next_pass(&mut self, io_wait: Duration) {
        let now = Instant::now();
        let waited = io_wait.saturating_sub(self.wait_at_start);
        let compute = now
            .saturating_duration_since(self.pass_start)
            .saturating_sub(waited)
            .as_secs_f64();
        self.compute += Self::NEW * (compute - self.compute);
        self.demand += Self::NEW * (self.demand_bytes as f64 - self.demand);
        self.pass_start = now;
        self.wait_at_start = io_wait;
        self.demand_bytes = 0;
        self.evicting_bytes = 0;
    }

    /// Share of predicted preloads used (a prior of one used, one missed).
    fn precision(&self) -> f64 {
        (self.used + 1) as f64 / (self.used + self.missed + 2) as f64
    }
}

impl State {
    fn lookup(&self, key: usize) -> Option<usize> {
        let s = self.map[key];
        (s != NONE).then_some(s as usize)
    }

    fn key_of(&self, idx: usize) -> Key {
        let idx = idx % self.n_keys.max(1);
        (idx / self.n_experts, idx % self.n_experts)
    }

    /// Moves the running layer to `layer`, expiring the protection of predictions for the
    /// layers passed on the way (they were proven wrong).
    fn enter_layer(&mut self, layer: usize) {
        if layer == self.current_layer {
            return;
        }
        let n = self.n_layers.max(1);
        let cur = self.current_layer;
        let dist = |l: usize| (l + n - cur) % n;
        let d_new = dist(layer);
        let before = self.deferred.len();
        // A prediction for the layer now running is superseded by its demand reads.
        self.deferred.retain(|&(p, _)| dist(p) > d_new);
        self.stats.dropped_preloads += (before - self.deferred.len()) as u64;
        for s in &mut self.slots {
            if let Some(p) = s.protected {
                if dist(p) < d_new {
                    s.protected = None;
                    if std::mem::take(&mut s.predicted) {
                        self.pace.missed += 1;
                    }
                }
            }
        }
        self.current_layer = layer;
        self.pace.next_pass(self.stats.io_wait);
    }

    /// Whether preloading `bytes` for a prediction may evict an expert: only while the device
    /// has idle time in a layer pass for what such reads waste. A pass's demand reads plus the
    /// expected waste of its evicting preloads (the share of predictions that miss) must take
    /// less time, at the bandwidth measured so far, than the pass computes. When demand reads
    /// already fill the device, a wrong preload delays the next demand read and costs a
    /// re-read of what it evicted; into an empty slot a preload is always allowed.
    fn eviction_pays(&self, bytes: u64) -> bool {
        let bandwidth = self.stats.read_bandwidth();
        if bandwidth <= 0.0 || self.pace.compute <= 0.0 {
            return true; // nothing measured yet
        }
        let waste = (1.0 - self.pace.precision()) * (self.pace.evicting_bytes + bytes) as f64;
        (self.pace.demand + waste) / bandwidth < self.pace.compute
    }

    fn touch(&mut self, key: usize) {
        self.clock += 1;
        let i = &mut self.info[key];
        i.last = self.clock;
        i.freq += 1;
        self.max_freq = self.max_freq.max(i.freq);
    }

    /// Empties a loaded, unpinned slot.
    fn evict(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if let Some(k) = s.key.take() {
            self.map[k] = NONE;
        }
        if s.preloaded {
            self.stats.wasted_preloads += 1;
        }
        if s.predicted {
            self.pace.missed += 1;
        }
        s.preloaded = false;
        s.predicted = false;
        s.demanded = false;
        s.protected = None;
        s.phase = Phase::Empty;
        s.error = None;
    }

    /// Entries of the pool slots in use.
    fn entries(&self) -> usize {
        self.active * self.per_slot
    }

    /// The entries of pool slot `g`.
    fn group(&self, g: usize) -> std::ops::Range<usize> {
        g * self.per_slot..(g + 1) * self.per_slot
    }

    /// Pool slot and byte offset in it of entry `e`.
    fn place(&self, e: usize) -> (usize, usize) {
        (e / self.per_slot, (e % self.per_slot) * self.sub_bytes)
    }

    /// First entries of the pool slots in use that are wholly empty (room for a high copy).
    fn empty_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.active)
            .filter(|&g| self.group(g).all(|e| self.entry_free(e)))
            .map(|g| g * self.per_slot)
    }

    fn entry_free(&self, e: usize) -> bool {
        self.slots[e].phase == Phase::Empty && self.slots[e].pins == 0
    }

    /// Whether entry `e`'s pool slot holds (or is loading) a high-precision copy, which
    /// leaves no room in it for anything else.
    fn slot_holds_high(&self, e: usize) -> bool {
        let first = e - e % self.per_slot;
        self.slots[first].key.is_some_and(|k| k < self.n_keys)
    }

    /// An entry for a new expert copy (`high`: the high-precision one, which needs a whole
    /// pool slot): a free one, else the policy's victim among loaded unpinned entries,
    /// preferring unprotected ones. A pool slot given up for a high copy costs what its
    /// dearest entry is worth, and all its entries leave. Prefetches never evict protected
    /// experts.
    fn allocate(&mut self, for_prefetch: bool, high: bool) -> Option<usize> {
        if let Some(i) = self.free_slot(high) {
            return Some(i);
        }
        let cx = PolicyContext {
            now: self.clock + 1,
            current_layer: self.current_layer,
            n_layers: self.n_layers,
            max_freq: self.max_freq,
        };
        let evictable = |e: usize, allow_protected: bool| {
            let s = &self.slots[e];
            s.phase == Phase::Ready && s.pins == 0 && (allow_protected || s.protected.is_none())
        };
        let worth = |e: usize| {
            let k = self.slots[e].key.expect("ready slots hold an expert");
            self.policy.keep_score(self.key_of(k), &self.info[k], &cx)
        };
        let pick = |allow_protected: bool| -> Option<usize> {
            if high {
                (0..self.active)
                    .filter_map(|g| {
                        let mut dearest = f64::NEG_INFINITY;
                        for e in self.group(g) {
                            if self.entry_free(e) {
                                continue;
                            }
                            if !evictable(e, allow_protected) {
                                return None;
                            }
                            dearest = dearest.max(worth(e));
                        }
                        Some((g * self.per_slot, dearest))
                    })
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(e, _)| e)
            } else {
                (0..self.entries())
                    .filter(|&e| evictable(e, allow_protected))
                    .map(|e| (e, worth(e)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(e, _)| e)
            }
        };
        let victim = pick(false).or_else(|| (!for_prefetch).then(|| pick(true)).flatten())?;
        if high {
            for e in self.group(victim / self.per_slot) {
                if self.slots[e].phase == Phase::Ready {
                    self.evict(e);
                }
            }
        } else {
            self.evict(victim);
        }
        Some(victim)
    }

    /// Whether a speculative read of `bytes` may start: within the cap on speculative bytes in
    /// flight, or the first one.
    fn has_room(&self, bytes: u64) -> bool {
        self.speculative_slots == 0
            || (self.speculative_slots < self.speculative_slot_cap
                && self.speculative_inflight + bytes <= self.speculative_cap)
    }

    fn start_speculative(&mut self, slot: usize, bytes: u64) {
        self.slots[slot].speculative = bytes;
        self.speculative_slots += 1;
        self.speculative_inflight += bytes;
    }

    /// An empty entry, if any (taking it evicts nothing): for a high-precision copy, the
    /// first of a wholly empty pool slot; for a low one, room beside other low copies first,
    /// so whole slots stay free for high copies.
    fn free_slot(&mut self, high: bool) -> Option<usize> {
        let i = if high || self.per_slot == 1 {
            self.empty_slots().next()
        } else {
            let fits = |e: usize| self.entry_free(e) && !self.slot_holds_high(e);
            let shared = (0..self.entries()).find(|&e| {
                fits(e)
                    && self
                        .group(e / self.per_slot)
                        .any(|o| self.slots[o].key.is_some())
            });
            shared.or_else(|| (0..self.entries()).find(|&e| fits(e)))
        }?;
        self.slots[i].error = None;
        Some(i)
    }

    /// Marks entry `slot` as loading `key` and returns the reads to submit.
    fn start_load(&mut self, slot: usize, key: usize, plan: &Plan) -> Vec<ReadRequest> {
        self.drop_low_copy(key);
        let (pool_slot, base) = self.place(slot);
        let mut reqs = Vec::with_capacity(plan.reads.len());
        for &(offset, len, slot_offset) in &plan.reads {
            let tag = self.next_tag;
            self.next_tag += 1;
            self.tags.insert(tag, (slot, len));
            reqs.push(ReadRequest {
                offset,
                len,
                slot: pool_slot,
                slot_offset: base + slot_offset,
                tag,
            });
        }
        if self.busy_since.is_none() {
            self.busy_since = Some(Instant::now());
        }
        let s = &mut self.slots[slot];
        s.key = Some(key);
        s.phase = Phase::Loading;
        s.pins += 1;
        s.parts_left = reqs.len() as u32;
        s.tags = reqs.iter().map(|r| r.tag).collect();
        s.failed = None;
        s.error = None;
        self.map[key] = slot as u32;
        reqs
    }

    /// Frees the slot of the low-precision copy of `key`'s expert when its high-precision copy
    /// is being loaded: a cached high copy serves every later request, so the low one is dead
    /// weight in the cache.
    fn drop_low_copy(&mut self, key: usize) {
        if key >= self.n_keys || self.map.len() <= self.n_keys {
            return;
        }
        if let Some(s) = self.lookup(key + self.n_keys) {
            if self.slots[s].pins == 0 && self.slots[s].phase == Phase::Ready {
                self.evict(s);
            }
        }
    }

    /// Records the completion of one read.
    fn complete(&mut self, tag: u64, result: io::Result<()>) {
        let Some((slot, len)) = self.tags.remove(&tag) else {
            return;
        };
        if self.tags.is_empty() {
            if let Some(t0) = self.busy_since.take() {
                self.stats.io_busy += t0.elapsed();
            }
        }
        let s = &mut self.slots[slot];
        s.tags.retain(|&t| t != tag);
        match result {
            Ok(()) => {
                self.stats.reads += 1;
                self.stats.bytes_read += len as u64;
                self.fill_paused = false;
            }
            Err(e) => {
                self.fill_paused = true;
                // A cancelled read is marked `Interrupted`, which `get` retries.
                let failure = if backend::is_cancelled(&e) {
                    self.stats.cancelled_reads += 1;
                    (io::ErrorKind::Interrupted, "cancelled".to_string())
                } else {
                    self.stats.read_errors += 1;
                    (e.kind(), e.to_string())
                };
                if s.failed.is_none() {
                    s.failed = Some(failure);
                }
            }
        }
        s.parts_left -= 1;
        if s.parts_left > 0 {
            return;
        }
        s.pins -= 1;
        if std::mem::take(&mut s.urgent) {
            self.demand_inflight -= 1;
        }
        let speculative = std::mem::take(&mut s.speculative);
        if speculative > 0 {
            self.speculative_slots -= 1;
            self.speculative_inflight -= speculative;
        }
        if let Some(f) = s.failed.take() {
            // The cache stays consistent: the expert is not loaded, the slot is free again
            // (once waiters have seen the error).
            if let Some(k) = s.key.take() {
                self.map[k] = NONE;
            }
            s.phase = Phase::Empty;
            s.protected = None;
            s.preloaded = false;
            s.predicted = false;
            s.demanded = false;
            s.error = Some(f);
        } else {
            s.phase = Phase::Ready;
        }
        self.retire_if_idle(slot);
    }

    /// Evicts and releases the pool slot of entry `slot` when it lies above the active range
    /// and nobody uses any of its entries.
    fn retire_if_idle(&mut self, slot: usize) {
        let g = slot / self.per_slot;
        if g < self.active {
            return;
        }
        let idle = |e: usize| self.slots[e].pins == 0 && self.slots[e].phase != Phase::Loading;
        if self.group(g).all(idle) {
            for e in self.group(g) {
                self.evict(e);
            }
            self.pool.release(g, 1);
        }
    }

    fn unpin(&mut self, slot: usize) {
        self.slots[slot].pins -= 1;
        self.retire_if_idle(slot);
    }
}

/// Experts streamed from storage into a fixed pool that doubles as the expert cache.
pub struct StreamedExperts {
    path: PathBuf,
    directory: Arc<ExpertDirectory>,
    /// Read plans by key: the high-precision copies, then the low-precision ones if any.
    plans: Vec<Plan>,
    /// Experts per copy (`n_layers * n_experts`).
    n_keys: usize,
    /// Cache entries per pool slot and their stride (see [`State::slots`]).
    per_slot: usize,
    sub_bytes: usize,
    pool: Arc<SlotPool>,
    backend: Box<dyn Backend>,
    state: Mutex<State>,
    /// Held by whoever consumes completions (see the module docs).
    io: Mutex<()>,
    min_slots: usize,
    notes: Vec<String>,
    /// Serialises [`StreamedExperts::set_pool_bytes`].
    resizing: Mutex<()>,
}

/// Unpins a slot when the view holding it is dropped.
struct PinGuard<'a> {
    owner: &'a StreamedExperts,
    slot: usize,
}

impl Drop for PinGuard<'_> {
    fn drop(&mut self) {
        self.owner.state.lock().unpin(self.slot);
    }
}

impl StreamedExperts {
    /// Opens `path` for streaming with the pool and backend of `cfg`. Fails with
    /// [`Error::InvalidArgument`] (stating the minimum) when the pool cannot hold the
    /// `n_experts_used` experts one token needs in a layer.
    pub fn open(
        path: &Path,
        directory: Arc<ExpertDirectory>,
        n_layers: usize,
        cfg: &StreamConfig,
    ) -> Result<Self> {
        Self::open_with(path, directory, n_layers, cfg, |b| b)
    }

    /// Like [`StreamedExperts::open`], with the backend passed through `wrap` (for fault
    /// injection and instrumentation).
    pub fn open_with(
        path: &Path,
        directory: Arc<ExpertDirectory>,
        n_layers: usize,
        cfg: &StreamConfig,
        wrap: impl FnOnce(Box<dyn Backend>) -> Box<dyn Backend>,
    ) -> Result<Self> {
        Self::open_source(&Source::path(path), directory, n_layers, cfg, wrap)
    }

    /// Opens a model that lives in a file or a descriptor region ([`Source`]).
    pub fn open_source(
        source: &Source,
        directory: Arc<ExpertDirectory>,
        n_layers: usize,
        cfg: &StreamConfig,
        wrap: impl FnOnce(Box<dyn Backend>) -> Box<dyn Backend>,
    ) -> Result<Self> {
        let path = source.name();
        if n_layers != directory.n_layers {
            return Err(Error::InvalidArgument(format!(
                "{n_layers} layers given for a directory of {}",
                directory.n_layers
            )));
        }
        let n_experts_used = directory.n_experts_used;
        let model_len = source.len()?;
        let base = source.base();
        let n_keys = directory.n_layers * directory.n_experts;
        let mut plans = Vec::with_capacity(2 * n_keys);
        for (i, loc) in directory.iter().chain(directory.iter_low()).enumerate() {
            let i = i % n_keys.max(1);
            for m in [loc.gate, loc.up, loc.down] {
                let end = m.offset.checked_add(m.len);
                if !matches!(end, Some(e) if e <= model_len) {
                    return Err(Error::invalid_file(
                        path,
                        format!(
                            "expert {} of layer {} lies past the end of the file",
                            i % directory.n_experts.max(1),
                            i / directory.n_experts.max(1)
                        ),
                    ));
                }
                if m.len > u32::MAX as u64 / 2 {
                    return Err(Error::Unsupported(format!(
                        "expert matrix of {} bytes",
                        m.len
                    )));
                }
            }
            // Backends read absolute file offsets.
            let absolute = |m: MatrixLoc| MatrixLoc {
                offset: m.offset + base,
                ..m
            };
            plans.push(Plan::new(&ExpertLoc {
                gate: absolute(loc.gate),
                up: absolute(loc.up),
                down: absolute(loc.down),
            }));
        }
        // From the plans actually built: a region at an unaligned base may need one more block.
        let slot_size = plans
            .iter()
            .map(Plan::slot_bytes)
            .max()
            .unwrap_or(ALIGN)
            .max(ALIGN);
        // Low-precision copies share pool slots, as many as fit whole.
        let sub_bytes = plans[n_keys.min(plans.len())..]
            .iter()
            .map(Plan::slot_bytes)
            .max()
            .map_or(slot_size, |b| b.max(ALIGN));
        let per_slot = (slot_size / sub_bytes).max(1) as usize;
        let n_slots = (cfg.pool_bytes / slot_size) as usize;
        let min_slots = n_experts_used.max(1);
        if n_slots < min_slots {
            return Err(Error::InvalidArgument(format!(
                "an expert pool of {} bytes holds {n_slots} experts; at least {} bytes \
                 ({min_slots} slots of {slot_size} bytes, the experts one token uses in a \
                 layer) are needed",
                cfg.pool_bytes,
                min_slots as u64 * slot_size
            )));
        }
        // More slots than experts would never be used. Address space for all of them is
        // reserved, so the pool can be raised while loaded.
        let capacity = plans.len().max(min_slots);
        let n_slots = n_slots.min(capacity);
        let pool = Arc::new(SlotPool::with_capacity(
            slot_size as usize,
            capacity,
            n_slots,
            cfg.mlock,
        )?);
        let mut notes = Vec::new();
        if let Some(n) = pool.lock_note() {
            notes.push(format!("expert pool not mlock'ed: {n}"));
        }
        let (backend, more) = open_backend(cfg.backend, source, pool.clone(), cfg.queue_depth)?;
        notes.extend(more);
        let backend = wrap(backend);
        let state = State {
            pool: pool.clone(),
            per_slot,
            sub_bytes: sub_bytes as usize,
            slots: (0..pool.n_slots() * per_slot)
                .map(|_| Slot {
                    key: None,
                    phase: Phase::Empty,
                    pins: 0,
                    parts_left: 0,
                    tags: Vec::new(),
                    failed: None,
                    error: None,
                    protected: None,
                    preloaded: false,
                    demanded: false,
                    urgent: false,
                    speculative: 0,
                    predicted: false,
                })
                .collect(),
            map: vec![NONE; plans.len()],
            tags: HashMap::new(),
            next_tag: 1,
            active: n_slots,
            n_layers: directory.n_layers,
            n_experts: directory.n_experts,
            n_keys,
            info: vec![AccessInfo::default(); plans.len()],
            max_freq: 0,
            clock: 0,
            current_layer: 0,
            policy: cfg.policy.build(),
            stats: StreamStats::default(),
            busy_since: None,
            scratch: Vec::new(),
            fill_ahead: cfg.fill_ahead && backend.is_async(),
            fill_paused: false,
            starved: 0,
            speculative_slots: 0,
            speculative_inflight: 0,
            speculative_slot_cap: (cfg.queue_depth / 2).max(1),
            speculative_cap: SPECULATIVE_INFLIGHT_BYTES,
            demand_inflight: 0,
            budget_aware_preloads: cfg.budget_aware_preloads,
            deferred: Vec::new(),
            pace: Pace::new(),
        };
        Ok(StreamedExperts {
            path: path.to_path_buf(),
            directory,
            plans,
            n_keys,
            per_slot,
            sub_bytes: sub_bytes as usize,
            pool,
            backend,
            state: Mutex::new(state),
            io: Mutex::new(()),
            resizing: Mutex::new(()),
            min_slots,
            notes,
        })
    }

    /// The backend in use (after any fallback).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Why the configuration was not followed exactly (io_uring or O_DIRECT refused, pool
    /// not mlock'ed, ...), for the host to print.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Bytes of one slot.
    pub fn slot_bytes(&self) -> u64 {
        self.pool.slot_size() as u64
    }

    /// Whether cache key `key` names a high-precision copy.
    fn is_high(&self, key: usize) -> bool {
        key < self.n_keys
    }

    /// Low-precision copies one pool slot holds at once (1 without copies).
    pub fn low_copies_per_slot(&self) -> usize {
        self.per_slot
    }

    /// Slots in use now.
    pub fn slots(&self) -> usize {
        self.state.lock().active
    }

    /// Bytes of the pool in use now.
    pub fn pool_bytes(&self) -> u64 {
        self.slots() as u64 * self.slot_bytes()
    }

    /// The largest pool this source can grow to without reopening (the pool reserved at open).
    pub fn max_pool_bytes(&self) -> u64 {
        self.pool.len() as u64
    }

    /// The smallest pool allowed.
    pub fn min_pool_bytes(&self) -> u64 {
        self.min_slots as u64 * self.slot_bytes()
    }

    /// Whether the pool is mlock'ed.
    pub fn is_locked(&self) -> bool {
        self.pool.is_locked()
    }

    /// Whether the expert's copy at `precision` is loaded.
    fn loaded(&self, layer: usize, expert: usize, precision: Precision) -> bool {
        let Ok(key) = self.key(layer, expert, precision) else {
            return false;
        };
        let mut st = self.state.lock();
        self.reap_locked(&mut st);
        st.lookup(key)
            .is_some_and(|s| st.slots[s].phase == Phase::Ready)
    }

    /// Resizes the pool. Lowering evicts unpinned experts above the new size and gives their
    /// memory back before returning (experts in use leave when their views are dropped);
    /// raising is possible up to [`StreamedExperts::max_pool_bytes`].
    pub fn set_pool_bytes(&self, bytes: u64) -> Result<()> {
        let slot = self.slot_bytes();
        let n = (bytes / slot) as usize;
        if n < self.min_slots {
            return Err(Error::InvalidArgument(format!(
                "an expert pool of {bytes} bytes holds {n} experts; at least {} bytes are needed",
                self.min_pool_bytes()
            )));
        }
        let n = n.min(self.pool.n_slots());
        if bytes > self.max_pool_bytes() && n < self.plans.len() {
            return Err(Error::InvalidArgument(format!(
                "cannot grow the expert pool past the {} bytes this platform let us reserve at \
                 open; reopen the model to use {bytes}",
                self.max_pool_bytes()
            )));
        }
        // One resize at a time, so the backend's pinned range follows the last one.
        let _resizing = self.resizing.lock();
        let mut st = self.state.lock();
        self.reap_locked(&mut st);
        let old = st.active;
        st.active = n;
        if n > old {
            self.pool.recommit(old, n - old);
        }
        drop(st);
        // Pins exactly the new range before slots above it are released.
        self.backend.resize(n);
        let mut st = self.state.lock();
        let per_slot = st.per_slot;
        for g in n..old {
            st.retire_if_idle(g * per_slot);
        }
        Ok(())
    }

    /// Counters since open or the last reset.
    pub fn stats(&self) -> StreamStats {
        let st = self.state.lock();
        let mut s = st.stats.clone();
        if let Some(t0) = st.busy_since {
            s.io_busy += t0.elapsed();
        }
        s
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        let mut st = self.state.lock();
        st.stats = StreamStats::default();
        if st.busy_since.is_some() {
            st.busy_since = Some(Instant::now());
        }
    }

    /// The cache key of one expert's copy; an error for a missing low-precision copy.
    fn key(&self, layer: usize, expert: usize, precision: Precision) -> Result<usize> {
        self.directory.get_at(layer, expert, precision)?;
        let key = layer * self.directory.n_experts + expert;
        Ok(match precision {
            Precision::High => key,
            Precision::Low => key + self.n_keys,
        })
    }

    /// Whether the expert's high-precision copy is loaded or being read.
    pub fn is_cached(&self, layer: usize, expert: usize) -> bool {
        let Ok(key) = self.key(layer, expert, Precision::High) else {
            return false;
        };
        let mut st = self.state.lock();
        self.reap_locked(&mut st);
        st.lookup(key).is_some()
    }

    /// Counts a read about to be issued for `key`: a low-precision copy saves the difference
    /// to its high-precision read.
    fn count_read(&self, st: &mut State, key: usize) {
        if key >= self.n_keys {
            let high = self.plans[key - self.n_keys].slot_bytes();
            st.stats.low_reads += 1;
            st.stats.low_bytes_saved += high.saturating_sub(self.plans[key].slot_bytes());
        }
    }

    /// Processes ready completions unless another thread is consuming them.
    fn reap_locked(&self, st: &mut State) {
        let Some(_io) = self.io.try_lock() else {
            return;
        };
        let mut done = std::mem::take(&mut st.scratch);
        self.backend.reap(&mut done);
        for c in done.drain(..) {
            st.complete(c.tag, c.result);
        }
        st.scratch = done;
    }

    /// Asks the backend to stop every read in flight (a session was cancelled). Reads it
    /// cannot stop complete normally; stopped ones leave their slot empty, and callers that
    /// still want the expert read it again.
    pub fn cancel_reads(&self) {
        let tags: Vec<u64> = self.state.lock().tags.keys().copied().collect();
        if !tags.is_empty() {
            self.backend.cancel(&tags);
        }
    }

    /// Blocks (holding no cache lock) until read `tag` completes, then records it. Reads that
    /// finish meanwhile are recorded as they come, and the speculative reads they make room
    /// for are started, so the device stays busy while the forward pass waits.
    fn wait_tag(&self, tag: u64) {
        let _io = self.io.lock();
        if !self.state.lock().tags.contains_key(&tag) {
            return; // consumed by another thread meanwhile
        }
        let t0 = Instant::now();
        loop {
            let finished = self.backend.wait_progress(tag);
            let mut st = self.state.lock();
            if let Some(result) = finished {
                st.complete(tag, result);
            }
            let mut done = std::mem::take(&mut st.scratch);
            self.backend.reap(&mut done);
            for c in done.drain(..) {
                st.complete(c.tag, c.result);
            }
            st.scratch = done;
            self.speculate(&mut st);
            if !st.tags.contains_key(&tag) {
                st.stats.io_wait += t0.elapsed();
                return;
            }
        }
    }

    /// Starts the speculative reads allowed now, within the cap on speculative bytes in
    /// flight: predicted preloads in the order predicted (one that needs an eviction waits
    /// while demand reads are in flight, see [`StreamConfig::budget_aware_preloads`]), then
    /// fill-ahead reads into empty slots.
    fn speculate(&self, st: &mut State) {
        if st.starved > 0 {
            return;
        }
        let mut reqs = Vec::new();
        let mut waiting = Vec::new();
        for (layer, key) in std::mem::take(&mut st.deferred) {
            if let Some(s) = st.lookup(key) {
                st.slots[s].protected = Some(layer);
                continue;
            }
            let bytes = self.plans[key].slot_bytes();
            if st.budget_aware_preloads && !st.has_room(bytes) {
                waiting.push((layer, key));
                continue;
            }
            let slot = match st.free_slot(self.is_high(key)) {
                Some(s) => Some(s),
                None if st.budget_aware_preloads && st.demand_inflight > 0 => {
                    waiting.push((layer, key));
                    continue;
                }
                None => self.evict_for_preload(st, key),
            };
            if let Some(s) = slot {
                self.count_read(st, key);
                reqs.extend(st.start_load(s, key, &self.plans[key]));
                let slot = &mut st.slots[s];
                slot.protected = Some(layer);
                slot.preloaded = true;
                slot.predicted = true;
                st.stats.preloads += 1;
                st.start_speculative(s, bytes);
            }
        }
        st.deferred = waiting;
        self.fill_free_slots(st, &mut reqs);
        if !reqs.is_empty() {
            self.backend.submit(&reqs);
        }
    }

    /// Fill-ahead: while slots are empty and fewer than the limit of fill reads are in flight,
    /// reads the experts not cached, in the order the forward pass is likely to want them: each
    /// layer's most used one first, for every layer in forward order from the one after the
    /// running layer, then each layer's second, and so on.
    fn fill_free_slots(&self, st: &mut State, reqs: &mut Vec<ReadRequest>) {
        if !st.fill_ahead || st.fill_paused || !st.has_room(self.slot_bytes()) {
            return;
        }
        let free: Vec<usize> = st.empty_slots().collect();
        if free.is_empty() {
            return;
        }
        let (n, ne) = (st.n_layers.max(1), st.n_experts);
        let has_low = st.map.len() > st.n_keys;
        // Not cached at either precision: loading the high copy drops a cached low one,
        // an eviction.
        let absent = |k: usize| st.map[k] == NONE && !(has_low && st.map[k + st.n_keys] != NONE);
        let mut candidates = Vec::new();
        for d in 1..=n {
            let layer = (st.current_layer + d) % n;
            let mut keys: Vec<usize> = (layer * ne..(layer + 1) * ne)
                .filter(|&k| absent(k))
                .collect();
            keys.sort_by_key(|&k| std::cmp::Reverse(st.info[k].freq));
            candidates.extend(keys.into_iter().enumerate().map(|(rank, k)| (rank, d, k)));
        }
        candidates.sort_unstable();
        for (slot, (_, _, key)) in free.into_iter().zip(candidates) {
            let bytes = self.plans[key].slot_bytes();
            if !st.has_room(bytes) {
                break;
            }
            st.slots[slot].error = None;
            reqs.extend(st.start_load(slot, key, &self.plans[key]));
            st.slots[slot].preloaded = true;
            st.stats.preloads += 1;
            st.stats.fill_reads += 1;
            st.start_speculative(slot, bytes);
        }
    }

    fn view(&self, slot: usize, key: usize) -> Result<ExpertView<'_>> {
        let guard = PinGuard { owner: self, slot };
        let pool_slot = slot / self.per_slot;
        let (offset, len) = if self.is_high(key) || self.per_slot == 1 {
            (0, self.pool.slot_size())
        } else {
            ((slot % self.per_slot) * self.sub_bytes, self.sub_bytes)
        };
        // SAFETY: the entry is loaded (all its reads completed and were reaped) and pinned by
        // `guard`, which the view owns: nothing writes into its bytes or reuses them while the
        // view lives. A high copy's entry spans its pool slot, whose other entries stay empty
        // meanwhile; a low copy's spans only its own stride.
        let bytes = unsafe { self.pool.bytes(pool_slot, offset, len) };
        ExpertView::new(&self.plans[key].loc, 0, bytes, Some(Box::new(guard)))
    }
}

impl ExpertSource for StreamedExperts {
    fn name(&self) -> &'static str {
        "streamed"
    }

    fn has_low_precision(&self) -> bool {
        self.n_keys < self.plans.len()
    }

    fn begin_layer(&self, layer: usize) {
        if layer < self.directory.n_layers {
            self.state.lock().enter_layer(layer);
        }
    }

    fn request(&self, layer: usize, high: &[usize], low: &[usize], kind: ReadKind) {
        let wanted = high
            .iter()
            .map(|&e| (e, Precision::High))
            .chain(low.iter().map(|&e| (e, Precision::Low)));
        self.start_reads_of(layer, wanted, kind == ReadKind::Demand);
    }

    fn is_cached(&self, layer: usize, expert: usize) -> bool {
        StreamedExperts::is_cached(self, layer, expert)
    }

    fn is_ready(&self, layer: usize, expert: usize, precision: Precision) -> bool {
        self.loaded(layer, expert, precision)
    }

    fn cancel_reads(&self) {
        StreamedExperts::cancel_reads(self)
    }

    fn get(
        &self,
        layer: usize,
        expert: usize,
        precision: Precision,
        cancel: &AtomicBool,
    ) -> Result<ExpertView<'_>> {
        let key = self.key(layer, expert, precision)?;
        // The slot this call holds a pin on, once it has one.
        let mut held: Option<usize> = None;
        loop {
            let mut st = self.state.lock();
            self.reap_locked(&mut st);
            st.enter_layer(layer);
            let slot = match held {
                Some(s) => s,
                None => {
                    let low = u64::from(precision == Precision::Low);
                    if let Some(s) = st.lookup(key) {
                        st.stats.gets += 1;
                        st.stats.low_gets += low;
                        if std::mem::take(&mut st.slots[s].demanded) {
                            st.stats.misses += 1;
                        } else if st.slots[s].preloaded {
                            st.stats.preload_hits += 1;
                        } else {
                            st.stats.hits += 1;
                        }
                        if st.slots[s].phase != Phase::Ready {
                            st.stats.waits += 1;
                        }
                        st.slots[s].pins += 1;
                        held = Some(s);
                        s
                    } else if let Some(s) = st.allocate(false, precision == Precision::High) {
                        st.stats.gets += 1;
                        st.stats.low_gets += low;
                        st.stats.misses += 1;
                        st.stats.waits += 1;
                        self.count_read(&mut st, key);
                        let reqs = st.start_load(s, key, &self.plans[key]);
                        st.slots[s].pins += 1;
                        st.slots[s].urgent = true;
                        st.demand_inflight += 1;
                        st.pace.demand_bytes += self.plans[key].slot_bytes();
                        held = Some(s);
                        // Submitted under the lock so no thread can wait for a tag that the
                        // backend has not seen yet.
                        self.backend.submit_first(&reqs);
                        s
                    } else if let Some(&tag) = st.tags.keys().next() {
                        // Every slot is pinned, some by reads in flight: wait for one.
                        st.starved += 1;
                        drop(st);
                        self.wait_tag(tag);
                        self.state.lock().starved -= 1;
                        if cancel.load(Ordering::SeqCst) {
                            return Err(Error::Cancelled);
                        }
                        continue;
                    } else {
                        return Err(Error::InvalidArgument(format!(
                            "all {} expert slots are held by views in use",
                            st.active
                        )));
                    }
                }
            };
            // Our slot is secured: speculative reads may take what is left.
            self.speculate(&mut st);
            let s = &mut st.slots[slot];
            match s.phase {
                Phase::Ready if s.key == Some(key) => {
                    s.preloaded = false;
                    s.protected = None;
                    if std::mem::take(&mut s.predicted) {
                        st.pace.used += 1;
                    }
                    st.touch(key);
                    drop(st);
                    return self.view(slot, key);
                }
                Phase::Loading => {
                    let tag = s.tags[0];
                    drop(st);
                    self.wait_tag(tag);
                    if cancel.load(Ordering::SeqCst) {
                        self.state.lock().unpin(slot);
                        return Err(Error::Cancelled);
                    }
                }
                _ => {
                    let (kind, msg) = s
                        .error
                        .clone()
                        .unwrap_or((io::ErrorKind::Other, "expert load failed".into()));
                    st.unpin(slot);
                    if kind == io::ErrorKind::Interrupted {
                        // Another caller cancelled the read: ours continues unless it was us.
                        if cancel.load(Ordering::SeqCst) {
                            return Err(Error::Cancelled);
                        }
                        held = None;
                        continue;
                    }
                    return Err(Error::io(
                        &self.path,
                        io::Error::new(
                            kind,
                            format!("reading expert {expert} of layer {layer}: {msg}"),
                        ),
                    ));
                }
            }
        }
    }
}

impl Drop for StreamedExperts {
    /// Lets reads in flight finish before the pool can go away.
    fn drop(&mut self) {
        let st = self.state.get_mut();
        st.fill_ahead = false;
        st.deferred.clear();
        let tags: Vec<u64> = st.tags.keys().copied().collect();
        for t in tags {
            self.wait_tag(t);
        }
    }
}

impl StreamedExperts {
    /// Starts reads of the experts of `layer` not cached or in flight, each at its own
    /// precision, in one submission; they are protected from eviction until used. `demand`:
    /// the current layer needs them (a later fetch counts as a miss); otherwise they are
    /// predictions (preloads).
    fn start_reads_of(
        &self,
        layer: usize,
        experts: impl Iterator<Item = (usize, Precision)>,
        demand: bool,
    ) {
        let mut st = self.state.lock();
        self.reap_locked(&mut st);
        let mut reqs = Vec::new();
        for (e, precision) in experts {
            let Ok(key) = self.key(layer, e, precision) else {
                continue;
            };
            if let Some(s) = st.lookup(key) {
                st.slots[s].protected = Some(layer);
                continue;
            }
            if !demand {
                // Started by `speculate` below, as room allows.
                st.deferred.push((layer, key));
                continue;
            }
            let Some(s) = st.allocate(false, self.is_high(key)) else {
                // No room for this copy now (its `get` will wait for one); a low copy after a
                // high one may still fit beside other low copies.
                continue;
            };
            self.count_read(&mut st, key);
            reqs.extend(st.start_load(s, key, &self.plans[key]));
            let slot = &mut st.slots[s];
            slot.protected = Some(layer);
            slot.demanded = true;
            slot.urgent = true;
            st.demand_inflight += 1;
            st.pace.demand_bytes += self.plans[key].slot_bytes();
        }
        if !reqs.is_empty() {
            if demand {
                self.backend.submit_first(&reqs);
            } else {
                self.backend.submit(&reqs);
            }
        }
        self.speculate(&mut st);
    }

    /// Evicts the policy's victim among unprotected experts to preload `key`, when that pays
    /// ([`State::eviction_pays`]); `None`: the prediction is dropped.
    fn evict_for_preload(&self, st: &mut State, key: usize) -> Option<usize> {
        let bytes = self.plans[key].slot_bytes();
        let slot = if !st.budget_aware_preloads || st.eviction_pays(bytes) {
            st.allocate(true, self.is_high(key))
        } else {
            None
        };
        match slot {
            Some(_) => st.pace.evicting_bytes += bytes,
            None => st.stats.dropped_preloads += 1,
        }
        slot
    }
}
