//! One conversation with a model: the KV cache and the forward pass.
//!
//! The forward pass runs layer by layer over a batch of tokens (the whole prompt, or the one
//! new token when decoding): attention, then the MoE step, each built from the blocks in
//! [`crate::engine::blocks`]. Within a layer, tokens are grouped by the experts they route to,
//! so each expert is fetched once per layer per batch. Every row is computed by the same
//! kernels in the same order whether it is alone or in a batch, so a prompt evaluated at once
//! and token by token gives bit-identical logits.

mod predict;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::blocks::attention::{attention, Batch, KvCache, Rope};
use super::blocks::scratch::{grow, Scratch};
use super::blocks::{ffn, moe, router};
use super::model::Model;
use super::predictor::{PredictionOptions, PredictorKind};
use crate::tensor::ops::{self, matmat, MatvecScratch};
use crate::{Error, Result};

pub use super::blocks::router::{Routing, RoutingObserver, RoutingTrace};
pub use super::blocks::FFN_GROUP;
pub use predict::PredictionStats;
use predict::{Context, Predictions};

/// A conversation: KV cache, position, logits of the last evaluation.
pub struct Session {
    model: Arc<Model>,
    cache: Vec<KvCache>,
    /// The tokens in the KV cache, in order (`position` of them).
    tokens: Vec<u32>,
    capacity: usize,
    position: usize,
    logits: Vec<f32>,
    scratch: Scratch,
    rope: Rope,
    observer: Option<Box<dyn RoutingObserver>>,
    predictions: Predictions,
    cancel: Arc<CancelState>,
    /// Nesting of [`Session::cancellable`] scopes (an `eval` inside a generation).
    call_depth: usize,
}

/// Whether a session is inside a call, and whether that call was cancelled. A cancel only
/// reaches the call in progress: the lock orders it against the call's start and end, so a
/// cancel sent while idle, or racing with the end of a call, never stops a later call.
#[derive(Default)]
struct CancelState {
    running: parking_lot::Mutex<bool>,
    /// Set while the call in progress is cancelled; read per layer and by expert fetches.
    flag: AtomicBool,
}

/// Cancels a session's work from another thread.
#[derive(Clone)]
pub struct CancelHandle {
    state: Arc<CancelState>,
    model: Arc<Model>,
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.state.flag.load(Ordering::SeqCst))
            .finish()
    }
}

impl CancelHandle {
    /// Makes the session's call in progress (an evaluation, prompt included, or a whole
    /// [`Session::cancellable`] scope such as a generation) stop with [`Error::Cancelled`], and
    /// stops the model's expert reads in flight (reads another session still needs are
    /// issued again for it). While the session is idle it does nothing: a cancel never
    /// reaches a later call.
    pub fn cancel(&self) {
        let running = self.state.running.lock();
        if *running {
            self.state.flag.store(true, Ordering::SeqCst);
            drop(running);
            self.model.experts.cancel_reads();
        }
    }
}

impl Session {
    /// A session with room for `capacity` tokens. `None`: the context the model's memory
    /// budget reserved, or without a budget the model's context length.
    ///
    /// A model loaded with a memory budget reserved KV cache for a context of
    /// [`BudgetPlan::context_length`](super::budget::BudgetPlan) tokens; a larger `capacity`
    /// would exceed the budget and fails with [`Error::BudgetTooSmall`], naming the context
    /// the budget allows (load with a larger context length to get more). A KV cache that
    /// cannot be allocated is an error, not an abort.
    pub fn new(model: Arc<Model>, capacity: Option<usize>) -> Result<Session> {
        let c = &model.config;
        let kv_dim = c.n_kv_heads * c.head_dim;
        let capacity = capacity.unwrap_or(match model.budget() {
            Some(plan) => plan.context_length,
            None => c.context_length,
        });
        if capacity == 0 {
            return Err(Error::InvalidArgument(
                "context capacity must be at least 1".into(),
            ));
        }
        if let Some(plan) = model.budget() {
            if capacity > plan.context_length {
                let per_token = plan.kv_cache / plan.context_length.max(1) as u64;
                let extra = per_token.saturating_mul((capacity - plan.context_length) as u64);
                return Err(Error::BudgetTooSmall {
                    budget: plan.budget,
                    needed: plan.budget.saturating_add(extra),
                    detail: format!(
                        "a session of {capacity} tokens needs {extra} more bytes of KV cache than \
                         the budget reserved for {} tokens; ask for at most {} tokens, or load \
                         the model with a context length of {capacity}",
                        plan.context_length, plan.context_length
                    ),
                });
            }
        }
        let total = capacity
            .checked_mul(kv_dim)
            .and_then(|n| n.checked_mul(2 * 4 * c.n_layers))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "a context of {capacity} tokens does not fit in the address space"
                ))
            })?;
        // Probe the whole KV cache at once: the layers' caches could each be had while all of
        // them could not.
        let mut probe: Vec<u8> = Vec::new();
        probe.try_reserve_exact(total).map_err(|e| {
            Error::InvalidArgument(format!(
                "a context of {capacity} tokens needs {total} bytes of KV cache: {e}"
            ))
        })?;
        drop(probe);
        let cache = (0..c.n_layers)
            .map(|_| KvCache::new(capacity, kv_dim))
            .collect::<Result<Vec<_>>>()?;
        // Room for every token up front: decoding never reallocates the history.
        let mut tokens = Vec::new();
        tokens
            .try_reserve_exact(capacity)
            .map_err(|e| Error::InvalidArgument(format!("a context of {capacity} tokens: {e}")))?;
        let pool = model.thread_pool().clone();
        Ok(Session {
            cache,
            capacity,
            position: 0,
            tokens,
            logits: Vec::new(),
            scratch: Scratch {
                matvec: MatvecScratch::with_pool(pool),
                ..Scratch::default()
            },
            rope: Rope::new(c),
            observer: None,
            predictions: Predictions::new(model.prediction_defaults(), c.n_layers),
            model,
            cancel: Arc::new(CancelState::default()),
            call_depth: 0,
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
        self.tokens.clear();
        self.predictions.clear_pending();
    }

    /// Drops tokens after `position` from the cache, so generation can resume from there.
    pub fn truncate(&mut self, position: usize) {
        self.position = self.position.min(position);
        self.tokens.truncate(self.position);
    }

    /// The tokens in the KV cache, in order: what a continuation follows. A conversation that
    /// changes from some point on (an edit, an undo, a regenerated reply) keeps the common
    /// prefix: [`Session::truncate`] to it and evaluate the rest.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Predict experts `depth` layers ahead by applying their routers to the current hidden
    /// state, and ask the expert source to preload them (0 turns prediction off).
    pub fn set_lookahead(&mut self, depth: usize) {
        let p = &mut self.predictions.options;
        p.predictor = if depth > 0 {
            PredictorKind::LookAhead
        } else {
            PredictorKind::None
        };
        p.depth = depth.max(1);
    }

    /// Chooses the predictor, its depth and the experts preloaded per predicted layer. Fails
    /// when the statistics predictor is asked for and the model has no table.
    pub fn set_prediction(&mut self, p: PredictionOptions) -> Result<()> {
        self.model.check_prediction(&p)?;
        self.predictions.options = p;
        Ok(())
    }

    /// How this session predicts experts.
    pub fn prediction(&self) -> PredictionOptions {
        self.predictions.options
    }

    /// Accuracy so far of the predictor driving preloads (the router look-ahead when there is
    /// none).
    pub fn prediction_stats(&self) -> &PredictionStats {
        let kind = match self.predictions.options.predictor {
            PredictorKind::None => PredictorKind::LookAhead,
            k => k,
        };
        self.prediction_stats_for(kind)
            .or_else(|| self.prediction_stats_for(PredictorKind::ALL[0]))
            .expect("a tracker per predictor")
    }

    /// Accuracy so far of one predictor (zero counts unless it ran: the one driving preloads,
    /// or every one with [`PredictionOptions::score_all`]).
    pub fn prediction_stats_for(&self, kind: PredictorKind) -> Option<&PredictionStats> {
        self.predictions.stats(kind, false)
    }

    /// Like [`Session::prediction_stats_for`], counting only the predictions made before the
    /// previous layer's experts ran (without [`PredictionOptions::refine`]'s additions).
    pub fn early_prediction_stats_for(&self, kind: PredictorKind) -> Option<&PredictionStats> {
        self.predictions.stats(kind, true)
    }

    /// Runs `f` as one call for [`CancelHandle::cancel`]: a cancel while it runs stops every
    /// evaluation inside it (wrap a whole generation in it so a cancel between two tokens is
    /// not lost), and a cancel before or after it does nothing. Scopes nest.
    pub fn cancellable<R>(&mut self, f: impl FnOnce(&mut Session) -> R) -> R {
        if self.call_depth == 0 {
            *self.cancel.running.lock() = true;
            self.cancel.flag.store(false, Ordering::SeqCst);
        }
        self.call_depth += 1;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
        self.call_depth -= 1;
        if self.call_depth == 0 {
            let mut running = self.cancel.running.lock();
            *running = false;
            self.cancel.flag.store(false, Ordering::SeqCst);
        }
        match result {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// A handle that cancels this session's evaluations from any thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            state: self.cancel.clone(),
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
        self.check_batch(tokens)?;
        let n = tokens.len();
        let h = model.config.hidden;
        // Embeddings.
        let mut x = std::mem::take(&mut self.scratch.x);
        grow(&mut x, n * h);
        let result = self.cancellable(|s| s.forward(&model, tokens, &mut x[..n * h], all_logits));
        self.scratch.x = x;
        result?;
        self.position += n;
        self.tokens.extend_from_slice(tokens);
        Ok(&self.logits)
    }

    /// An error unless `tokens` can be evaluated next.
    fn check_batch(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.model.config.vocab;
        if tokens.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::InvalidArgument(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let needed = self.position + tokens.len();
        if needed > self.capacity {
            return Err(Error::ContextFull {
                needed,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// The forward pass of `tokens` with `x` as the residual stream.
    fn forward(
        &mut self,
        model: &Model,
        tokens: &[u32],
        x: &mut [f32],
        all_logits: bool,
    ) -> Result<()> {
        let h = model.config.hidden;
        for (t, &tok) in tokens.iter().enumerate() {
            model
                .token_embd
                .as_ref()
                .row_f32(tok as usize, &mut x[t * h..(t + 1) * h])?;
        }
        let batch = Batch {
            position: self.position,
            n: tokens.len(),
            capacity: self.capacity,
        };
        for l in 0..model.config.n_layers {
            if self.cancel.flag.load(Ordering::SeqCst) {
                return Err(Error::Cancelled);
            }
            let w = &model.layers[l];
            let (cache, s) = (&mut self.cache[l], &mut self.scratch);
            attention(&model.config, w, cache, &self.rope, &batch, x, s);
            self.moe(model, l, x, batch.n)?;
            let mut cx = Context {
                model,
                x,
                n: batch.n,
                position: self.position,
                observer: self.observer.as_mut(),
            };
            self.predictions.refine(l, &mut cx, &mut self.scratch);
        }
        self.output(model, x, batch.n, all_logits);
        Ok(())
    }

    /// The MoE step of layer `l`: route, request the experts' reads, predict the layers ahead
    /// while they are read, run the experts, combine their outputs, then the shared expert.
    fn moe(&mut self, model: &Model, l: usize, x: &mut [f32], n: usize) -> Result<()> {
        let c = &model.config;
        let w = &model.layers[l];
        let s = &mut self.scratch;
        let experts = moe::Experts {
            config: c,
            source: model.experts.as_ref(),
            low_precision_threshold: model.low_precision_threshold,
        };
        router::route(c, w, l, self.position, x, n, s, self.observer.as_mut());
        moe::request_experts(&experts, l, n, s);
        self.predictions.check(l, &s.used);
        let mut cx = Context {
            model,
            x,
            n,
            position: self.position,
            observer: self.observer.as_mut(),
        };
        self.predictions.predict(l, &mut cx, s);
        moe::run_experts(&experts, l, n, s, &self.cancel.flag)?;
        moe::combine(c, x, n, s);
        if let Some(sh) = &w.shared {
            ffn::shared_expert(c, sh, x, n, s);
        }
        Ok(())
    }

    /// The logits of the last evaluation.
    pub fn logits(&self) -> &[f32] {
        &self.logits
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
