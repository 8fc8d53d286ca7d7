//! Expert sensitivity, EdgeMoE's way: one expert alone at a cheaper type, all others at the
//! baseline, measured as the mean KL(baseline || trial) on the calibration text; with the
//! routing frequency of each expert and the cheap proxy (frequency x weight error).

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use super::search;
use super::trial::{ExpertVariants, TrialExperts};
use super::{stage, CalibrateOptions};
use crate::engine::divergence::ReferenceDistributions;
use crate::engine::{Model, Routing, RoutingObserver, Session};
use crate::{Error, Result};

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
pub(super) fn routing_frequency(model: &Arc<Model>, ids: &[u32], ctx: usize) -> Result<Vec<f64>> {
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

/// `[expert][type]`: mean KL(baseline || the expert alone at candidate `type`) on the
/// `calibration` tokens, every other expert at the baseline (0 at the baseline itself).
pub(super) fn measure(
    trial: &TrialExperts,
    model: &Arc<Model>,
    calibration: &[u32],
    n_types: usize,
    opts: &CalibrateOptions,
) -> Result<Vec<Vec<f64>>> {
    let (c, ctx) = (&model.config, opts.ctx);
    let n = c.n_layers * c.n_experts;
    let mut b = stage(opts, 1, "baseline on calibration text");
    let calib_ref = ReferenceDistributions::compute(model, calibration, ctx, ctx, &mut |d, t| {
        b.set(d as u64, t as u64)
    })?;
    b.finish();
    let mut b = stage(opts, n * (n_types - 1), "expert sensitivity");
    let mut sensitivity = vec![vec![0f64; n_types]; n];
    let mut assignment = vec![0usize; n];
    for (e, s) in sensitivity.iter_mut().enumerate() {
        for (t, st) in s.iter_mut().enumerate().skip(1) {
            assignment[e] = t;
            trial.set(&assignment)?;
            *st = calib_ref.compare(model, &mut |_, _| {})?.kl;
            b.advance(1);
        }
        assignment[e] = 0;
    }
    b.finish();
    Ok(sensitivity)
}

/// Rank correlation, over experts, of the proxy (routing frequency x relative weight error)
/// with the measured sensitivity at the cheapest candidate.
pub(super) fn proxy_spearman(
    sensitivity: &[Vec<f64>],
    frequency: &[f64],
    variants: &ExpertVariants,
) -> f64 {
    let cheapest = variants.types.len() - 1;
    let measured: Vec<f64> = sensitivity.iter().map(|s| s[cheapest]).collect();
    let proxy: Vec<f64> = (0..sensitivity.len())
        .map(|e| frequency[e] * variants.error[e][cheapest])
        .collect();
    search::spearman(&proxy, &measured)
}
