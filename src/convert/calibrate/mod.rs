//! `edgemoe calibrate`: expert-wise bitwidth adaptation (EdgeMoE's first technique).
//!
//! 1. Candidate types that fit the expert rows are kept (K-quants need rows of 256k
//!    elements); the baseline (default q8_0) is the dearest.
//! 2. Every expert is encoded at every candidate, in memory ([`trial`]).
//! 3. Sensitivity, EdgeMoE's way: one expert alone at a cheaper type, all others at the
//!    baseline; the mean KL(baseline || trial) on the calibration text. A rarely routed expert
//!    shows little divergence, so routing frequency is part of the measure. A cheap proxy
//!    (routing frequency x relative weight error) is reported with its rank correlation.
//! 4. Search ([`search`]): moves ordered by bytes saved (or expected bytes read per token) per
//!    unit of sensitivity; the number of moves binary-searched so that the held-out perplexity
//!    (or KL against the baseline) stays within the tolerance.

pub mod search;
pub mod trial;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::expert_types::ExpertTypes;
use super::progress::Stage;
use super::{ProgressFn, ProgressUnit};
use crate::engine::divergence::{Divergence, ReferenceDistributions};
use crate::engine::{Model, Routing, RoutingObserver, Session};
use crate::tensor::GgmlType;
use crate::{Error, Result};
use trial::{ExpertVariants, TrialExperts};

/// The candidate types tried by default.
pub const DEFAULT_CANDIDATES: [GgmlType; 6] = [
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8_0,
];

/// The 32-element block types, used instead when no K-quant fits the expert rows.
pub const BLOCK32_CANDIDATES: [GgmlType; 5] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
];

/// How much quality the user gives up, measured on held-out text against the baseline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tolerance {
    /// Perplexity at most `(1 + x)` times the baseline's.
    PplIncrease(f64),
    /// Mean KL(baseline || model) at most this many nats per token.
    Kl(f64),
}

impl std::fmt::Display for Tolerance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tolerance::PplIncrease(x) => write!(f, "held-out perplexity within +{}%", x * 100.0),
            Tolerance::Kl(x) => write!(f, "held-out KL(baseline || model) <= {x} nats/token"),
        }
    }
}

/// What the search minimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Objective {
    /// Total expert bytes.
    Bytes,
    /// Expected expert bytes read per token: sum of routing frequency x bytes.
    Reads,
}

/// Settings of a calibration.
#[derive(Clone, Debug)]
pub struct CalibrateOptions {
    /// Types to try; those that do not fit the expert rows are dropped (with a note).
    pub candidates: Vec<GgmlType>,
    /// The type every expert starts at, and the quality reference.
    pub baseline: GgmlType,
    pub tolerance: Tolerance,
    /// More perplexity-increase tolerances to report (the Pareto curve).
    pub sweep: Vec<f64>,
    pub objective: Objective,
    /// Tokens per evaluation window.
    pub ctx: usize,
    /// Standard errors of the held-out change kept below the tolerance (0: none). The search
    /// picks the cheapest of many assignments on one held-out text, so its choice tends to sit
    /// just inside the tolerance there and just outside on other text; a margin of one or two
    /// standard errors of the paired per-token NLL change (or of the KL) absorbs that.
    pub margin: f64,
    /// Receives progress reports, one stage per step (encoding experts, baselines,
    /// sensitivity, uniform types, search), counted in items. `None` (the default): silent.
    pub progress: Option<ProgressFn>,
}

impl Default for CalibrateOptions {
    fn default() -> Self {
        CalibrateOptions {
            candidates: DEFAULT_CANDIDATES.to_vec(),
            baseline: GgmlType::Q8_0,
            tolerance: Tolerance::PplIncrease(0.01),
            sweep: vec![0.0025, 0.005, 0.02, 0.05],
            objective: Objective::Bytes,
            ctx: 256,
            margin: 0.0,
            progress: None,
        }
    }
}

/// A measured assignment.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub label: String,
    pub expert_bytes: u64,
    /// Expected expert bytes read per token (routing frequency on the calibration text).
    pub reads_per_token: f64,
    pub perplexity: f64,
    pub perplexity_std_error: f64,
    /// Mean KL(baseline || this) on the held-out text.
    pub kl: f64,
    pub kl_std_error: f64,
    /// Standard error of the mean per-token NLL change against the baseline (paired).
    pub nll_change_std_error: f64,
    pub top1_agreement: f64,
}

/// One expert's calibration figures.
#[derive(Clone, Debug, Serialize)]
pub struct ExpertFigures {
    pub layer: usize,
    pub expert: usize,
    /// Share of calibration tokens routed to it.
    pub frequency: f64,
    /// Per candidate type: mean KL(baseline || expert alone at that type), calibration text.
    pub sensitivity: Vec<f64>,
    /// Per candidate type: squared weight error / squared weight norm.
    pub weight_error: Vec<f64>,
    pub bytes: Vec<u64>,
}

/// What a calibration found.
#[derive(Clone, Debug, Serialize)]
pub struct Calibration {
    /// Candidate types used, dearest (the baseline) first.
    pub types: Vec<String>,
    /// Why requested types were dropped or replaced.
    pub notes: Vec<String>,
    pub tolerance: String,
    /// The requested tolerance itself (`tolerance` is its description).
    #[serde(skip)]
    pub requested: Tolerance,
    /// Standard errors kept below the tolerance (see [`CalibrateOptions::margin`]).
    pub margin: f64,
    pub objective: Objective,
    pub calibration_tokens: usize,
    pub heldout_tokens: usize,
    pub experts: Vec<ExpertFigures>,
    /// Rank correlation, over experts, of the proxy (frequency x weight error) with the
    /// measured sensitivity at the cheapest candidate.
    pub proxy_spearman: f64,
    pub baseline: Point,
    /// Every expert at one type.
    pub uniform: Vec<Point>,
    /// The search result at each tolerance (`label` says which), the chosen one first.
    pub adapted: Vec<Point>,
    /// Pairs (uniform type, adapted assignment with at most its held-out KL): the bytes
    /// adaptation saves at equal quality.
    pub kl_matched: Vec<(Point, Point)>,
    /// The assignments of `kl_matched`, in the same order.
    #[serde(skip)]
    pub kl_matched_types: Vec<ExpertTypes>,
    /// Every held-out evaluation of the search: (moves, point).
    pub search_trace: Vec<(usize, Point)>,
    /// The assignment at the requested tolerance.
    #[serde(skip)]
    pub chosen: ExpertTypes,
    /// The assignments of `adapted`, in the same order.
    #[serde(skip)]
    pub adapted_types: Vec<ExpertTypes>,
}

/// Counts how often each expert is routed to.
#[derive(Clone)]
struct RouteCounter {
    n_experts: usize,
    counts: Arc<Mutex<Vec<u64>>>,
}

impl RoutingObserver for RouteCounter {
    fn observe(&mut self, layer: usize, _position: usize, routing: &Routing) {
        if let Ok(mut c) = self.counts.lock() {
            for &e in &routing.experts {
                if let Some(x) = c.get_mut(layer * self.n_experts + e) {
                    *x += 1;
                }
            }
        }
    }
}

/// Share of tokens of `ids` routed to each expert (layer-major), windows of `ctx`.
fn routing_frequency(model: &Arc<Model>, ids: &[u32], ctx: usize) -> Result<Vec<f64>> {
    let c = &model.config;
    let counter = RouteCounter {
        n_experts: c.n_experts,
        counts: Arc::new(Mutex::new(vec![0; c.n_layers * c.n_experts])),
    };
    let mut session = Session::new(model.clone(), Some(ctx))?;
    session.set_observer(Some(Box::new(counter.clone())));
    let mut tokens = 0usize;
    for chunk in ids.chunks(ctx) {
        session.reset();
        session.eval(chunk, false)?;
        tokens += chunk.len();
    }
    session.set_observer(None);
    let counts = counter
        .counts
        .lock()
        .map_err(|_| Error::InvalidArgument("routing counter poisoned".into()))?
        .clone();
    Ok(counts
        .iter()
        .map(|&n| n as f64 / tokens.max(1) as f64)
        .collect())
}

/// The candidate types that fit every expert row of `model`, dearest first, with notes on
/// what was dropped. The baseline must fit.
fn applicable_types(
    model: &Model,
    opts: &CalibrateOptions,
) -> Result<(Vec<GgmlType>, Vec<String>)> {
    let c = &model.config;
    let rows = [c.hidden, c.expert_ffn];
    let fits = |t: GgmlType| rows.iter().all(|&r| r % t.block_len() == 0);
    if !fits(opts.baseline) {
        return Err(Error::InvalidArgument(format!(
            "the baseline {} does not fit expert rows of {} and {} elements",
            opts.baseline, c.hidden, c.expert_ffn
        )));
    }
    let bytes_per_elem = |t: GgmlType| t.block_bytes() as f64 / t.block_len() as f64;
    let base = bytes_per_elem(opts.baseline);
    let mut notes = Vec::new();
    let select = |list: &[GgmlType], notes: &mut Vec<String>| {
        let mut out = vec![opts.baseline];
        for &t in list {
            if out.contains(&t) {
                continue;
            }
            if !fits(t) {
                notes.push(format!(
                    "{t} skipped: expert rows of {} and {} elements are not whole {t} blocks of {}",
                    c.hidden,
                    c.expert_ffn,
                    t.block_len()
                ));
            } else if bytes_per_elem(t) >= base {
                notes.push(format!(
                    "{t} skipped: not smaller than the baseline {}",
                    opts.baseline
                ));
            } else {
                out.push(t);
            }
        }
        out.sort_by(|a, b| bytes_per_elem(*b).total_cmp(&bytes_per_elem(*a)));
        out
    };
    let mut types = select(&opts.candidates, &mut notes);
    if types.len() < 2 && opts.candidates == DEFAULT_CANDIDATES {
        notes.push(format!(
            "no K-quant fits; using the 32-element block types {} instead",
            BLOCK32_CANDIDATES.map(|t| t.name()).join(", ")
        ));
        types = select(&BLOCK32_CANDIDATES, &mut Vec::new());
    }
    if types.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "no candidate type below the baseline fits this model ({})",
            notes.join("; ")
        )));
    }
    Ok((types, notes))
}

/// Starts reporting stage `what` of `len` items.
fn stage<'a>(opts: &'a CalibrateOptions, len: usize, what: &'a str) -> Stage<'a> {
    Stage::start(
        opts.progress.as_ref(),
        what,
        ProgressUnit::Items,
        len as u64,
    )
}

/// Evaluates assignments on the held-out text against the baseline.
struct HeldOut<'a> {
    trial: &'a Arc<TrialExperts>,
    model: &'a Arc<Model>,
    reference: ReferenceDistributions,
    variants: &'a ExpertVariants,
    frequency: &'a [f64],
}

impl HeldOut<'_> {
    fn measure(&self, label: String, assignment: &[usize]) -> Result<Point> {
        self.trial.set(assignment)?;
        let d: Divergence = self.reference.compare(self.model, &mut |_, _| {})?;
        let mut bytes = 0u64;
        let mut reads = 0f64;
        for (e, &t) in assignment.iter().enumerate() {
            let b = self.variants.bytes(e, t);
            bytes += b;
            reads += self.frequency[e] * b as f64;
        }
        Ok(Point {
            label,
            expert_bytes: bytes,
            reads_per_token: reads,
            perplexity: d.model.perplexity,
            perplexity_std_error: d.model.perplexity_std_error,
            kl: d.kl,
            kl_std_error: d.kl_std_error,
            nll_change_std_error: d.nll_change_std_error,
            top1_agreement: d.top1_agreement,
        })
    }
}

/// Whether `p` keeps to `t`, with `margin` standard errors of the measured change to spare
/// (0: the measured change itself).
fn within(t: Tolerance, p: &Point, base: &Point, margin: f64) -> bool {
    if margin == 0.0 {
        return match t {
            Tolerance::PplIncrease(x) => p.perplexity <= base.perplexity * (1.0 + x),
            Tolerance::Kl(x) => p.kl <= x,
        };
    }
    match t {
        Tolerance::PplIncrease(x) => {
            (p.perplexity / base.perplexity).ln() + margin * p.nll_change_std_error
                <= (1.0 + x).ln()
        }
        Tolerance::Kl(x) => p.kl + margin * p.kl_std_error <= x,
    }
}

fn to_table(
    variants: &ExpertVariants,
    assignment: &[usize],
    tolerance: String,
    calibration: String,
) -> ExpertTypes {
    ExpertTypes {
        layers: assignment
            .chunks(variants.n_experts)
            .map(|l| l.iter().map(|&t| variants.types[t]).collect())
            .collect(),
        tolerance: Some(tolerance),
        calibration: Some(calibration),
    }
}

/// Calibrates `model` (resident, float weights best): sensitivities on `calibration` tokens,
/// the search verified on `heldout` tokens.
pub fn calibrate(
    model: &Arc<Model>,
    calibration: &[u32],
    heldout: &[u32],
    opts: &CalibrateOptions,
) -> Result<Calibration> {
    let c = &model.config;
    let ctx = opts.ctx;
    let (types, notes) = applicable_types(model, opts)?;
    let n = c.n_layers * c.n_experts;
    let mut b = stage(opts, n, "encoding experts");
    let variants = Arc::new(ExpertVariants::build(model, &types, &mut |d, t| {
        b.set(d as u64, t as u64)
    })?);
    b.finish();
    let trial = TrialExperts::new(variants.clone());
    let trial_model = trial.model(model)?;
    let frequency = routing_frequency(&trial_model, calibration, ctx)?;

    // Sensitivity: each expert alone at each cheaper type.
    let mut b = stage(opts, 1, "baseline on calibration text");
    let calib_ref =
        ReferenceDistributions::compute(&trial_model, calibration, ctx, ctx, &mut |d, t| {
            b.set(d as u64, t as u64)
        })?;
    b.finish();
    let mut b = stage(opts, n * (types.len() - 1), "expert sensitivity");
    let mut sensitivity = vec![vec![0f64; types.len()]; n];
    let mut assignment = vec![0usize; n];
    for (e, s) in sensitivity.iter_mut().enumerate() {
        for (t, st) in s.iter_mut().enumerate().skip(1) {
            assignment[e] = t;
            trial.set(&assignment)?;
            *st = calib_ref.compare(&trial_model, &mut |_, _| {})?.kl;
            b.advance(1);
        }
        assignment[e] = 0;
    }
    b.finish();
    let cheapest = types.len() - 1;
    let measured: Vec<f64> = sensitivity.iter().map(|s| s[cheapest]).collect();
    let proxy: Vec<f64> = (0..n)
        .map(|e| frequency[e] * variants.error[e][cheapest])
        .collect();
    let proxy_spearman = search::spearman(&proxy, &measured);

    // Greedy order of moves, then held-out verification.
    let gain: Vec<Vec<f64>> = (0..n)
        .map(|e| {
            let weight = match opts.objective {
                Objective::Bytes => 1.0,
                Objective::Reads => frequency[e],
            };
            (0..types.len())
                .map(|t| weight * (variants.bytes(e, 0) as f64 - variants.bytes(e, t) as f64))
                .collect()
        })
        .collect();
    let moves = search::greedy_order(&gain, &sensitivity);
    let mut b = stage(opts, 1, "baseline on held-out text");
    trial.set(&vec![0; n])?;
    let heldout_ref =
        ReferenceDistributions::compute(&trial_model, heldout, ctx, ctx, &mut |d, t| {
            b.set(d as u64, t as u64)
        })?;
    b.finish();
    let held = HeldOut {
        trial: &trial,
        model: &trial_model,
        reference: heldout_ref,
        variants: &variants,
        frequency: &frequency,
    };
    let baseline = held.measure(format!("uniform {}", types[0]), &vec![0; n])?;
    let mut b = stage(opts, types.len() - 1, "uniform types");
    let mut uniform = vec![baseline.clone()];
    for (t, ty) in types.iter().enumerate().skip(1) {
        uniform.push(held.measure(format!("uniform {ty}"), &vec![t; n])?);
        b.advance(1);
    }
    b.finish();

    let mut memo: BTreeMap<usize, Point> = BTreeMap::new();
    memo.insert(0, baseline.clone());
    let mut tolerances = vec![opts.tolerance];
    tolerances.extend(opts.sweep.iter().map(|&x| Tolerance::PplIncrease(x)));
    // Same held-out KL as each cheaper uniform type: the bytes adaptation saves at equal quality.
    let n_requested = tolerances.len();
    tolerances.extend(uniform.iter().skip(1).map(|p| Tolerance::Kl(p.kl)));
    let calib_note = format!(
        "EdgeMoE sensitivity: KL(baseline || one expert alone at a cheaper type), {} calibration tokens; greedy by {} saved per unit of sensitivity; {} moves binary-searched on {} held-out tokens; baseline {}",
        calibration.len(),
        match opts.objective {
            Objective::Bytes => "expert bytes",
            Objective::Reads => "expected bytes read per token",
        },
        moves.len(),
        heldout.len(),
        types[0]
    );
    let mut b = stage(opts, tolerances.len(), "search (held-out checks)");
    let mut adapted = Vec::new();
    let mut adapted_types = Vec::new();
    let mut kl_matched = Vec::new();
    let mut kl_matched_types = Vec::new();
    for (i, tol) in tolerances.into_iter().enumerate() {
        // The equal-KL comparisons match a measured KL exactly: no margin there.
        let margin = if i < n_requested { opts.margin } else { 0.0 };
        let k = search::largest_ok(moves.len(), &mut |k| {
            if let std::collections::btree_map::Entry::Vacant(slot) = memo.entry(k) {
                let a = search::assignment_after(n, &moves, k);
                slot.insert(held.measure(format!("{k} moves"), &a)?);
            }
            Ok(within(tol, &memo[&k], &baseline, margin))
        })?;
        let mut p = memo[&k].clone();
        b.advance(1);
        if i >= n_requested {
            let u = &uniform[i - n_requested + 1];
            p.label = format!("adapted, KL <= {}", u.label);
            let a = search::assignment_after(n, &moves, k);
            kl_matched_types.push(to_table(&variants, &a, tol.to_string(), calib_note.clone()));
            kl_matched.push((u.clone(), p));
            continue;
        }
        p.label = format!("adapted, {tol}");
        let a = search::assignment_after(n, &moves, k);
        adapted_types.push(to_table(&variants, &a, tol.to_string(), calib_note.clone()));
        adapted.push(p);
    }
    b.finish();
    let mut experts = Vec::with_capacity(n);
    for e in 0..n {
        experts.push(ExpertFigures {
            layer: e / c.n_experts,
            expert: e % c.n_experts,
            frequency: frequency[e],
            sensitivity: sensitivity[e].clone(),
            weight_error: variants.error[e].clone(),
            bytes: (0..types.len()).map(|t| variants.bytes(e, t)).collect(),
        });
    }
    Ok(Calibration {
        types: types.iter().map(|t| t.name().to_string()).collect(),
        notes,
        tolerance: opts.tolerance.to_string(),
        requested: opts.tolerance,
        margin: opts.margin,
        objective: opts.objective,
        calibration_tokens: calibration.len(),
        heldout_tokens: heldout.len(),
        experts,
        proxy_spearman,
        baseline,
        uniform,
        chosen: adapted_types[0].clone(),
        adapted,
        adapted_types,
        kl_matched,
        kl_matched_types,
        search_trace: memo.into_iter().collect(),
    })
}

impl Calibration {
    /// The uniform type with the fewest bytes within tolerance `t` of the baseline.
    pub fn best_uniform_within(&self, t: Tolerance) -> Option<&Point> {
        self.uniform
            .iter()
            .filter(|p| within(t, p, &self.baseline, self.margin))
            .min_by_key(|p| p.expert_bytes)
    }

    /// A markdown report: candidates, uniform and adapted points, histogram per layer.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let base = &self.baseline;
        s.push_str(&format!(
            "Candidate types: {} (baseline {}). Calibration {} tokens, held-out {} tokens. Tolerance: {}{}.\n\n",
            self.types.join(", "),
            self.types[0],
            self.calibration_tokens,
            self.heldout_tokens,
            self.tolerance,
            if self.margin > 0.0 {
                format!(
                    ", with {} standard errors of the measured change to spare (uniform types too)",
                    self.margin
                )
            } else {
                String::new()
            }
        ));
        for n in &self.notes {
            s.push_str(&format!("- {n}\n"));
        }
        s.push_str(&format!(
            "\nProxy (routing frequency x relative weight error) vs measured sensitivity at {}: Spearman rank correlation {:.3} over {} experts.\n\n",
            self.types.last().map(String::as_str).unwrap_or("?"),
            self.proxy_spearman,
            self.experts.len()
        ));
        s.push_str("| assignment | expert bytes | vs baseline | bytes read / token | held-out ppl | Δppl | KL vs baseline | top-1 |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for p in self.uniform.iter().chain(&self.adapted) {
            s.push_str(&format!(
                "| {} | {} | {:.3}x | {:.0} | {:.3} ± {:.3} | {:+.2}% | {:.5} | {:.2}% |\n",
                p.label,
                p.expert_bytes,
                p.expert_bytes as f64 / base.expert_bytes as f64,
                p.reads_per_token,
                p.perplexity,
                p.perplexity_std_error,
                100.0 * (p.perplexity / base.perplexity - 1.0),
                p.kl,
                100.0 * p.top1_agreement
            ));
        }
        if let (Some(best), Some(chosen)) = (
            self.best_uniform_within(self.requested),
            self.adapted.first(),
        ) {
            s.push_str(&format!(
                "\nAt the requested tolerance the adapted experts take {:.3}x the bytes of the best uniform type within it ({}).\n",
                chosen.expert_bytes as f64 / best.expert_bytes as f64,
                best.label
            ));
        }
        s.push_str("\nAt equal held-out KL (vs the baseline) to each uniform type:\n\n| uniform | bytes | KL | ppl | adapted bytes | KL | ppl | adapted / uniform bytes |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (u, a) in &self.kl_matched {
            s.push_str(&format!(
                "| {} | {} | {:.5} | {:.3} | {} | {:.5} | {:.3} | {:.3}x |\n",
                u.label,
                u.expert_bytes,
                u.kl,
                u.perplexity,
                a.expert_bytes,
                a.kl,
                a.perplexity,
                a.expert_bytes as f64 / u.expert_bytes as f64
            ));
        }
        s.push_str("\nTypes per layer (requested tolerance):\n\n| layer | ");
        s.push_str(&self.types.join(" | "));
        s.push_str(" |\n|---|");
        s.push_str(&"---:|".repeat(self.types.len()));
        s.push('\n');
        for (l, layer) in self.chosen.layers.iter().enumerate() {
            s.push_str(&format!("| {l} |"));
            for t in &self.types {
                let count = layer.iter().filter(|x| x.name() == t).count();
                s.push_str(&format!(" {count} |"));
            }
            s.push('\n');
        }
        s
    }
}
