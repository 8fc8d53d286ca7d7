//! [`StreamedExperts`]: opening a model for streaming (read plans, the pool, the backend),
//! the pool's size while loaded, statistics, and the reaping of completions.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::backend::{open_backend, Backend, ReadRequest};
use super::config::{StreamConfig, StreamStats};
use super::pool::{SlotPool, ALIGN};
use super::source::Source;
use super::state::*;
use crate::expert::{
    ExpertDirectory, ExpertLoc, ExpertView, MatrixLoc, Precision, ReadPlan as Plan,
};
use crate::{Error, Result};

/// Experts streamed from storage into a fixed pool that doubles as the expert cache.
pub struct StreamedExperts {
    pub(super) path: PathBuf,
    pub(super) directory: Arc<ExpertDirectory>,
    /// Read plans by key: the high-precision copies, then the low-precision ones if any.
    pub(super) plans: Vec<Plan>,
    /// Experts per copy (`n_layers * n_experts`).
    pub(super) n_keys: usize,
    /// Cache entries per pool slot and their stride (see [`State::slots`]).
    pub(super) per_slot: usize,
    pub(super) sub_bytes: usize,
    pub(super) pool: Arc<SlotPool>,
    pub(super) backend: Box<dyn Backend>,
    pub(super) state: Mutex<State>,
    /// Held by whoever consumes completions (see the module docs).
    pub(super) io: Mutex<()>,
    pub(super) min_slots: usize,
    pub(super) notes: Vec<String>,
    /// Serialises [`StreamedExperts::set_pool_bytes`].
    pub(super) resizing: Mutex<()>,
}

/// Unpins a slot when the view holding it is dropped.
pub(super) struct PinGuard<'a> {
    pub(super) owner: &'a StreamedExperts,
    pub(super) slot: usize,
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
        let n_keys = directory.n_layers * directory.n_experts;
        let plans = read_plans(source, &directory)?;
        let min_slots = n_experts_used.max(1);
        let (slot_size, sub_bytes, n_slots) =
            slot_sizes(&plans, n_keys, cfg.pool_bytes, min_slots)?;
        let per_slot = (slot_size / sub_bytes).max(1) as usize;
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
        let state = State::new(
            pool.clone(),
            Layout {
                per_slot,
                sub_bytes: sub_bytes as usize,
                n_slots,
                n_keys,
                n_layers: directory.n_layers,
                n_experts: directory.n_experts,
                plans: plans.len(),
            },
            cfg,
            backend.is_async(),
        );
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
    pub(super) fn is_high(&self, key: usize) -> bool {
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
    pub(super) fn loaded(&self, layer: usize, expert: usize, precision: Precision) -> bool {
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
    pub(super) fn key(&self, layer: usize, expert: usize, precision: Precision) -> Result<usize> {
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
    pub(super) fn count_read(&self, st: &mut State, key: usize) {
        if key >= self.n_keys {
            let high = self.plans[key - self.n_keys].slot_bytes();
            st.stats.low_reads += 1;
            st.stats.low_bytes_saved += high.saturating_sub(self.plans[key].slot_bytes());
        }
    }

    /// Processes ready completions unless another thread is consuming them.
    pub(super) fn reap_locked(&self, st: &mut State) {
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
    pub(super) fn wait_tag(&self, tag: u64) {
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
    pub(super) fn speculate(&self, st: &mut State) {
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
    pub(super) fn fill_free_slots(&self, st: &mut State, reqs: &mut Vec<ReadRequest>) {
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

    pub(super) fn view(&self, slot: usize, key: usize) -> Result<ExpertView<'_>> {
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

/// Every expert's read plan (the high-precision copies, then the low-precision ones if any),
/// with file offsets made absolute; an error for an expert past the end of the file.
fn read_plans(source: &Source, directory: &ExpertDirectory) -> Result<Vec<Plan>> {
    let path = source.name();
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
    Ok(plans)
}

/// The pool's slot size, the size of a low-precision copy's share of a slot, and the slots
/// `pool_bytes` holds, from the plans actually built (a region at an unaligned base may need
/// one more block); an error, stating the minimum, below `min_slots`.
fn slot_sizes(
    plans: &[Plan],
    n_keys: usize,
    pool_bytes: u64,
    min_slots: usize,
) -> Result<(u64, u64, usize)> {
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
    let n_slots = (pool_bytes / slot_size) as usize;
    if n_slots < min_slots {
        return Err(Error::InvalidArgument(format!(
            "an expert pool of {pool_bytes} bytes holds {n_slots} experts; at least {} bytes \
             ({min_slots} slots of {slot_size} bytes, the experts one token uses in a \
             layer) are needed",
            min_slots as u64 * slot_size
        )));
    }
    Ok((slot_size, sub_bytes, n_slots))
}
