//! The streamed [`ExpertSource`]: a fetch pins the expert's slot (reading it first on a miss),
//! requests start every read of a layer in one submission, preloads go in as room allows.

#![forbid(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use super::state::*;
use super::streamed::StreamedExperts;
use crate::expert::{ExpertSource, ExpertView, Precision, ReadKind};
use crate::{Error, Result};

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
                None => match self.pin_for_get(&mut st, key, precision)? {
                    Pinned::Slot(s) => {
                        held = Some(s);
                        s
                    }
                    Pinned::WaitFor(tag) => {
                        // Every slot is pinned, some by reads in flight: wait for one.
                        st.starved += 1;
                        drop(st);
                        self.wait_tag(tag);
                        self.state.lock().starved -= 1;
                        if cancel.load(Ordering::SeqCst) {
                            return Err(Error::Cancelled);
                        }
                        continue;
                    }
                },
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
                    return Err(self.read_error(layer, expert, kind, msg));
                }
            }
        }
    }
}

/// What [`StreamedExperts::pin_for_get`] found.
enum Pinned {
    /// This slot is pinned for the fetch: it holds the key, or its read was submitted.
    Slot(usize),
    /// Every slot is pinned, some by reads in flight: wait for this one.
    WaitFor(u64),
}

impl StreamedExperts {
    /// The error of a fetch whose read failed.
    fn read_error(&self, layer: usize, expert: usize, kind: io::ErrorKind, msg: String) -> Error {
        let why = format!("reading expert {expert} of layer {layer}: {msg}");
        Error::io(&self.path, io::Error::new(kind, why))
    }

    /// Pins the slot holding `key`, or a free one with the key's demand read submitted, and
    /// counts the fetch (a hit, a preload hit or a miss).
    fn pin_for_get(&self, st: &mut State, key: usize, precision: Precision) -> Result<Pinned> {
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
            Ok(Pinned::Slot(s))
        } else if let Some(s) = st.allocate(false, precision == Precision::High) {
            st.stats.gets += 1;
            st.stats.low_gets += low;
            st.stats.misses += 1;
            st.stats.waits += 1;
            self.count_read(st, key);
            let reqs = st.start_load(s, key, &self.plans[key]);
            st.slots[s].pins += 1;
            st.slots[s].urgent = true;
            st.demand_inflight += 1;
            st.pace.demand_bytes += self.plans[key].slot_bytes();
            // Submitted under the lock so no thread can wait for a tag that the backend has
            // not seen yet.
            self.backend.submit_first(&reqs);
            Ok(Pinned::Slot(s))
        } else if let Some(&tag) = st.tags.keys().next() {
            Ok(Pinned::WaitFor(tag))
        } else {
            Err(Error::InvalidArgument(format!(
                "all {} expert slots are held by views in use",
                st.active
            )))
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
    pub(super) fn start_reads_of(
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
            if !demand {
                // The policy learns which layers predictions cover.
                st.policy.preloaded((layer, e));
            }
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
    pub(super) fn evict_for_preload(&self, st: &mut State, key: usize) -> Option<usize> {
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
