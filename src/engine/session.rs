//! One conversation with a model: the KV cache and the forward pass.
//!
//! The forward pass runs layer by layer over a batch of tokens (the whole prompt, or the one
//! new token when decoding). Within a layer, tokens are grouped by the experts they route to,
//! so each expert is fetched once per layer per batch. Every row is computed by the same
//! kernels in the same order whether it is alone or in a batch, so a prompt evaluated at once
//! and token by token gives bit-identical logits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::arch::{QkNorm, RopeStyle};
use super::experts::Precision;
use super::model::Model;
use super::predictor::{PredictionOptions, PredictorKind};
use crate::tensor::ops::{self, matmat, MatvecScratch};
use crate::{Error, Result};

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

struct LayerCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Per-batch working memory, grown on demand and then reused.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    expert_out: Vec<f32>,
    /// Inputs of the tokens routed to one expert, gathered for a batched product.
    gathered: Vec<f32>,
    ffn_a: Vec<f32>,
    ffn_b: Vec<f32>,
    router: Vec<f32>,
    router_logits: Vec<f32>,
    routes: Vec<Routing>,
    used: Vec<usize>,
    /// Per expert of the running layer: computed from its low-precision copy.
    low: Vec<bool>,
    /// The used experts to read at high and at low precision.
    used_high: Vec<usize>,
    used_low: Vec<usize>,
    /// `(token, slot)` pairs routed to the expert being computed.
    assigned: Vec<(usize, usize)>,
    predicted_set: Vec<usize>,
    /// Attention scores of each kernel thread (index as the pool numbers them; 0 when
    /// attention runs on the calling thread alone).
    scores: Vec<parking_lot::Mutex<Vec<f32>>>,
    matvec: MatvecScratch,
}

/// Multiply-adds of attention (over all heads and positions) from which it is spread over the
/// kernel threads: about a tenth of a millisecond of work, well above the cost of waking one.
const PARALLEL_ATTENTION_WORK: usize = 1 << 18;

/// Tokens an expert FFN processes at once in a prompt batch: each weight row is read once per
/// group, and the group's intermediate activations (`group x ffn`) stay small.
pub(crate) const FFN_GROUP: usize = 64;

fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// A conversation: KV cache, position, logits of the last evaluation.
pub struct Session {
    model: Arc<Model>,
    cache: Vec<LayerCache>,
    capacity: usize,
    position: usize,
    logits: Vec<f32>,
    scratch: Scratch,
    inv_freq: Vec<f32>,
    observer: Option<Box<dyn RoutingObserver>>,
    prediction: PredictionOptions,
    /// One per predictor in [`PredictorKind::ALL`]: its pending predictions and its score.
    trackers: Vec<Tracker>,
    /// Per token of the batch, the experts of the previous layer and the one before.
    prev_routes: [Vec<Vec<usize>>; 2],
    cancel: Arc<AtomicBool>,
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

/// Cancels a session's work from another thread.
#[derive(Clone)]
pub struct CancelHandle {
    flag: Arc<AtomicBool>,
    model: Arc<Model>,
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.flag.load(Ordering::SeqCst))
            .finish()
    }
}

impl CancelHandle {
    /// Makes the session's current (or next) evaluation stop with [`Error::Cancelled`], and
    /// stops the model's expert reads in flight (reads another session still needs are
    /// issued again for it).
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.model.experts.cancel_reads();
    }
}

impl Session {
    /// A session with room for `capacity` tokens (the model's context length when `None`).
    pub fn new(model: Arc<Model>, capacity: Option<usize>) -> Result<Session> {
        let c = &model.config;
        let capacity = capacity.unwrap_or(c.context_length);
        if capacity == 0 {
            return Err(Error::InvalidArgument(
                "context capacity must be at least 1".into(),
            ));
        }
        let kv_dim = c.n_kv_heads * c.head_dim;
        let n_layers = c.n_layers;
        let cache = (0..c.n_layers)
            .map(|_| LayerCache {
                k: vec![0.0; capacity * kv_dim],
                v: vec![0.0; capacity * kv_dim],
            })
            .collect();
        let hd = c.head_dim;
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / c.rope_theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        let pool = model.thread_pool().clone();
        Ok(Session {
            cache,
            capacity,
            position: 0,
            logits: Vec::new(),
            scratch: Scratch {
                matvec: MatvecScratch::with_pool(pool),
                ..Scratch::default()
            },
            inv_freq,
            observer: None,
            prediction: model.prediction_defaults(),
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
            model,
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The model this session runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Tokens the KV cache can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets the conversation (keeps the allocations).
    pub fn reset(&mut self) {
        self.position = 0;
        for t in &mut self.trackers {
            t.pending.iter_mut().for_each(Vec::clear);
            t.pending_early.iter_mut().for_each(Vec::clear);
        }
    }

    /// Drops tokens after `position` from the cache, so generation can resume from there.
    pub fn truncate(&mut self, position: usize) {
        self.position = self.position.min(position);
    }

    /// Predict experts `depth` layers ahead by applying their routers to the current hidden
    /// state, and ask the expert source to preload them (0 turns prediction off).
    pub fn set_lookahead(&mut self, depth: usize) {
        self.prediction.predictor = if depth > 0 {
            PredictorKind::LookAhead
        } else {
            PredictorKind::None
        };
        self.prediction.depth = depth.max(1);
    }

    /// Chooses the predictor, its depth and the experts preloaded per predicted layer. Fails
    /// when the statistics predictor is asked for and the model has no table.
    pub fn set_prediction(&mut self, p: PredictionOptions) -> Result<()> {
        self.model.check_prediction(&p)?;
        self.prediction = p;
        Ok(())
    }

    /// How this session predicts experts.
    pub fn prediction(&self) -> PredictionOptions {
        self.prediction
    }

    /// Accuracy so far of the predictor driving preloads (the router look-ahead when there is
    /// none).
    pub fn prediction_stats(&self) -> &PredictionStats {
        let kind = match self.prediction.predictor {
            PredictorKind::None => PredictorKind::LookAhead,
            k => k,
        };
        self.prediction_stats_for(kind)
            .unwrap_or(&self.trackers[0].stats)
    }

    /// Accuracy so far of one predictor (zero counts unless it ran: the one driving preloads,
    /// or every one with [`PredictionOptions::score_all`]).
    pub fn prediction_stats_for(&self, kind: PredictorKind) -> Option<&PredictionStats> {
        self.trackers
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| &t.stats)
    }

    /// Like [`Session::prediction_stats_for`], counting only the predictions made before the
    /// previous layer's experts ran (without [`PredictionOptions::refine`]'s additions).
    pub fn early_prediction_stats_for(&self, kind: PredictorKind) -> Option<&PredictionStats> {
        self.trackers
            .iter()
            .find(|t| t.kind == kind)
            .map(|t| &t.early)
    }

    /// A handle that cancels this session's evaluations from any thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            flag: self.cancel.clone(),
            model: self.model.clone(),
        }
    }

    /// Installs (or removes) an observer of routing decisions; returns the previous one.
    pub fn set_observer(
        &mut self,
        observer: Option<Box<dyn RoutingObserver>>,
    ) -> Option<Box<dyn RoutingObserver>> {
        std::mem::replace(&mut self.observer, observer)
    }

    /// Evaluates `tokens` after what is already in the cache. Returns the logits of the last
    /// token, or of every token when `all_logits` (row-major, `tokens.len() x vocab`).
    pub fn eval(&mut self, tokens: &[u32], all_logits: bool) -> Result<&[f32]> {
        let model = self.model.clone();
        let c = &model.config;
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab
            )));
        }
        let needed = self.position + tokens.len();
        if needed > self.capacity {
            return Err(Error::ContextFull {
                needed,
                capacity: self.capacity,
            });
        }
        let n = tokens.len();
        let h = c.hidden;
        // Embeddings.
        let mut x = std::mem::take(&mut self.scratch.x);
        grow(&mut x, n * h);
        for (t, &tok) in tokens.iter().enumerate() {
            model
                .token_embd
                .as_ref()
                .row_f32(tok as usize, &mut x[t * h..(t + 1) * h])?;
        }
        let result = (|| {
            for l in 0..c.n_layers {
                if self.cancel.swap(false, Ordering::SeqCst) {
                    return Err(Error::Cancelled);
                }
                self.attention(&model, l, &mut x[..n * h], n)?;
                self.moe(&model, l, &mut x[..n * h], n)?;
                self.refine(&model, l, &x[..n * h], n);
            }
            self.output(&model, &x[..n * h], n, all_logits);
            Ok(())
        })();
        self.scratch.x = x;
        if matches!(result, Err(Error::Cancelled)) {
            // Seen: the next evaluation runs.
            self.cancel.store(false, Ordering::SeqCst);
        }
        result?;
        self.position += n;
        Ok(&self.logits)
    }

    /// The logits of the last evaluation.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    fn rope(&self, v: &mut [f32], pos: usize, style: RopeStyle) {
        let half = self.inv_freq.len();
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let angle = pos as f32 * f;
            let (sin, cos) = angle.sin_cos();
            let (a, b) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (v[a], v[b]);
            v[a] = x0 * cos - x1 * sin;
            v[b] = x1 * cos + x0 * sin;
        }
    }

    fn attention(&mut self, model: &Model, l: usize, x: &mut [f32], n: usize) -> Result<()> {
        let c = &model.config;
        let w = &model.layers[l];
        let (h, hd) = (c.hidden, c.head_dim);
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let group = c.n_heads / c.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut s = std::mem::take(&mut self.scratch);
        // Projections of every token at once: each weight row is read once per batch.
        let hbuf = grow(&mut s.h, n * h);
        for (xt, ht) in x.chunks_exact(h).zip(hbuf.chunks_exact_mut(h)) {
            ops::rms_norm(xt, &w.attn_norm, c.norm_eps, ht);
        }
        let q = grow(&mut s.q, n * q_dim);
        let k = grow(&mut s.k, n * kv_dim);
        let v = grow(&mut s.v, n * kv_dim);
        matmat(w.wq.as_ref(), hbuf, n, q, &mut s.matvec);
        matmat(w.wk.as_ref(), hbuf, n, k, &mut s.matvec);
        matmat(w.wv.as_ref(), hbuf, n, v, &mut s.matvec);
        for t in 0..n {
            let pos = self.position + t;
            let q = &mut q[t * q_dim..(t + 1) * q_dim];
            let k = &mut k[t * kv_dim..(t + 1) * kv_dim];
            let v = &mut v[t * kv_dim..(t + 1) * kv_dim];
            for (dst, b) in [(&mut *q, &w.bq), (&mut *k, &w.bk), (&mut *v, &w.bv)] {
                if let Some(b) = b {
                    for (d, bv) in dst.iter_mut().zip(b) {
                        *d += bv;
                    }
                }
            }
            match c.family.qk_norm {
                QkNorm::None => {}
                QkNorm::Full => {
                    ops::rms_norm_in_place(q, w.q_norm.as_deref().unwrap_or(&[]), c.norm_eps);
                    ops::rms_norm_in_place(k, w.k_norm.as_deref().unwrap_or(&[]), c.norm_eps);
                }
                QkNorm::PerHead => {
                    let (qn, kn) = (
                        w.q_norm.as_deref().unwrap_or(&[]),
                        w.k_norm.as_deref().unwrap_or(&[]),
                    );
                    q.chunks_exact_mut(hd)
                        .for_each(|hq| ops::rms_norm_in_place(hq, qn, c.norm_eps));
                    k.chunks_exact_mut(hd)
                        .for_each(|hk| ops::rms_norm_in_place(hk, kn, c.norm_eps));
                }
            }
            for head in q.chunks_exact_mut(hd) {
                self.rope(head, pos, c.family.rope);
            }
            for head in k.chunks_exact_mut(hd) {
                self.rope(head, pos, c.family.rope);
            }
            let cache = &mut self.cache[l];
            cache.k[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(k);
            cache.v[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(v);
        }
        // Causal attention of each (token, head) over positions 0..=pos: the batch's later
        // tokens are in the cache already but not looked at, so each result is what decoding
        // the tokens one by one computes. Heads are independent: spread over the kernel
        // threads when there is enough work, each thread with its own scores buffer.
        let cache = &self.cache[l];
        let position = self.position;
        let q = &q[..n * q_dim];
        let head_attention = |scores: &mut Vec<f32>, item: usize, out: &mut [f32]| {
            let (t, head) = (item / c.n_heads, item % c.n_heads);
            let pos = position + t;
            let kvh = head / group;
            let qh = &q[t * q_dim + head * hd..t * q_dim + (head + 1) * hd];
            let scores = grow(scores, pos + 1);
            let key = |j: usize| &cache.k[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
            let value = |j: usize| &cache.v[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
            // Four positions per call: the same bits as one at a time, with the four
            // accumulation chains overlapping.
            let done = scores.len() / 4 * 4;
            for (i, sc) in scores[..done].chunks_exact_mut(4).enumerate() {
                let j = 4 * i;
                let d = ops::dot4(qh, [key(j), key(j + 1), key(j + 2), key(j + 3)]);
                for (s, d) in sc.iter_mut().zip(d) {
                    *s = d * scale;
                }
            }
            for (j, sc) in scores.iter_mut().enumerate().skip(done) {
                *sc = ops::dot(qh, key(j)) * scale;
            }
            ops::softmax(scores);
            out.fill(0.0);
            for (i, p) in scores[..done].chunks_exact(4).enumerate() {
                let j = 4 * i;
                let vs = [value(j), value(j + 1), value(j + 2), value(j + 3)];
                ops::axpy4([p[0], p[1], p[2], p[3]], vs, out);
            }
            for (j, &p) in scores.iter().enumerate().skip(done) {
                ops::axpy(p, value(j), out);
            }
        };
        let attn = grow(&mut s.attn, n * q_dim);
        // Multiply-adds of the scores and the weighted sum.
        let work = n * (position + n) * q_dim;
        let threads = s.matvec.threads();
        if s.scores.len() < threads {
            // Room for a score per position of the whole context up front, so that decoding
            // never grows (reallocates) these buffers as the position advances.
            let capacity = self.capacity;
            s.scores.resize_with(threads, || {
                parking_lot::Mutex::new(Vec::with_capacity(capacity))
            });
        }
        let scores = &s.scores;
        match s.matvec.pool() {
            Some(pool) if threads > 1 && work >= PARALLEL_ATTENTION_WORK => {
                pool.for_each_chunk_on_thread(attn, hd, &|thread, offset, out| {
                    head_attention(&mut scores[thread].lock(), offset / hd, out)
                });
            }
            _ => {
                let mut scores = scores[0].lock();
                for (item, out) in attn.chunks_exact_mut(hd).enumerate() {
                    head_attention(&mut scores, item, out);
                }
            }
        }
        let proj = grow(&mut s.proj, n * h);
        matmat(w.wo.as_ref(), attn, n, proj, &mut s.matvec);
        for (xv, pv) in x.iter_mut().zip(proj.iter()) {
            *xv += pv;
        }
        self.scratch = s;
        Ok(())
    }

    fn moe(&mut self, model: &Model, l: usize, x: &mut [f32], n: usize) -> Result<()> {
        let c = &model.config;
        let w = &model.layers[l];
        let h = c.hidden;
        let k = c.n_experts_used;
        let mut s = std::mem::take(&mut self.scratch);
        let result = (|| {
            // Normalise and route every token.
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
                probs.copy_from_slice(&r.logits);
                ops::softmax(probs);
                select_top_k(probs, k, &mut r.experts);
                r.weights.clear();
                r.weights.extend(r.experts.iter().map(|&e| probs[e]));
                if c.norm_topk {
                    let sum: f32 = r.weights.iter().sum();
                    r.weights.iter_mut().for_each(|v| *v /= sum);
                }
                if let Some(obs) = self.observer.as_mut() {
                    obs.observe(l, self.position + t, r);
                }
            }
            // Each used expert once, applied to every token routed to it.
            let mut used = std::mem::take(&mut s.used);
            used.clear();
            used.extend(s.routes[..n].iter().flat_map(|r| r.experts.iter().copied()));
            used.sort_unstable();
            used.dedup();
            model.experts.begin_layer(l);
            // Lower precision on a miss (HOBBIT): an expert no token needs at high precision
            // and that is not cached is read from its smaller low-precision copy.
            s.low.clear();
            s.low.resize(c.n_experts, false);
            if let Some(f) = model.low_precision_threshold {
                if model.experts.has_low_precision() {
                    for &e in &used {
                        s.low[e] = low_precision_allowed(&s.routes[..n], e, f)
                            && !model.experts.is_cached(l, e);
                    }
                }
            }
            let (mut high, mut low) = (
                std::mem::take(&mut s.used_high),
                std::mem::take(&mut s.used_low),
            );
            high.clear();
            low.clear();
            for &e in &used {
                if s.low[e] {
                    low.push(e);
                } else {
                    high.push(e);
                }
            }
            model.experts.request_mixed(l, &high, &low);
            (s.used_high, s.used_low) = (high, low);
            self.check_prediction(l, &used);
            self.predict(model, l, x, n, &mut s);
            grow(&mut s.expert_out, n * k * h);
            // Experts already in memory first, while the misses are read. Outputs are summed
            // in router order below, so the order of computation does not change the result.
            let low = &s.low;
            used.sort_by_key(|&e| {
                !if low[e] {
                    model.experts.is_ready_at(l, e, Precision::Low)
                } else {
                    model.experts.is_ready(l, e)
                }
            });
            let ffn = c.expert_ffn;
            for &e in &used {
                let view = if s.low[e] {
                    model
                        .experts
                        .get_at_or_cancel(l, e, Precision::Low, &self.cancel)?
                } else {
                    model.experts.get_or_cancel(l, e, &self.cancel)?
                };
                s.assigned.clear();
                for (t, r) in s.routes[..n].iter().enumerate() {
                    if let Some(slot) = r.experts.iter().position(|&x| x == e) {
                        s.assigned.push((t, slot));
                    }
                }
                for part in s.assigned.chunks(FFN_GROUP) {
                    let g = part.len();
                    let inputs = grow(&mut s.gathered, g * h);
                    for (dst, &(t, _)) in inputs.chunks_exact_mut(h).zip(part) {
                        dst.copy_from_slice(&s.h[t * h..(t + 1) * h]);
                    }
                    let a = grow(&mut s.ffn_a, g * ffn);
                    let b = grow(&mut s.ffn_b, g * ffn);
                    matmat(view.gate, inputs, g, a, &mut s.matvec);
                    matmat(view.up, inputs, g, b, &mut s.matvec);
                    ops::swiglu(a, b, &s.matvec);
                    // The gathered inputs are no longer needed: reuse them for the outputs.
                    matmat(view.down, a, g, inputs, &mut s.matvec);
                    for (out, &(t, slot)) in inputs.chunks_exact(h).zip(part) {
                        s.expert_out[(t * k + slot) * h..(t * k + slot + 1) * h]
                            .copy_from_slice(out);
                    }
                }
            }
            s.used = used;
            // Weighted sum in router order.
            for t in 0..n {
                let xt = &mut x[t * h..(t + 1) * h];
                let r = &s.routes[t];
                for (slot, &wgt) in r.weights.iter().enumerate() {
                    ops::axpy(
                        wgt,
                        &s.expert_out[(t * k + slot) * h..(t * k + slot + 1) * h],
                        xt,
                    );
                }
            }
            // Then the shared expert, over every token.
            if let Some(sh) = &w.shared {
                let sf = c.shared_ffn;
                for t0 in (0..n).step_by(FFN_GROUP) {
                    let g = FFN_GROUP.min(n - t0);
                    let ht = &s.h[t0 * h..(t0 + g) * h];
                    let a = grow(&mut s.ffn_a, g * sf);
                    let b = grow(&mut s.ffn_b, g * sf);
                    matmat(sh.gate.as_ref(), ht, g, a, &mut s.matvec);
                    matmat(sh.up.as_ref(), ht, g, b, &mut s.matvec);
                    ops::swiglu(a, b, &s.matvec);
                    let out = grow(&mut s.proj, g * h);
                    matmat(sh.down.as_ref(), a, g, out, &mut s.matvec);
                    let gates = grow(&mut s.router, g);
                    matmat(sh.gate_inp.as_ref(), ht, g, gates, &mut s.matvec);
                    for (i, xt) in x[t0 * h..(t0 + g) * h].chunks_exact_mut(h).enumerate() {
                        ops::axpy(ops::sigmoid(gates[i]), &out[i * h..(i + 1) * h], xt);
                    }
                }
            }
            Ok(())
        })();
        self.scratch = s;
        result
    }

    /// Scores the predictions made earlier for layer `l` against the experts it used.
    fn check_prediction(&mut self, l: usize, used: &[usize]) {
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

    /// Predicts the experts of the next `depth` layers, while layer `l` is about to compute
    /// its experts, with the predictor in use (whose predictions are preloaded) and, when
    /// asked, the others (scored only).
    fn predict(&mut self, model: &Model, l: usize, x: &[f32], n: usize, s: &mut Scratch) {
        let c = &model.config;
        let opts = self.prediction;
        if opts.predictor == PredictorKind::None && !opts.score_all {
            return;
        }
        let count = opts
            .preload_count
            .unwrap_or(c.n_experts_used)
            .clamp(1, c.n_experts);
        // Routes of this layer, for the statistics predictor's keys.
        let current: Vec<Vec<usize>> = s.routes[..n].iter().map(|r| r.experts.clone()).collect();
        for ti in 0..self.trackers.len() {
            let kind = self.trackers[ti].kind;
            let active = opts.predictor == kind;
            if !(active || opts.score_all) {
                continue;
            }
            if kind == PredictorKind::Stats && model.expert_stats.is_none() {
                continue;
            }
            // Per token, the experts of the layer before the one predicted (chained through
            // this predictor's own predictions beyond the next layer).
            let mut prev1: Vec<Vec<usize>> = current.clone();
            let mut prev2: Vec<Vec<usize>> = if l >= 1 && self.prev_routes[0].len() == n {
                self.prev_routes[0].clone()
            } else {
                Vec::new()
            };
            for m in l + 1..(l + 1 + opts.depth).min(c.n_layers) {
                let mut per_token = std::mem::take(&mut self.trackers[ti].per_token);
                per_token.resize_with(n, Vec::new);
                match kind {
                    PredictorKind::LookAhead => {
                        let h = c.hidden;
                        let w = &model.layers[m];
                        // `s.gathered` is free until the experts run.
                        let hn = grow(&mut s.gathered, n * h);
                        for (xt, ht) in x.chunks_exact(h).zip(hn.chunks_exact_mut(h)) {
                            ops::rms_norm(xt, &w.ffn_norm, c.norm_eps, ht);
                        }
                        let logits = grow(&mut s.router_logits, n * c.n_experts);
                        matmat(w.router.as_ref(), hn, n, logits, &mut s.matvec);
                        for (lt, out) in logits.chunks_exact(c.n_experts).zip(&mut per_token) {
                            select_top_k(lt, count, out);
                        }
                    }
                    PredictorKind::Stats => {
                        let Some(table) = model.expert_stats.as_deref() else {
                            break;
                        };
                        let probs = grow(&mut s.router, c.n_experts);
                        for (t, out) in per_token.iter_mut().enumerate() {
                            table.predict(
                                m,
                                prev1.get(t).map(Vec::as_slice),
                                prev2.get(t).map(Vec::as_slice),
                                probs,
                            );
                            select_top_k(probs, count, out);
                        }
                    }
                    PredictorKind::None => {}
                }
                let set = &mut s.predicted_set;
                set.clear();
                set.extend(per_token.iter().flatten().copied());
                set.sort_unstable();
                set.dedup();
                if active {
                    let logits = (kind == PredictorKind::LookAhead)
                        .then(|| &s.router_logits[..n * c.n_experts]);
                    preload_predicted(model, m, set, &per_token, logits);
                    if let Some(obs) = self.observer.as_mut() {
                        for (t, p) in per_token.iter().enumerate() {
                            obs.observe_prediction(m, self.position + t, p);
                        }
                    }
                }
                let tr = &mut self.trackers[ti];
                for slot in [&mut tr.pending[m], &mut tr.pending_early[m]] {
                    slot.extend_from_slice(set);
                    slot.sort_unstable();
                    slot.dedup();
                }
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
        self.prev_routes[1] = std::mem::replace(&mut self.prev_routes[0], current);
    }

    /// Router look-ahead, second chance: once layer `l`'s experts have been added, layer
    /// `l + 1`'s router on the new hidden state (only `l + 1`'s attention is missing) adds the
    /// experts the early prediction missed; they are read while that attention runs.
    fn refine(&mut self, model: &Model, l: usize, x: &[f32], n: usize) {
        let c = &model.config;
        let opts = self.prediction;
        let m = l + 1;
        let run = opts.refine
            && m < c.n_layers
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
        let count = opts
            .preload_count
            .unwrap_or(c.n_experts_used)
            .clamp(1, c.n_experts);
        let h = c.hidden;
        let w = &model.layers[m];
        let mut s = std::mem::take(&mut self.scratch);
        let hn = grow(&mut s.gathered, n * h);
        for (xt, ht) in x.chunks_exact(h).zip(hn.chunks_exact_mut(h)) {
            ops::rms_norm(xt, &w.ffn_norm, c.norm_eps, ht);
        }
        let logits = grow(&mut s.router_logits, n * c.n_experts);
        matmat(w.router.as_ref(), hn, n, logits, &mut s.matvec);
        let mut per_token = std::mem::take(&mut self.trackers[ti].per_token);
        per_token.resize_with(n, Vec::new);
        for (lt, out) in logits.chunks_exact(c.n_experts).zip(&mut per_token) {
            select_top_k(lt, count, out);
        }
        let set = &mut s.predicted_set;
        set.clear();
        set.extend(per_token.iter().flatten().copied());
        set.sort_unstable();
        set.dedup();
        if opts.predictor == PredictorKind::LookAhead {
            preload_predicted(
                model,
                m,
                set,
                &per_token,
                Some(&s.router_logits[..n * c.n_experts]),
            );
            if let Some(obs) = self.observer.as_mut() {
                for (t, p) in per_token.iter().enumerate() {
                    obs.observe_prediction(m, self.position + t, p);
                }
            }
        }
        let slot = &mut self.trackers[ti].pending[m];
        slot.extend_from_slice(set);
        slot.sort_unstable();
        slot.dedup();
        self.trackers[ti].per_token = per_token;
        self.scratch = s;
    }

    fn output(&mut self, model: &Model, x: &[f32], n: usize, all_logits: bool) {
        let c = &model.config;
        let h = c.hidden;
        let first = if all_logits { 0 } else { n - 1 };
        let rows = n - first;
        self.logits.resize(rows * c.vocab, 0.0);
        let s = &mut self.scratch;
        let hn = grow(&mut s.h, rows * h);
        for (xt, ht) in x[first * h..n * h]
            .chunks_exact(h)
            .zip(hn.chunks_exact_mut(h))
        {
            ops::rms_norm(xt, &model.output_norm, c.norm_eps, ht);
        }
        matmat(
            model.output_matrix().as_ref(),
            hn,
            rows,
            &mut self.logits,
            &mut s.matvec,
        );
    }
}

/// Whether every token routed to expert `e` lets it run at low precision: `e` is not the
/// token's top-1 choice and its weight is below `threshold` of the token's top-k weight mass.
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
        model.experts.prefetch(m, set);
        return;
    };
    if !model.experts.has_low_precision() {
        model.experts.prefetch(m, set);
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
    model.experts.prefetch(m, &high);
    if !low.is_empty() {
        model.experts.prefetch_at(m, &low, Precision::Low);
    }
}

fn low_precision_allowed(routes: &[Routing], e: usize, threshold: f32) -> bool {
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

/// The `k` largest probabilities' indices, largest first; ties go to the lower index.
fn select_top_k(probs: &[f32], k: usize, out: &mut Vec<usize>) {
    out.clear();
    out.extend(0..probs.len());
    out.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    out.truncate(k);
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
