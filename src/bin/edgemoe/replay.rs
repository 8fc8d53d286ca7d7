//! `edgemoe replay`: cache policies scored against Belady's optimum on a recorded trace.

use std::path::PathBuf;

use clap::Args;
use edgemoe::stream::{PolicyKind, ReplayStats, ReplayStep};

use crate::trace::TraceFile;

#[derive(Args)]
pub struct ReplayArgs {
    /// A trace written by `edgemoe trace`.
    trace: PathBuf,
    /// Cache sizes in experts to score (comma-separated); default: 10%, 25%, 50% of all experts.
    #[arg(long, value_delimiter = ',')]
    slots: Vec<usize>,
}

pub fn run(a: ReplayArgs) -> edgemoe::Result<()> {
    let text = std::fs::read_to_string(&a.trace).map_err(|e| edgemoe::Error::io(&a.trace, e))?;
    let t: TraceFile = serde_json::from_str(&text)
        .map_err(|e| edgemoe::Error::invalid_file(&a.trace, format!("not a trace: {e}")))?;
    let keys = fetch_order(&t);
    let total = t.n_layers * t.n_experts;
    let slots = if a.slots.is_empty() {
        [10, 25, 50]
            .iter()
            .map(|p| (total * p / 100).max(t.n_experts_used))
            .collect()
    } else {
        a.slots.clone()
    };
    println!(
        "{} fetches over {} tokens; {} experts in all",
        keys.len(),
        t.tokens.len(),
        total
    );
    let table = Table::new();
    let beladys = table.demand(&keys, t.n_layers, &slots);
    let steps = replay_steps(&t);
    if steps.iter().any(|s| !s.predicted_next.is_empty()) {
        table.with_preloads(&t, &steps, &slots, &beladys);
        table.wasted_preloads(&steps, t.n_layers, &slots);
    }
    Ok(())
}

/// Fetch order as the forward pass makes it: layer by layer, experts in ascending order
/// within a layer (decode: one token at a time).
fn fetch_order(t: &TraceFile) -> Vec<(usize, usize)> {
    let mut keys = Vec::new();
    for token in &t.tokens {
        for (l, experts) in token.iter().enumerate() {
            let mut e = experts.clone();
            e.sort_unstable();
            e.dedup();
            keys.extend(e.into_iter().map(|x| (l, x)));
        }
    }
    keys
}

/// The printed tables: one column per online policy, then Belady's.
struct Table {
    names: Vec<&'static str>,
}

impl Table {
    fn new() -> Self {
        Table {
            names: PolicyKind::ALL.iter().map(|k| k.build().name()).collect(),
        }
    }

    fn header(&self, last: &str) -> String {
        let mut h = format!("{:>6}", "slots");
        for n in &self.names {
            h.push_str(&format!(" {n:>8}"));
        }
        h.push_str(&format!(" {:>8} {last:>12}", "belady"));
        h
    }

    fn row(n: usize, r: &[(&str, f64)], belady: f64) -> String {
        let mut line = format!("{n:>6}");
        for (_, v) in r {
            line.push_str(&format!(" {v:>8.3}"));
        }
        let best = r.iter().map(|x| x.1).fold(0.0, f64::max);
        line.push_str(&format!(" {belady:>8.3} {:>12.3}", best / belady.max(1e-9)));
        line
    }

    /// Demand-only hit rates; returns Belady's per cache size.
    fn demand(&self, keys: &[(usize, usize)], n_layers: usize, slots: &[usize]) -> Vec<f64> {
        println!("\ncache hit rate, demand reads only (what Belady's MIN is optimal for):");
        println!("{}", self.header("best/belady"));
        let mut beladys = Vec::new();
        for &n in slots {
            let r = edgemoe::stream::compare_policies(keys, n_layers, n);
            let (rates, belady) = split_belady(&r, ReplayStats::hit_rate);
            beladys.push(belady);
            println!("{}", Self::row(n, &rates, belady));
        }
        beladys
    }

    /// Fetches served from memory with the trace's predictions preloaded.
    fn with_preloads(&self, t: &TraceFile, steps: &[ReplayStep], slots: &[usize], beladys: &[f64]) {
        println!(
            "\nfetches served from memory (kept or preloaded) with the trace's `{}` predictions \
             preloaded as the engine does; Belady's column evicts with the future known \
             (the optimum for the same preloads), the last the demand-only optimum above:",
            t.predictor
        );
        println!("{} {:>12}", self.header("best/belady"), "demand MIN");
        for (&n, &demand_min) in slots.iter().zip(beladys) {
            let r = edgemoe::stream::compare_policies_with_preloads(steps, t.n_layers, n);
            let (rates, belady) = split_belady(&r, ReplayStats::served_rate);
            println!("{} {demand_min:>12.3}", Self::row(n, &rates, belady));
        }
    }

    /// Preloads evicted or passed over unused, per fetch.
    fn wasted_preloads(&self, steps: &[ReplayStep], n_layers: usize, slots: &[usize]) {
        println!("\npreloads wasted per fetch (evicted or passed over unused):");
        println!(
            "{:>6} {}",
            "slots",
            self.names
                .iter()
                .map(|n| format!("{n:>8}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for &n in slots {
            let r = edgemoe::stream::compare_policies_with_preloads(steps, n_layers, n);
            let w: Vec<String> = r
                .iter()
                .filter(|x| x.0 != "belady")
                .map(|x| {
                    format!(
                        "{:>8.3}",
                        x.1.wasted_preloads as f64 / x.1.accesses.max(1) as f64
                    )
                })
                .collect();
            println!("{n:>6} {}", w.join(" "));
        }
    }
}

/// The online policies' rates, and Belady's.
fn split_belady(
    r: &[(&'static str, ReplayStats)],
    rate: fn(&ReplayStats) -> f64,
) -> (Vec<(&'static str, f64)>, f64) {
    let belady = r
        .iter()
        .find(|x| x.0 == "belady")
        .map_or(0.0, |x| rate(&x.1));
    let rates = r
        .iter()
        .filter(|x| x.0 != "belady")
        .map(|x| (x.0, rate(&x.1)))
        .collect();
    (rates, belady)
}

/// The trace as the engine ran it, layer by layer, with its predictions.
fn replay_steps(t: &TraceFile) -> Vec<ReplayStep> {
    let mut steps = Vec::new();
    for (i, token) in t.tokens.iter().enumerate() {
        for (l, experts) in token.iter().enumerate() {
            let next = |lists: &Vec<Vec<Vec<usize>>>| {
                lists
                    .get(i)
                    .and_then(|tok| tok.get(l + 1))
                    .cloned()
                    .unwrap_or_default()
            };
            steps.push(ReplayStep {
                layer: l,
                used: experts.clone(),
                predicted_next: next(&t.predicted),
                refined_next: next(&t.refined),
            });
        }
    }
    steps
}
