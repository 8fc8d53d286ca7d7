//! The expert cache's state machine: which key each pool slot holds and in what phase (empty,
//! loading, ready), pins, protections of predicted experts, the eviction policy's bookkeeping,
//! and the pacing of speculative reads. Guarded by one mutex in [`super::StreamedExperts`],
//! never held while waiting for I/O.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::{self, Completion, ReadRequest};
use super::cache::{AccessInfo, EvictionPolicy, Key, PolicyContext};
use super::config::{StreamConfig, StreamStats};
use super::pool::SlotPool;
use crate::expert::ReadPlan as Plan;

/// Bytes of speculative reads (preloads, fill-ahead) kept in flight at most (one read at
/// least): enough to keep the device streaming, few enough that a demand read, which the
/// device serves after them, does not wait long. Their number is also held to half the
/// backend's queue, so a demand read always finds room in it.
pub(super) const SPECULATIVE_INFLIGHT_BYTES: u64 = 24 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Empty,
    Loading,
    Ready,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) key: Option<usize>,
    pub(super) phase: Phase,
    /// Views in use + waiters + one while reads are in flight.
    pub(super) pins: u32,
    pub(super) parts_left: u32,
    /// Tags of this slot's reads still in flight.
    pub(super) tags: Vec<u64>,
    /// The first error of the current load.
    pub(super) failed: Option<(io::ErrorKind, String)>,
    /// After a failed load, the error for threads that were waiting on it.
    pub(super) error: Option<(io::ErrorKind, String)>,
    /// Predicted for this layer and not used yet: not evicted while other candidates exist.
    pub(super) protected: Option<usize>,
    /// Read by a prefetch and not used yet.
    pub(super) preloaded: bool,
    /// Read because the current layer needs it (`request`), not fetched yet: the fetch counts
    /// as a miss, not as a preload hit.
    pub(super) demanded: bool,
    /// A demand read is in flight.
    pub(super) urgent: bool,
    /// Bytes of the speculative read in flight (a preload or fill-ahead), else 0.
    pub(super) speculative: u64,
    /// Preloaded for a prediction not yet scored (used, or its layer passed).
    pub(super) predicted: bool,
}

pub(super) const NONE: u32 = u32::MAX;

pub(super) struct State {
    pub(super) pool: Arc<SlotPool>,
    /// The cache's entries, `per_slot` to a pool slot: entry `e` lies in pool slot
    /// `e / per_slot`, `e % per_slot` strides of `sub_bytes` in. A high-precision copy takes a
    /// whole pool slot (its first entry, the others empty); low-precision copies, several
    /// times smaller, share one. Without low copies an entry is a pool slot.
    pub(super) slots: Vec<Slot>,
    pub(super) per_slot: usize,
    pub(super) sub_bytes: usize,
    /// Key to slot, or NONE. A key is `layer * n_experts + expert` for the high-precision copy,
    /// plus `n_keys` for the low-precision one: a slot knows which copy it holds.
    pub(super) map: Vec<u32>,
    /// In-flight tag to (slot, bytes).
    pub(super) tags: HashMap<u64, (usize, usize)>,
    pub(super) next_tag: u64,
    /// Pool slots in use; `active..` are retired (the pool was lowered).
    pub(super) active: usize,
    pub(super) n_layers: usize,
    pub(super) n_experts: usize,
    /// Experts per copy: `n_layers * n_experts`.
    pub(super) n_keys: usize,
    pub(super) info: Vec<AccessInfo>,
    pub(super) max_freq: u64,
    pub(super) clock: u64,
    pub(super) current_layer: usize,
    pub(super) policy: Box<dyn EvictionPolicy>,
    pub(super) stats: StreamStats,
    pub(super) busy_since: Option<Instant>,
    pub(super) scratch: Vec<Completion>,
    pub(super) fill_ahead: bool,
    /// A read failed or was cancelled, and none has succeeded since: fill-ahead pauses rather
    /// than retry into a failing device.
    pub(super) fill_paused: bool,
    /// Fetches waiting for a slot to free up: speculative reads must not take it first.
    pub(super) starved: usize,
    /// Speculative reads in flight (slots, bytes), and the most allowed.
    pub(super) speculative_slots: usize,
    pub(super) speculative_inflight: u64,
    pub(super) speculative_slot_cap: usize,
    pub(super) speculative_cap: u64,
    /// Slots with a demand read in flight.
    pub(super) demand_inflight: usize,
    pub(super) budget_aware_preloads: bool,
    /// Predicted (layer, key) put off while demand reads are in flight.
    pub(super) deferred: Vec<(usize, usize)>,
    /// What decides whether a preload may evict (see [`State::eviction_pays`]).
    pub(super) pace: Pace,
}

/// Running estimates of the pipeline's pace, per layer pass (one layer of one batch), for
/// deciding whether a speculative read that evicts an expert pays for itself.
#[derive(Debug)]
pub(super) struct Pace {
    /// When the running layer pass began, with the I/O wait total then.
    pub(super) pass_start: Instant,
    pub(super) wait_at_start: Duration,
    /// Bytes of demand reads issued in this pass, and of preloads that evicted.
    pub(super) demand_bytes: u64,
    pub(super) evicting_bytes: u64,
    /// Moving averages: seconds a pass spends computing (not waiting), demand bytes a pass.
    pub(super) compute: f64,
    pub(super) demand: f64,
    /// Predicted preloads used, and passed over (their layer ran without them).
    pub(super) used: u64,
    pub(super) missed: u64,
}

impl Pace {
    /// Weight of the newest pass in the moving averages.
    const NEW: f64 = 0.125;

    pub(super) fn new() -> Self {
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
    pub(super) fn next_pass(&mut self, io_wait: Duration) {
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
    pub(super) fn precision(&self) -> f64 {
        (self.used + 1) as f64 / (self.used + self.missed + 2) as f64
    }
}

/// The shape of the cache the state tracks.
pub(super) struct Layout {
    /// Cache entries per pool slot (low-precision copies share slots).
    pub per_slot: usize,
    pub sub_bytes: usize,
    /// Active pool slots.
    pub n_slots: usize,
    /// Experts per copy (`n_layers * n_experts`).
    pub n_keys: usize,
    pub n_layers: usize,
    pub n_experts: usize,
    /// Read plans (keys) in all, both copies.
    pub plans: usize,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
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
        }
    }
}

impl State {
    /// An empty cache over `pool`.
    pub(super) fn new(
        pool: Arc<SlotPool>,
        layout: Layout,
        cfg: &StreamConfig,
        async_backend: bool,
    ) -> State {
        let n_entries = pool.n_slots() * layout.per_slot;
        State {
            pool,
            per_slot: layout.per_slot,
            sub_bytes: layout.sub_bytes,
            slots: (0..n_entries).map(|_| Slot::empty()).collect(),
            map: vec![NONE; layout.plans],
            tags: HashMap::new(),
            next_tag: 1,
            active: layout.n_slots,
            n_layers: layout.n_layers,
            n_experts: layout.n_experts,
            n_keys: layout.n_keys,
            info: vec![AccessInfo::default(); layout.plans],
            max_freq: 0,
            clock: 0,
            current_layer: 0,
            policy: cfg.policy.build(),
            stats: StreamStats::default(),
            busy_since: None,
            scratch: Vec::new(),
            fill_ahead: cfg.fill_ahead && async_backend,
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
        }
    }

    pub(super) fn lookup(&self, key: usize) -> Option<usize> {
        let s = self.map[key];
        (s != NONE).then_some(s as usize)
    }

    pub(super) fn key_of(&self, idx: usize) -> Key {
        let idx = idx % self.n_keys.max(1);
        (idx / self.n_experts, idx % self.n_experts)
    }

    /// Moves the running layer to `layer`, expiring the protection of predictions for the
    /// layers passed on the way (they were proven wrong).
    pub(super) fn enter_layer(&mut self, layer: usize) {
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
    pub(super) fn eviction_pays(&self, bytes: u64) -> bool {
        let bandwidth = self.stats.read_bandwidth();
        if bandwidth <= 0.0 || self.pace.compute <= 0.0 {
            return true; // nothing measured yet
        }
        let waste = (1.0 - self.pace.precision()) * (self.pace.evicting_bytes + bytes) as f64;
        (self.pace.demand + waste) / bandwidth < self.pace.compute
    }

    pub(super) fn touch(&mut self, key: usize) {
        self.clock += 1;
        let i = &mut self.info[key];
        i.last = self.clock;
        i.freq += 1;
        self.max_freq = self.max_freq.max(i.freq);
    }

    /// Empties a loaded, unpinned slot.
    pub(super) fn evict(&mut self, slot: usize) {
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
    pub(super) fn entries(&self) -> usize {
        self.active * self.per_slot
    }

    /// The entries of pool slot `g`.
    pub(super) fn group(&self, g: usize) -> std::ops::Range<usize> {
        g * self.per_slot..(g + 1) * self.per_slot
    }

    /// Pool slot and byte offset in it of entry `e`.
    pub(super) fn place(&self, e: usize) -> (usize, usize) {
        (e / self.per_slot, (e % self.per_slot) * self.sub_bytes)
    }

    /// First entries of the pool slots in use that are wholly empty (room for a high copy).
    pub(super) fn empty_slots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.active)
            .filter(|&g| self.group(g).all(|e| self.entry_free(e)))
            .map(|g| g * self.per_slot)
    }

    pub(super) fn entry_free(&self, e: usize) -> bool {
        self.slots[e].phase == Phase::Empty && self.slots[e].pins == 0
    }

    /// Whether entry `e`'s pool slot holds (or is loading) a high-precision copy, which
    /// leaves no room in it for anything else.
    pub(super) fn slot_holds_high(&self, e: usize) -> bool {
        let first = e - e % self.per_slot;
        self.slots[first].key.is_some_and(|k| k < self.n_keys)
    }

    /// An entry for a new expert copy (`high`: the high-precision one, which needs a whole
    /// pool slot): a free one, else the policy's victim among loaded unpinned entries,
    /// preferring unprotected ones. A pool slot given up for a high copy costs what its
    /// dearest entry is worth, and all its entries leave. Prefetches never evict protected
    /// experts.
    pub(super) fn allocate(&mut self, for_prefetch: bool, high: bool) -> Option<usize> {
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
    pub(super) fn has_room(&self, bytes: u64) -> bool {
        self.speculative_slots == 0
            || (self.speculative_slots < self.speculative_slot_cap
                && self.speculative_inflight + bytes <= self.speculative_cap)
    }

    pub(super) fn start_speculative(&mut self, slot: usize, bytes: u64) {
        self.slots[slot].speculative = bytes;
        self.speculative_slots += 1;
        self.speculative_inflight += bytes;
    }

    /// An empty entry, if any (taking it evicts nothing): for a high-precision copy, the
    /// first of a wholly empty pool slot; for a low one, room beside other low copies first,
    /// so whole slots stay free for high copies.
    pub(super) fn free_slot(&mut self, high: bool) -> Option<usize> {
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
    pub(super) fn start_load(&mut self, slot: usize, key: usize, plan: &Plan) -> Vec<ReadRequest> {
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
    pub(super) fn drop_low_copy(&mut self, key: usize) {
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
    pub(super) fn complete(&mut self, tag: u64, result: io::Result<()>) {
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
    pub(super) fn retire_if_idle(&mut self, slot: usize) {
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

    pub(super) fn unpin(&mut self, slot: usize) {
        self.slots[slot].pins -= 1;
        self.retire_if_idle(slot);
    }
}
