//! Replaying a recorded routing trace through a cache of a given size: the online policies,
//! Belady's MIN, and the same with the engine's preloads.

use std::collections::HashMap;

use super::{AccessInfo, EvictionPolicy, Key, PolicyContext, PolicyKind};

/// Hits and accesses of one replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub accesses: u64,
    /// Accesses to an expert kept since an earlier use.
    pub hits: u64,
    /// Accesses to an expert preloaded on a prediction (only [`replay_with_preloads`]).
    pub preload_hits: u64,
    /// Experts read on a prediction, and those evicted or passed over unused.
    pub preloads: u64,
    pub wasted_preloads: u64,
}

impl ReplayStats {
    pub fn hit_rate(&self) -> f64 {
        if self.accesses == 0 {
            0.0
        } else {
            self.hits as f64 / self.accesses as f64
        }
    }

    /// Accesses that found the expert in memory (kept or preloaded): no demand read.
    pub fn served_rate(&self) -> f64 {
        if self.accesses == 0 {
            0.0
        } else {
            (self.hits + self.preload_hits) as f64 / self.accesses as f64
        }
    }
}

/// One layer of one token in a recorded run, with what the engine knew about the next layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStep {
    pub layer: usize,
    /// Experts the layer used.
    pub used: Vec<usize>,
    /// Experts predicted for the next layer before this layer's experts were fetched.
    pub predicted_next: Vec<usize>,
    /// Experts predicted for the next layer once this layer's experts had run.
    pub refined_next: Vec<usize>,
}

/// Replays a run the way the streamed engine executes it: for each step, the layer's used
/// experts are known (and protected) before any is fetched; the next layer's predicted experts
/// are preloaded (a prediction evicts only unprotected experts, and protects what it names
/// until its layer has run); then the used experts are fetched in ascending order; then the
/// refined prediction is preloaded. Only what the engine knows at each point is used, never
/// the trace's future. The policy is told of every predicted expert
/// ([`EvictionPolicy::preloaded`]).
pub fn replay_with_preloads(
    steps: &[ReplayStep],
    n_layers: usize,
    slots: usize,
    policy: &dyn EvictionPolicy,
) -> ReplayStats {
    let mut sim = PreloadSim {
        n: n_layers.max(1),
        slots,
        policy,
        st: ReplayStats::default(),
        info: HashMap::new(),
        cached: Vec::with_capacity(slots),
        protected: Vec::new(),
        now: 0,
        max_freq: 0,
        current: 0,
    };
    for step in steps {
        sim.step(step);
    }
    sim.st
}

/// The state of [`replay_with_preloads`].
struct PreloadSim<'a> {
    n: usize,
    slots: usize,
    policy: &'a dyn EvictionPolicy,
    st: ReplayStats,
    info: HashMap<Key, AccessInfo>,
    /// (key, preloaded and not used yet)
    cached: Vec<(Key, bool)>,
    /// Protected keys: the running layer's used experts and the next layers' predictions.
    protected: Vec<Key>,
    now: u64,
    max_freq: u64,
    current: usize,
}

impl PreloadSim<'_> {
    fn step(&mut self, step: &ReplayStep) {
        let (n, l) = (self.n, step.layer % self.n);
        // Entering layer `l`: predictions for the layers passed were wrong.
        let (current, d_new) = (self.current, (l + n - self.current) % n);
        self.protected.retain(|k| (k.0 + n - current) % n >= d_new);
        self.current = l;
        let mut used = step.used.clone();
        used.sort_unstable();
        used.dedup();
        for &e in &used {
            self.protect((l, e));
        }
        if l + 1 < n {
            self.preload(&step.predicted_next, l + 1);
        }
        for &e in &used {
            self.fetch((l, e), &used);
        }
        if l + 1 < n {
            self.preload(&step.refined_next, l + 1);
        }
    }

    fn protect(&mut self, key: Key) {
        if !self.protected.contains(&key) {
            self.protected.push(key);
        }
    }

    /// The context of an eviction before access `now + 1`.
    fn cx(&self) -> PolicyContext {
        PolicyContext {
            now: self.now + 1,
            current_layer: self.current,
            n_layers: self.n,
            max_freq: self.max_freq,
        }
    }

    /// The cached entry the policy evicts first among those `skip` does not exclude.
    fn victim(&self, skip: &dyn Fn(Key) -> bool) -> Option<usize> {
        let cx = self.cx();
        (0..self.cached.len())
            .filter(|&i| !skip(self.cached[i].0))
            .map(|i| {
                let k = self.cached[i].0;
                let info = self.info.get(&k).copied().unwrap_or_default();
                (i, self.policy.keep_score(k, &info, &cx))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(i, _)| i)
    }

    fn remove(&mut self, i: usize) {
        if self.cached[i].1 {
            self.st.wasted_preloads += 1;
        }
        self.cached.swap_remove(i);
    }

    /// Preloads `experts` of `layer`, evicting only unprotected ones.
    fn preload(&mut self, experts: &[usize], layer: usize) {
        for &e in experts {
            let key = (layer, e);
            self.policy.preloaded(key);
            self.protect(key);
            if self.cached.iter().any(|c| c.0 == key) || self.slots == 0 {
                continue;
            }
            if self.cached.len() == self.slots {
                let protected = &self.protected;
                let Some(v) = self.victim(&|k| protected.contains(&k)) else {
                    continue;
                };
                self.remove(v);
            }
            self.cached.push((key, true));
            self.st.preloads += 1;
        }
    }

    /// Fetches `key`, one of the running layer's `used` experts.
    fn fetch(&mut self, key: Key, used: &[usize]) {
        self.st.accesses += 1;
        if let Some(c) = self.cached.iter_mut().find(|c| c.0 == key) {
            if c.1 {
                self.st.preload_hits += 1;
            } else {
                self.st.hits += 1;
            }
            c.1 = false;
        } else if self.slots > 0 {
            if self.cached.len() == self.slots {
                // As the engine: protected experts (this layer's, predicted ones) are kept
                // while others exist.
                let (protected, l) = (&self.protected, key.0);
                let v = self
                    .victim(&|k| protected.contains(&k))
                    .or_else(|| self.victim(&|k| k.0 == l && used.contains(&k.1)))
                    .or_else(|| self.victim(&|_| false))
                    .expect("cache is full, so not empty");
                self.remove(v);
            }
            self.cached.push((key, false));
        }
        self.now += 1;
        let i = self.info.entry(key).or_default();
        i.last = self.now;
        i.freq += 1;
        self.max_freq = self.max_freq.max(i.freq);
    }
}

/// Replays `trace` (the sequence of (layer, expert) fetches) through a cache of `slots`
/// experts under `policy`, starting cold.
pub fn replay(
    trace: &[Key],
    n_layers: usize,
    slots: usize,
    policy: &dyn EvictionPolicy,
) -> ReplayStats {
    let mut stats = ReplayStats::default();
    let mut info: HashMap<Key, AccessInfo> = HashMap::new();
    let mut cached: Vec<Key> = Vec::with_capacity(slots);
    let mut max_freq = 0;
    for (t, &key) in trace.iter().enumerate() {
        let now = t as u64 + 1;
        stats.accesses += 1;
        if cached.contains(&key) {
            stats.hits += 1;
        } else if slots > 0 {
            if cached.len() == slots {
                let cx = PolicyContext {
                    now,
                    current_layer: key.0,
                    n_layers,
                    max_freq,
                };
                let victim = cached
                    .iter()
                    .enumerate()
                    .map(|(i, k)| (i, policy.keep_score(*k, &info[k], &cx)))
                    .min_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
                    .expect("cache is full, so not empty");
                cached.swap_remove(victim);
            }
            cached.push(key);
        }
        let i = info.entry(key).or_default();
        i.last = now;
        i.freq += 1;
        max_freq = max_freq.max(i.freq);
    }
    stats
}

/// Belady's MIN: on a miss with a full cache, evict the expert used farthest in the future
/// (or never). The optimum any policy without preloading can reach.
pub fn belady(trace: &[Key], slots: usize) -> ReplayStats {
    // next_use[t]: the next index after t at which trace[t] is accessed again.
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut seen: HashMap<Key, usize> = HashMap::new();
    for (t, &key) in trace.iter().enumerate().rev() {
        if let Some(&n) = seen.get(&key) {
            next_use[t] = n;
        }
        seen.insert(key, t);
    }
    let mut stats = ReplayStats::default();
    // (key, its next use)
    let mut cached: Vec<(Key, usize)> = Vec::with_capacity(slots);
    for (t, &key) in trace.iter().enumerate() {
        stats.accesses += 1;
        if let Some(c) = cached.iter_mut().find(|c| c.0 == key) {
            stats.hits += 1;
            c.1 = next_use[t];
        } else if slots > 0 {
            if cached.len() == slots {
                let victim = (0..cached.len())
                    .max_by_key(|&i| cached[i].1)
                    .expect("cache is full, so not empty");
                cached.swap_remove(victim);
            }
            cached.push((key, next_use[t]));
        }
    }
    stats
}

/// Scores every policy and Belady's MIN on the same trace and cache size.
pub fn compare_policies(
    trace: &[Key],
    n_layers: usize,
    slots: usize,
) -> Vec<(&'static str, ReplayStats)> {
    let mut out: Vec<_> = PolicyKind::ALL
        .iter()
        .map(|k| {
            let p = k.build();
            (p.name(), replay(trace, n_layers, slots, p.as_ref()))
        })
        .collect();
    out.push(("belady", belady(trace, slots)));
    out
}

/// Belady's MIN as an eviction rule for [`replay_with_preloads`]: evicts the cached expert
/// whose next use lies farthest ahead (or never comes). It reads the trace's future, so it is
/// no online policy: replayed with the engine's own preloads and protections it is the
/// offline optimum for eviction, against which the online policies' eviction is scored.
pub struct FutureMin {
    /// Access numbers (1-based, in replay order) of every expert.
    uses: HashMap<Key, Vec<u64>>,
}

impl FutureMin {
    pub fn new(steps: &[ReplayStep], n_layers: usize) -> Self {
        let n = n_layers.max(1);
        let mut uses: HashMap<Key, Vec<u64>> = HashMap::new();
        let mut t = 0u64;
        for step in steps {
            let mut used = step.used.clone();
            used.sort_unstable();
            used.dedup();
            for e in used {
                t += 1;
                uses.entry((step.layer % n, e)).or_default().push(t);
            }
        }
        FutureMin { uses }
    }
}

impl EvictionPolicy for FutureMin {
    fn name(&self) -> &'static str {
        "belady"
    }
    fn keep_score(&self, key: Key, _: &AccessInfo, cx: &PolicyContext) -> f64 {
        // `cx.now` is the number of the access being served (or the next one, for a
        // preload): the next use is the first at or after it.
        let Some(times) = self.uses.get(&key) else {
            return f64::NEG_INFINITY;
        };
        let i = times.partition_point(|&t| t < cx.now);
        times.get(i).map_or(f64::NEG_INFINITY, |&t| -(t as f64))
    }
}

/// Scores every policy with the trace's preloads ([`replay_with_preloads`]), and last, as
/// `belady`, the same preloads with Belady's eviction ([`FutureMin`]).
pub fn compare_policies_with_preloads(
    steps: &[ReplayStep],
    n_layers: usize,
    slots: usize,
) -> Vec<(&'static str, ReplayStats)> {
    let mut out: Vec<_> = PolicyKind::ALL
        .iter()
        .map(|k| {
            let p = k.build();
            (
                p.name(),
                replay_with_preloads(steps, n_layers, slots, p.as_ref()),
            )
        })
        .collect();
    let min = FutureMin::new(steps, n_layers);
    out.push(("belady", replay_with_preloads(steps, n_layers, slots, &min)));
    out
}
