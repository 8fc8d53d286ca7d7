//! The MoE step of a layer, in named steps after the router has run: which experts the batch
//! uses and at what precision, their reads requested at once, the experts run (those in
//! memory first), and their outputs combined in router order. The session runs the predictor
//! between the request and the experts, so preloads overlap this layer's compute.

use std::sync::atomic::AtomicBool;

use super::ffn::routed_expert;
use super::router::Routing;
use super::scratch::{grow, Scratch};
use crate::engine::config::ModelConfig;
use crate::expert::{ExpertSource, Precision, ReadKind};
use crate::tensor::ops;
use crate::Result;

/// What the MoE step reaches experts through.
pub(crate) struct Experts<'a> {
    pub config: &'a ModelConfig,
    pub source: &'a dyn ExpertSource,
    /// Lower precision on a miss: see `Model::low_precision_threshold`.
    pub low_precision_threshold: Option<f32>,
}

/// Fills `s.used` with each expert the batch's `n` tokens use once, chooses each one's
/// precision (`s.low`, `s.used_high`, `s.used_low`) and requests every read of layer `l` in
/// one submission, so the forward pass can compute the experts in memory while the rest
/// arrive.
pub(crate) fn request_experts(experts: &Experts<'_>, l: usize, n: usize, s: &mut Scratch) {
    s.used.clear();
    s.used
        .extend(s.routes[..n].iter().flat_map(|r| r.experts.iter().copied()));
    s.used.sort_unstable();
    s.used.dedup();
    experts.source.begin_layer(l);
    choose_precision(experts, l, n, s);
    experts
        .source
        .request(l, &s.used_high, &s.used_low, ReadKind::Demand);
}

/// Lower precision on a miss (HOBBIT): an expert no token needs at high precision and that is
/// not cached is read from its smaller low-precision copy.
fn choose_precision(experts: &Experts<'_>, l: usize, n: usize, s: &mut Scratch) {
    s.low.clear();
    s.low.resize(experts.config.n_experts, false);
    if let Some(f) = experts.low_precision_threshold {
        if experts.source.has_low_precision() {
            for &e in &s.used {
                s.low[e] =
                    low_precision_allowed(&s.routes[..n], e, f) && !experts.source.is_cached(l, e);
            }
        }
    }
    s.used_high.clear();
    s.used_low.clear();
    for &e in &s.used {
        if s.low[e] {
            s.used_low.push(e);
        } else {
            s.used_high.push(e);
        }
    }
}

/// Whether every token routed to expert `e` lets it run at low precision: `e` is not the
/// token's top-1 choice and its weight is below `threshold` of the token's top-k weight mass.
pub(crate) fn low_precision_allowed(routes: &[Routing], e: usize, threshold: f32) -> bool {
    routes
        .iter()
        .all(|r| match r.experts.iter().position(|&x| x == e) {
            None => true,
            Some(0) => false,
            Some(i) => {
                let mass: f32 = r.weights.iter().sum();
                // NaN or a zero mass compares false: high precision.
                r.weights[i] / mass < threshold
            }
        })
}

/// Runs every used expert of layer `l` on the tokens routed to it, experts already in memory
/// first, while the misses are read. Outputs go to `s.expert_out` by (token, slot) and are
/// summed in router order by [`combine`], so the order of computation does not change the
/// result. Stops with [`crate::Error::Cancelled`] once `cancel` is set.
pub(crate) fn run_experts(
    experts: &Experts<'_>,
    l: usize,
    n: usize,
    s: &mut Scratch,
    cancel: &AtomicBool,
) -> Result<()> {
    let c = experts.config;
    grow(&mut s.expert_out, n * c.n_experts_used * c.hidden);
    let precision = |low: &[bool], e: usize| {
        if low[e] {
            Precision::Low
        } else {
            Precision::High
        }
    };
    let mut used = std::mem::take(&mut s.used);
    used.sort_by_key(|&e| !experts.source.is_ready(l, e, precision(&s.low, e)));
    let result = used.iter().try_for_each(|&e| {
        let view = experts.source.get(l, e, precision(&s.low, e), cancel)?;
        s.assigned.clear();
        for (t, r) in s.routes[..n].iter().enumerate() {
            if let Some(slot) = r.experts.iter().position(|&x| x == e) {
                s.assigned.push((t, slot));
            }
        }
        routed_expert(c, &view, s);
        Ok(())
    });
    s.used = used;
    result
}

/// Adds each token's expert outputs, weighted, to `x` in router order.
pub(crate) fn combine(c: &ModelConfig, x: &mut [f32], n: usize, s: &Scratch) {
    let (h, k) = (c.hidden, c.n_experts_used);
    for t in 0..n {
        let xt = &mut x[t * h..(t + 1) * h];
        for (slot, &wgt) in s.routes[t].weights.iter().enumerate() {
            ops::axpy(
                wgt,
                &s.expert_out[(t * k + slot) * h..(t * k + slot + 1) * h],
                xt,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(experts: &[usize], weights: &[f32]) -> Routing {
        Routing {
            experts: experts.to_vec(),
            weights: weights.to_vec(),
            logits: Vec::new(),
        }
    }

    #[test]
    fn low_precision_only_below_threshold_and_never_top1() {
        let r = [route(&[3, 5], &[0.7, 0.3]), route(&[5, 1], &[0.6, 0.4])];
        // Expert 5 is top-1 of the second token: always high.
        assert!(!low_precision_allowed(&r, 5, 1.0));
        // Expert 3 is top-1 of the first token.
        assert!(!low_precision_allowed(&r, 3, 1.0));
        // Expert 1: share 0.4.
        assert!(low_precision_allowed(&r, 1, 0.5));
        assert!(!low_precision_allowed(&r, 1, 0.4));
        assert!(!low_precision_allowed(&r, 1, 0.0));
        // Shares, not raw weights: 0.2 of a mass of 0.5 is 0.4.
        let r = [route(&[0, 2], &[0.3, 0.2])];
        assert!(low_precision_allowed(&r, 2, 0.41));
        assert!(!low_precision_allowed(&r, 2, 0.39));
        // A degenerate mass keeps high precision.
        let r = [route(&[0, 2], &[0.0, 0.0])];
        assert!(!low_precision_allowed(&r, 2, 1.0));
    }
}
