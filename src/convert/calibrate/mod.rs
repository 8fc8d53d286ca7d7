//! `edgemoe calibrate`: expert-wise bitwidth adaptation (EdgeMoE's first technique).
//!
//! 1. Candidate types that fit the expert rows are kept (K-quants need rows of 256k
//!    elements); the baseline (default q8_0) is the dearest (`candidates.rs`).
//! 2. Every expert is encoded at every candidate, in memory ([`trial`]).
//! 3. Sensitivity, EdgeMoE's way: one expert alone at a cheaper type, all others at the
//!    baseline; the mean KL(baseline || trial) on the calibration text. A rarely routed expert
//!    shows little divergence, so routing frequency is part of the measure. A cheap proxy
//!    (routing frequency x relative weight error) is reported with its rank correlation
//!    (`sensitivity.rs`).
//! 4. Search ([`search`]): moves ordered by bytes saved (or expected bytes read per token) per
//!    unit of sensitivity; the number of moves binary-searched so that the held-out perplexity
//!    (or KL against the baseline) stays within the tolerance (`heldout.rs`).
//! 5. Report (`report.rs`): the measured points as markdown.

#![forbid(unsafe_code)]

mod candidates;
mod heldout;
mod report;
pub mod search;
mod sensitivity;
pub mod trial;

use std::sync::Arc;

use serde::Serialize;

use super::expert_types::ExpertTypes;
use super::progress::Stage;
use super::{ProgressFn, ProgressUnit};
use crate::engine::{Model, ModelConfig};
use crate::tensor::GgmlType;
use crate::Result;
use heldout::HeldOut;
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

/// Starts reporting stage `what` of `len` items.
fn stage<'a>(opts: &'a CalibrateOptions, len: usize, what: &'a str) -> Stage<'a> {
    Stage::start(
        opts.progress.as_ref(),
        what,
        ProgressUnit::Items,
        len as u64,
    )
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
    let n = c.n_layers * c.n_experts;
    let (types, notes) = candidates::applicable_types(model, opts)?;
    let variants = encode_variants(model, &types, opts)?;
    let trial = TrialExperts::new(variants.clone());
    let trial_model = trial.model(model)?;
    let frequency = sensitivity::routing_frequency(&trial_model, calibration, opts.ctx)?;
    let sensitivity = sensitivity::measure(&trial, &trial_model, calibration, types.len(), opts)?;
    let proxy_spearman = sensitivity::proxy_spearman(&sensitivity, &frequency, &variants);

    // Greedy order of moves, then held-out verification.
    let gain = gains(&variants, &frequency, opts.objective);
    let moves = search::greedy_order(&gain, &sensitivity);
    let held = HeldOut::new(&trial, &trial_model, heldout, &variants, &frequency, opts)?;
    let baseline = held.measure(format!("uniform {}", types[0]), &vec![0; n])?;
    let uniform = held.uniform(&baseline, opts)?;
    let note = calibration_note(
        calibration.len(),
        heldout.len(),
        moves.len(),
        types[0],
        opts,
    );
    let found = held.search(&moves, &baseline, &uniform, &note, opts)?;
    Ok(Calibration {
        types: types.iter().map(|t| t.name().to_string()).collect(),
        notes,
        tolerance: opts.tolerance.to_string(),
        requested: opts.tolerance,
        margin: opts.margin,
        objective: opts.objective,
        calibration_tokens: calibration.len(),
        heldout_tokens: heldout.len(),
        experts: expert_figures(c, &frequency, sensitivity, &variants),
        proxy_spearman,
        baseline,
        uniform,
        chosen: found.adapted_types[0].clone(),
        adapted: found.adapted,
        adapted_types: found.adapted_types,
        kl_matched: found.kl_matched,
        kl_matched_types: found.kl_matched_types,
        search_trace: found.trace.into_iter().collect(),
    })
}

/// Every expert of `model` encoded at each of `types`, in memory.
fn encode_variants(
    model: &Model,
    types: &[GgmlType],
    opts: &CalibrateOptions,
) -> Result<Arc<ExpertVariants>> {
    let c = &model.config;
    let mut b = stage(opts, c.n_layers * c.n_experts, "encoding experts");
    let variants = Arc::new(ExpertVariants::build(model, types, &mut |d, t| {
        b.set(d as u64, t as u64)
    })?);
    b.finish();
    Ok(variants)
}

/// `gain[expert][type]`: what serving the expert at the type saves against the baseline, in
/// bytes or (objective `reads`) in expected bytes read per token.
fn gains(variants: &ExpertVariants, frequency: &[f64], objective: Objective) -> Vec<Vec<f64>> {
    (0..frequency.len())
        .map(|e| {
            let weight = match objective {
                Objective::Bytes => 1.0,
                Objective::Reads => frequency[e],
            };
            (0..variants.types.len())
                .map(|t| weight * (variants.bytes(e, 0) as f64 - variants.bytes(e, t) as f64))
                .collect()
        })
        .collect()
}

/// How the tables were calibrated (stored with each table).
fn calibration_note(
    calibration_tokens: usize,
    heldout_tokens: usize,
    moves: usize,
    baseline: GgmlType,
    opts: &CalibrateOptions,
) -> String {
    format!(
        "EdgeMoE sensitivity: KL(baseline || one expert alone at a cheaper type), {} calibration tokens; greedy by {} saved per unit of sensitivity; {} moves binary-searched on {} held-out tokens; baseline {}",
        calibration_tokens,
        match opts.objective {
            Objective::Bytes => "expert bytes",
            Objective::Reads => "expected bytes read per token",
        },
        moves,
        heldout_tokens,
        baseline
    )
}

/// Each expert's figures, experts layer-major.
fn expert_figures(
    c: &ModelConfig,
    frequency: &[f64],
    sensitivity: Vec<Vec<f64>>,
    variants: &ExpertVariants,
) -> Vec<ExpertFigures> {
    sensitivity
        .into_iter()
        .enumerate()
        .map(|(e, sensitivity)| ExpertFigures {
            layer: e / c.n_experts,
            expert: e % c.n_experts,
            frequency: frequency[e],
            sensitivity,
            weight_error: variants.error[e].clone(),
            bytes: (0..variants.types.len())
                .map(|t| variants.bytes(e, t))
                .collect(),
        })
        .collect()
}
