//! The default eviction policy against Belady's optimum and the older policies, on routing
//! traces recorded from a trained model (the bundled demo model) and from random 16-layer
//! models (`tests/fixtures/traces/`, written by `examples/record_routing.rs`), and on a cyclic
//! layer-order trace where LRU thrashes.
//!
//! Cache sizes are 10%, 20%, ..., 90% of the model's experts. "Demand" replays every fetch
//! without preloads (Belady's MIN is the optimum there); "preloads" replays the recorded
//! look-ahead predictions as the engine preloads them and counts every fetch served from
//! memory. `cargo test --release --test cache_policy -- --ignored --nocapture` prints the
//! table.

use edgemoe::stream::cache::ReplayTrace;
use edgemoe::stream::{
    belady, replay, replay_with_preloads, AccessInfo, EvictionPolicy, FutureMin, Key,
    PolicyContext, PolicyKind,
};

/// Traces: a trained model's (two texts) and random 16-layer models' (hidden 256 and 1024).
const TRACES: [&str; 4] = [
    "demo.trace",
    "demo-readme.trace",
    "random-16x8.trace",
    "random-1024-readme.trace",
];

/// The policies before [`PolicyKind::Adaptive`].
const OLD: [PolicyKind; 5] = [
    PolicyKind::EdgeMoe,
    PolicyKind::Lru,
    PolicyKind::Lfu,
    PolicyKind::Hobbit,
    PolicyKind::Forward,
];

fn load(name: &str) -> ReplayTrace {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/traces")
        .join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    ReplayTrace::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One cache size of one trace: (the default's, the best older policy's, the optimum's) rate.
#[derive(Clone, Copy, Debug)]
struct Row {
    pct: usize,
    default: f64,
    best_old: f64,
    optimum: f64,
}

fn slots(t: &ReplayTrace, pct: usize) -> usize {
    t.total_experts() * pct / 100
}

/// The hit rate of the best fixed set of `slots - 1` experts chosen knowing the whole trace
/// (the most used ones; every first use misses), the last slot taking each miss as a cache
/// must: about what a frequency rule can reach on a routing with no pattern in time, which
/// Belady's MIN exceeds by knowing each next use.
fn best_fixed_set(keys: &[Key], slots: usize) -> f64 {
    let slots = slots.saturating_sub(1);
    let mut counts = std::collections::HashMap::<Key, u64>::new();
    for k in keys {
        *counts.entry(*k).or_default() += 1;
    }
    let mut c: Vec<u64> = counts.into_values().collect();
    c.sort_unstable_by(|a, b| b.cmp(a));
    let top = &c[..slots.min(c.len())];
    (top.iter().sum::<u64>() - top.len() as u64) as f64 / keys.len().max(1) as f64
}

/// Demand-only hit rates, per cache size.
fn demand(t: &ReplayTrace) -> Vec<Row> {
    let keys = t.keys();
    (10..=90)
        .step_by(10)
        .map(|pct| {
            let n = slots(t, pct);
            let rate = |k: PolicyKind| replay(&keys, t.n_layers, n, k.build().as_ref()).hit_rate();
            Row {
                pct,
                default: rate(PolicyKind::Adaptive),
                best_old: OLD.iter().map(|&k| rate(k)).fold(0.0, f64::max),
                optimum: belady(&keys, n).hit_rate(),
            }
        })
        .collect()
}

/// Served rates with the trace's preloads, per cache size; the optimum evicts with the
/// future known ([`FutureMin`]).
fn with_preloads(t: &ReplayTrace) -> Vec<Row> {
    let steps = t.steps();
    (10..=90)
        .step_by(10)
        .map(|pct| {
            let n = slots(t, pct);
            let rate = |p: &dyn EvictionPolicy| {
                replay_with_preloads(&steps, t.n_layers, n, p).served_rate()
            };
            Row {
                pct,
                default: rate(PolicyKind::Adaptive.build().as_ref()),
                best_old: OLD
                    .iter()
                    .map(|k| rate(k.build().as_ref()))
                    .fold(0.0, f64::max),
                optimum: rate(&FutureMin::new(&steps, t.n_layers)),
            }
        })
        .collect()
}

/// [`Adaptive`](edgemoe::stream::cache::Adaptive) without [`EvictionPolicy::preloaded`]: how
/// a cache that does not report predictions runs it.
struct Untold(edgemoe::stream::cache::Adaptive);

impl EvictionPolicy for Untold {
    fn name(&self) -> &'static str {
        "adaptive-untold"
    }
    fn keep_score(&self, key: Key, info: &AccessInfo, cx: &PolicyContext) -> f64 {
        self.0.keep_score(key, info, cx)
    }
}

/// Served rates with preloads of [`Untold`], per cache size.
fn untold_of_preloads(t: &ReplayTrace) -> Vec<f64> {
    let steps = t.steps();
    (10..=90)
        .step_by(10)
        .map(|pct| {
            let p = Untold(Default::default());
            replay_with_preloads(&steps, t.n_layers, slots(t, pct), &p).served_rate()
        })
        .collect()
}

#[test]
#[ignore = "prints the table; run with --ignored --nocapture"]
fn print_table() {
    let trace = cyclic(200, 16, 2);
    println!("cyclic scan, 16 layers x 2 experts: slots, lru, adaptive, belady");
    for slots in [4, 8, 16, 23, 31] {
        let rate = |k: PolicyKind| replay(&trace, 16, slots, k.build().as_ref()).hit_rate();
        println!(
            "{slots:>3} {:.3} {:.3} {:.3}",
            rate(PolicyKind::Lru),
            rate(PolicyKind::Adaptive),
            belady(&trace, slots).hit_rate()
        );
    }
    // Issue 21's case: 23 slots of a 16 x 8 model.
    let t = load("random-1024-readme.trace");
    let (keys, steps) = (t.keys(), t.steps());
    println!("\n23 slots of random-1024-readme: policy, demand hit rate, served with preloads");
    for k in PolicyKind::ALL {
        let d = replay(&keys, 16, 23, k.build().as_ref()).hit_rate();
        let p = replay_with_preloads(&steps, 16, 23, k.build().as_ref()).served_rate();
        println!("{:>9} {d:.3} {p:.3}", k.build().name());
    }
    let p = replay_with_preloads(&steps, 16, 23, &FutureMin::new(&steps, 16)).served_rate();
    println!("   belady {:.3} {p:.3}", belady(&keys, 23).hit_rate());
    for name in TRACES {
        let t = load(name);
        let blind = untold_of_preloads(&t);
        for (what, rows) in [("demand", demand(&t)), ("preloads", with_preloads(&t))] {
            println!("\n{name}, {what}: size, adaptive, best older, optimum, adaptive/optimum");
            for r in rows {
                let note = if what == "preloads" {
                    format!(" (not told of preloads: {:.3})", blind[r.pct / 10 - 1])
                } else {
                    let fixed = best_fixed_set(&t.keys(), slots(&t, r.pct));
                    format!(" (best fixed set in hindsight: {fixed:.3})")
                };
                println!(
                    "{:>3}% {:.3} {:.3} {:.3} {:.3}{note}",
                    r.pct,
                    r.default,
                    r.best_old,
                    r.optimum,
                    r.default / r.optimum
                );
            }
        }
    }
}

/// Measured `adaptive / Belady` demand-only ratios, 10%..90%, per trace, rounded down to two
/// places: a regression floor (online eviction cannot see which experts the next token will
/// use; on these near-independent routings even the best fixed set, chosen with the whole
/// trace known, stays below 0.9x Belady up to 30-60% of the experts).
const DEMAND_FLOOR: [(&str, [f64; 9]); 4] = [
    (
        "demo.trace",
        [0.49, 0.53, 0.58, 0.66, 0.75, 0.81, 0.86, 0.90, 0.95],
    ),
    (
        "demo-readme.trace",
        [0.55, 0.62, 0.70, 0.75, 0.82, 0.87, 0.91, 0.94, 0.97],
    ),
    (
        "random-16x8.trace",
        [0.87, 0.83, 0.87, 0.91, 0.95, 0.97, 0.98, 0.99, 1.00],
    ),
    (
        "random-1024-readme.trace",
        [0.85, 0.82, 0.87, 0.91, 0.95, 0.97, 0.99, 1.00, 1.00],
    ),
];

#[test]
fn demand_hit_rate_holds_its_floor_against_belady_and_the_older_policies() {
    for (name, floor) in DEMAND_FLOOR {
        let t = load(name);
        for (r, &f) in demand(&t).iter().zip(&floor) {
            // Within 7% of the best fixed set chosen in hindsight (measured: 6.5% below it on
            // the demo trace at 30%, above it from 80%).
            let fixed = best_fixed_set(&t.keys(), slots(&t, r.pct));
            assert!(r.default >= 0.93 * fixed, "{name} {}%: {fixed:.3}", r.pct);
            let ratio = r.default / r.optimum;
            assert!(ratio >= f - 0.005, "{name} {}%: {ratio:.3} < {f}", r.pct);
            assert!(ratio <= 1.0 + 1e-9, "{name} {}%: beats Belady", r.pct);
            // Never more than 1.5% below the best older policy (LFU at worst, 1.1%).
            assert!(
                r.default >= r.best_old * 0.985,
                "{name} {}%: {:.3} vs {:.3}",
                r.pct,
                r.default,
                r.best_old
            );
        }
    }
}

#[test]
fn with_preloads_it_keeps_up_with_the_best_older_policy() {
    for name in TRACES {
        for r in with_preloads(&load(name)) {
            // Measured: at worst 0.8% below the best older policy (random 16x8 at 20%,
            // demo at 10%), up to 10% above it (demo, 40-60%).
            assert!(
                r.default >= r.best_old * 0.985,
                "{name} {}%: {:.3} vs {:.3}",
                r.pct,
                r.default,
                r.best_old
            );
        }
    }
}

/// `tokens` tokens over `n_layers` layers, each using experts `0..k` of every layer: the
/// cyclic scan where a cache smaller than `n_layers * k` thrashes under LRU.
fn cyclic(tokens: usize, n_layers: usize, k: usize) -> Vec<Key> {
    (0..tokens)
        .flat_map(|_| (0..n_layers).flat_map(move |l| (0..k).map(move |e| (l, e))))
        .collect()
}

#[test]
fn a_cyclic_layer_scan_keeps_a_fixed_subset_where_lru_thrashes() {
    let (n_layers, k) = (16, 2);
    let trace = cyclic(200, n_layers, k);
    for slots in [4, 8, 16, 23, 31] {
        let opt = belady(&trace, slots).hit_rate();
        let lru = replay(&trace, n_layers, slots, PolicyKind::Lru.build().as_ref());
        assert_eq!(lru.hits, 0, "{slots} slots");
        let p = PolicyKind::Adaptive.build();
        let got = replay(&trace, n_layers, slots, p.as_ref()).hit_rate();
        assert!(
            got >= 0.9 * opt,
            "{slots} slots: {got:.3} vs Belady {opt:.3}"
        );
    }
}
