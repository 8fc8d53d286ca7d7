//! A session's expert prediction: while a layer's experts are read and computed, predict the
//! experts of the layers ahead and preload them; score every prediction against the experts
//! the layer then used.

use super::super::blocks::router::{select_top_k, RoutingObserver};
use super::super::blocks::scratch::{grow, Scratch};
use super::super::model::Model;
use super::super::predictor::{PredictionOptions, PredictorKind};
use crate::expert::ReadKind;
use crate::tensor::ops::{self, matmat};

/// How well a predictor predicted each layer's experts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PredictionStats {
    /// Per layer: experts predicted (summed over predictions made).
    pub predicted: Vec<u64>,
    /// Per layer: experts used (in batches that had a prediction).
    pub used: Vec<u64>,
    /// Per layer: experts both predicted and used.
    pub correct: Vec<u64>,
}

impl PredictionStats {
    /// Zero counts for `n_layers` layers.
    pub fn new(n_layers: usize) -> Self {
        PredictionStats {
            predicted: vec![0; n_layers],
            used: vec![0; n_layers],
            correct: vec![0; n_layers],
        }
    }

    /// Counts one prediction of a layer against the experts it used.
    fn record(&mut self, l: usize, predicted: &[usize], used: &[usize]) {
        self.predicted[l] += predicted.len() as u64;
        self.used[l] += used.len() as u64;
        self.correct[l] += used.iter().filter(|e| predicted.contains(e)).count() as u64;
    }

    /// Share of used experts that had been predicted, over all layers.
    pub fn recall(&self) -> f64 {
        self.correct.iter().sum::<u64>() as f64 / self.used.iter().sum::<u64>().max(1) as f64
    }

    /// Share of predicted experts that were used, over all layers.
    pub fn precision(&self) -> f64 {
        self.correct.iter().sum::<u64>() as f64 / self.predicted.iter().sum::<u64>().max(1) as f64
    }

    /// Recall of layer `l` (0 when it was never predicted).
    pub fn layer_recall(&self, l: usize) -> f64 {
        let c = self.correct.get(l).copied().unwrap_or(0);
        c as f64 / self.used.get(l).copied().unwrap_or(0).max(1) as f64
    }

    /// Precision of layer `l` (0 when it was never predicted).
    pub fn layer_precision(&self, l: usize) -> f64 {
        let c = self.correct.get(l).copied().unwrap_or(0);
        c as f64 / self.predicted.get(l).copied().unwrap_or(0).max(1) as f64
    }
}

/// One predictor's predictions not yet checked, and its score so far.
struct Tracker {
    kind: PredictorKind,
    /// Experts predicted for each layer, not yet checked.
    pending: Vec<Vec<usize>>,
    /// The part of `pending` predicted before the previous layer's experts ran.
    pending_early: Vec<Vec<usize>>,
    stats: PredictionStats,
    /// The score of the early predictions alone (differs from `stats` only when refining).
    early: PredictionStats,
    /// Per token, the experts predicted for the layer being predicted (scratch).
    per_token: Vec<Vec<usize>>,
}

/// Where the batch being evaluated is, and who hears of the predictions made for it.
pub(crate) struct Context<'a> {
    pub model: &'a Model,
    /// The hidden state entering the layer's experts (or, refining, leaving them).
    pub x: &'a [f32],
    pub n: usize,
    /// Position of the batch's first token.
    pub position: usize,
    pub observer: Option<&'a mut Box<dyn RoutingObserver>>,
}

/// A session's predictors: the options, each predictor's pending predictions and scores, and
/// the routes of the layers just run (the statistics predictor's keys).
pub(crate) struct Predictions {
    pub options: PredictionOptions,
    /// One per predictor in [`PredictorKind::ALL`].
    trackers: Vec<Tracker>,
    /// Per token of the batch, the experts of the previous layer and the one before.
    prev_routes: [Vec<Vec<usize>>; 2],
}

impl Predictions {
    pub fn new(options: PredictionOptions, n_layers: usize) -> Self {
        Predictions {
            options,
            trackers: PredictorKind::ALL
                .iter()
                .map(|&kind| Tracker {
                    kind,
                    pending: vec![Vec::new(); n_layers],
                    pending_early: vec![Vec::new(); n_layers],
                    stats: PredictionStats::new(n_layers),
                    early: PredictionStats::new(n_layers),
                    per_token: Vec::new(),
                })
                .collect(),
            prev_routes: Default::default(),
        }
    }

    /// Forgets the predictions not yet checked (the scores stay).
    pub fn clear_pending(&mut self) {
        for t in &mut self.trackers {
            t.pending.iter_mut().for_each(Vec::clear);
            t.pending_early.iter_mut().for_each(Vec::clear);
        }
    }

    /// The score of predictor `kind` (`early`: the predictions made before the previous
    /// layer's experts ran).
    pub fn stats(&self, kind: PredictorKind, early: bool) -> Option<&PredictionStats> {
        let t = self.trackers.iter().find(|t| t.kind == kind)?;
        Some(if early { &t.early } else { &t.stats })
    }

    /// Scores the predictions made earlier for layer `l` against the experts it used.
    pub fn check(&mut self, l: usize, used: &[usize]) {
        for t in &mut self.trackers {
            if !t.pending[l].is_empty() {
                t.stats.record(l, &t.pending[l], used);
                t.pending[l].clear();
            }
            if !t.pending_early[l].is_empty() {
                t.early.record(l, &t.pending_early[l], used);
                t.pending_early[l].clear();
            }
        }
    }

    /// Experts preloaded per token per predicted layer.
    fn count(&self, model: &Model) -> usize {
        let c = &model.config;
        self.options
            .preload_count
            .unwrap_or(c.n_experts_used)
            .clamp(1, c.n_experts)
    }

    /// Predicts the experts of the next `depth` layers, while layer `l` is about to compute
    /// its experts (routed as in `s.routes`), with the predictor in use (whose predictions
    /// are preloaded) and, when asked, the others (scored only).
    pub fn predict(&mut self, l: usize, cx: &mut Context<'_>, s: &mut Scratch) {
        let opts = self.options;
        if opts.predictor == PredictorKind::None && !opts.score_all {
            return;
        }
        let n = cx.n;
        // Routes of this layer, for the statistics predictor's keys.
        let current: Vec<Vec<usize>> = s.routes[..n].iter().map(|r| r.experts.clone()).collect();
        for ti in 0..self.trackers.len() {
            let kind = self.trackers[ti].kind;
            let active = opts.predictor == kind;
            let runs = active || opts.score_all;
            if !runs || (kind == PredictorKind::Stats && cx.model.expert_stats.is_none()) {
                continue;
            }
            self.predict_with(ti, l, &current, cx, s);
        }
        self.prev_routes[1] = std::mem::replace(&mut self.prev_routes[0], current);
    }

    /// [`Predictions::predict`] for tracker `ti`'s predictor.
    fn predict_with(
        &mut self,
        ti: usize,
        l: usize,
        current: &[Vec<usize>],
        cx: &mut Context<'_>,
        s: &mut Scratch,
    ) {
        let c = &cx.model.config;
        let (n, count) = (cx.n, self.count(cx.model));
        let kind = self.trackers[ti].kind;
        // Per token, the experts of the layer before the one predicted (chained through this
        // predictor's own predictions beyond the next layer).
        let mut prev1: Vec<Vec<usize>> = current.to_vec();
        let mut prev2: Vec<Vec<usize>> = if l >= 1 && self.prev_routes[0].len() == n {
            self.prev_routes[0].clone()
        } else {
            Vec::new()
        };
        for m in l + 1..(l + 1 + self.options.depth).min(c.n_layers) {
            let mut per_token = std::mem::take(&mut self.trackers[ti].per_token);
            per_token.resize_with(n, Vec::new);
            match kind {
                PredictorKind::LookAhead => look_ahead(cx, m, count, &mut per_token, s),
                PredictorKind::Stats => {
                    let Some(table) = cx.model.expert_stats.as_deref() else {
                        break;
                    };
                    let probs = grow(&mut s.router, c.n_experts);
                    for (t, out) in per_token.iter_mut().enumerate() {
                        let (p1, p2) = (prev1.get(t), prev2.get(t));
                        table.predict(m, p1.map(Vec::as_slice), p2.map(Vec::as_slice), probs);
                        select_top_k(probs, count, out);
                    }
                }
                PredictorKind::None => {}
            }
            self.publish(ti, m, &per_token, cx, s, true);
            if kind == PredictorKind::Stats {
                // The keys of the layer after: its most likely k experts stand in for the
                // unknown routing.
                prev2 = std::mem::take(&mut prev1);
                prev1 = per_token
                    .iter()
                    .map(|p| p[..c.n_experts_used.min(p.len())].to_vec())
                    .collect();
            }
            self.trackers[ti].per_token = per_token;
        }
    }

    /// Records tracker `ti`'s per-token prediction of layer `m` as pending (and, `early`, as an
    /// early one); when its predictor drives preloads, preloads the set and tells the observer.
    fn publish(
        &mut self,
        ti: usize,
        m: usize,
        per_token: &[Vec<usize>],
        cx: &mut Context<'_>,
        s: &mut Scratch,
        early: bool,
    ) {
        let c = &cx.model.config;
        let kind = self.trackers[ti].kind;
        let set = &mut s.predicted_set;
        set.clear();
        set.extend(per_token.iter().flatten().copied());
        set.sort_unstable();
        set.dedup();
        if self.options.predictor == kind {
            let logits =
                (kind == PredictorKind::LookAhead).then(|| &s.router_logits[..cx.n * c.n_experts]);
            preload_predicted(cx.model, m, set, per_token, logits);
            if let Some(obs) = cx.observer.as_mut() {
                for (t, p) in per_token.iter().enumerate() {
                    obs.observe_prediction(m, cx.position + t, p);
                }
            }
        }
        let tr = &mut self.trackers[ti];
        let slots = if early {
            [Some(&mut tr.pending[m]), Some(&mut tr.pending_early[m])]
        } else {
            [Some(&mut tr.pending[m]), None]
        };
        for slot in slots.into_iter().flatten() {
            slot.extend_from_slice(set);
            slot.sort_unstable();
            slot.dedup();
        }
    }

    /// Router look-ahead, second chance: once layer `l`'s experts have been added, layer
    /// `l + 1`'s router on the new hidden state (only `l + 1`'s attention is missing) adds the
    /// experts the early prediction missed; they are read while that attention runs.
    pub fn refine(&mut self, l: usize, cx: &mut Context<'_>, s: &mut Scratch) {
        let opts = self.options;
        let m = l + 1;
        let run = opts.refine
            && m < cx.model.config.n_layers
            && (opts.predictor == PredictorKind::LookAhead || opts.score_all);
        if !run {
            return;
        }
        let Some(ti) = self
            .trackers
            .iter()
            .position(|t| t.kind == PredictorKind::LookAhead)
        else {
            return;
        };
        let count = self.count(cx.model);
        let mut per_token = std::mem::take(&mut self.trackers[ti].per_token);
        per_token.resize_with(cx.n, Vec::new);
        look_ahead(cx, m, count, &mut per_token, s);
        self.publish(ti, m, &per_token, cx, s, false);
        self.trackers[ti].per_token = per_token;
    }
}

/// Router look-ahead: layer `m`'s router on the hidden state `cx.x`, each token's `count`
/// most likely experts into `per_token` (its logits stay in `s.router_logits`).
fn look_ahead(
    cx: &Context<'_>,
    m: usize,
    count: usize,
    per_token: &mut [Vec<usize>],
    s: &mut Scratch,
) {
    let c = &cx.model.config;
    let (h, n) = (c.hidden, cx.n);
    let w = &cx.model.layers[m];
    // `s.gathered` is free until the experts run.
    let hn = grow(&mut s.gathered, n * h);
    for (xt, ht) in cx.x.chunks_exact(h).zip(hn.chunks_exact_mut(h)) {
        ops::rms_norm(xt, &w.ffn_norm, c.norm_eps, ht);
    }
    let logits = grow(&mut s.router_logits, n * c.n_experts);
    matmat(w.router.as_ref(), hn, n, logits, &mut s.matvec);
    for (lt, out) in logits.chunks_exact(c.n_experts).zip(per_token) {
        select_top_k(lt, count, out);
    }
}

/// Preloads the predicted experts `set` of layer `m`. With lower precision on a miss, an expert
/// that rule would read at low precision (not cached at high precision, never a token's
/// predicted top-1, and below the threshold share of every predicting token's top-k gate mass
/// in the router look-ahead's `logits`) is preloaded as its low copy, so the fetch that follows
/// finds what it will use.
fn preload_predicted(
    model: &Model,
    m: usize,
    set: &[usize],
    per_token: &[Vec<usize>],
    logits: Option<&[f32]>,
) {
    let (Some(f), Some(logits)) = (model.low_precision_threshold, logits) else {
        model.experts.request(m, set, &[], ReadKind::Preload);
        return;
    };
    if !model.experts.has_low_precision() {
        model.experts.request(m, set, &[], ReadKind::Preload);
        return;
    }
    let c = &model.config;
    let k = c.n_experts_used.max(1);
    let low_ok = |e: usize| {
        per_token
            .iter()
            .zip(logits.chunks_exact(c.n_experts))
            .all(|(p, l)| match p.iter().position(|&x| x == e) {
                None => true,
                Some(0) => false,
                Some(_) => {
                    let top = l[p[0]];
                    let mass: f32 = p.iter().take(k).map(|&j| (l[j] - top).exp()).sum();
                    // NaN compares false: high precision.
                    (l[e] - top).exp() / mass < f
                }
            })
    };
    // Only with the option on: a few small vectors per layer.
    let (low, high): (Vec<usize>, Vec<usize>) = set
        .iter()
        .partition(|&&e| low_ok(e) && !model.experts.is_cached(m, e));
    model.experts.request(m, &high, &low, ReadKind::Preload);
}
