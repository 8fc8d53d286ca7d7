//! The router: which experts each token uses in a layer, and with what weights.

use super::scratch::{grow, Scratch};
use crate::engine::arch::RouterKind;
use crate::engine::config::ModelConfig;
use crate::engine::weights::LayerWeights;
use crate::tensor::ops::{self, matmat};

/// The router's decision for one token in one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// Chosen experts, most probable first.
    pub experts: Vec<usize>,
    /// The weight applied to each chosen expert's output.
    pub weights: Vec<f32>,
    /// Raw router logits over all experts.
    pub logits: Vec<f32>,
}

/// Observes routing decisions as the forward pass makes them.
pub trait RoutingObserver: Send {
    /// Called once per layer per token, in layer order, tokens in position order.
    fn observe(&mut self, layer: usize, position: usize, routing: &Routing);

    /// Called when the predictor driving preloads predicts `experts` (most likely first) for
    /// layer `layer` of the token at `position`, before that layer runs.
    fn observe_prediction(&mut self, _layer: usize, _position: usize, _experts: &[usize]) {}
}

/// Records every routing decision (used by tests and calibration).
#[derive(Default, Debug)]
pub struct RoutingTrace {
    /// `layers[l][t]`: the decision of layer `l` for the `t`-th token observed.
    pub layers: Vec<Vec<Routing>>,
}

impl RoutingObserver for RoutingTrace {
    fn observe(&mut self, layer: usize, _position: usize, routing: &Routing) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, Vec::new);
        }
        self.layers[layer].push(routing.clone());
    }
}

/// Normalises the `n` tokens of `x` for the FFN (into `s.h`) and routes each (into
/// `s.routes`), telling `observer` every decision of layer `l` (tokens from `position`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn route(
    c: &ModelConfig,
    w: &LayerWeights,
    l: usize,
    position: usize,
    x: &[f32],
    n: usize,
    s: &mut Scratch,
    mut observer: Option<&mut Box<dyn RoutingObserver>>,
) {
    let h = c.hidden;
    let hn = grow(&mut s.h, n * h);
    for (xt, ht) in x.chunks_exact(h).zip(hn.chunks_exact_mut(h)) {
        ops::rms_norm(xt, &w.ffn_norm, c.norm_eps, ht);
    }
    let logits = grow(&mut s.router_logits, n * c.n_experts);
    matmat(w.router.as_ref(), hn, n, logits, &mut s.matvec);
    s.routes.resize_with(n, || Routing {
        experts: Vec::new(),
        weights: Vec::new(),
        logits: Vec::new(),
    });
    for t in 0..n {
        let r = &mut s.routes[t];
        r.logits.clear();
        r.logits
            .extend_from_slice(&logits[t * c.n_experts..(t + 1) * c.n_experts]);
        let probs = grow(&mut s.router, c.n_experts);
        match c.family.router {
            RouterKind::SoftmaxTopK => softmax_top_k(c, probs, r),
        }
        if let Some(obs) = observer.as_mut() {
            obs.observe(l, position + t, r);
        }
    }
}

/// [`RouterKind::SoftmaxTopK`] of the logits in `r`, with `probs` as scratch.
fn softmax_top_k(c: &ModelConfig, probs: &mut [f32], r: &mut Routing) {
    probs.copy_from_slice(&r.logits);
    ops::softmax(probs);
    select_top_k(probs, c.n_experts_used, &mut r.experts);
    r.weights.clear();
    r.weights.extend(r.experts.iter().map(|&e| probs[e]));
    if c.norm_topk {
        let sum: f32 = r.weights.iter().sum();
        r.weights.iter_mut().for_each(|v| *v /= sum);
    }
}

/// The `k` largest probabilities' indices, largest first; ties go to the lower index.
pub(crate) fn select_top_k(probs: &[f32], k: usize, out: &mut Vec<usize>) {
    out.clear();
    out.extend(0..probs.len());
    out.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    out.truncate(k);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_largest_first_and_ties_go_to_the_lower_index() {
        let mut out = Vec::new();
        select_top_k(&[0.1, 0.4, 0.4, 0.1], 3, &mut out);
        assert_eq!(out, [1, 2, 0]);
    }
}
