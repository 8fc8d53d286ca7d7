//! How far a model's next-token distributions are from a reference model's on the same text:
//! mean KL(reference || model), top-1 agreement, and both perplexities. This is the cheap,
//! sensitive measure of quantisation damage that calibration searches with.
//!
//! Positions are those [`super::perplexity`] scores (same windows, same stride).

use std::sync::Arc;

use super::perplexity::{log_sum_exp, plan, MeanAccumulator, Perplexity, Window};
use super::{Model, Session};
use crate::{Error, Result};

/// The result of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// Mean over scored positions of KL(reference || model), in nats.
    pub kl: f64,
    /// Standard error of `kl` (positions treated as independent).
    pub kl_std_error: f64,
    /// Share of positions where both models' most likely token is the same.
    pub top1_agreement: f64,
    /// Standard error of the mean per-position NLL change (model minus reference), paired
    /// position by position: far smaller than either perplexity's own error, it says how
    /// well the text pins down the difference between the two models.
    pub nll_change_std_error: f64,
    pub model: Perplexity,
    pub reference: Perplexity,
}

/// Log-probabilities of `row` (logits) into `out`.
fn log_softmax(row: &[f32], out: &mut [f32]) {
    let lse = log_sum_exp(row);
    for (o, &v) in out.iter_mut().zip(row) {
        *o = (v as f64 - lse) as f32;
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Accumulates the figures of a comparison, one scored position at a time.
#[derive(Default)]
struct Tally {
    kl: MeanAccumulator,
    model_nll: MeanAccumulator,
    reference_nll: MeanAccumulator,
    nll_change: MeanAccumulator,
    agree: usize,
}

impl Tally {
    /// Adds one position: reference log-probabilities and NLL of the true next token
    /// (computed in f64 from the logits, as `perplexity` does), model logits, that token.
    fn push(
        &mut self,
        ref_logp: &[f32],
        ref_nll: f64,
        model_logits: &[f32],
        target: usize,
        scratch: &mut [f32],
    ) {
        log_softmax(model_logits, scratch);
        let kl: f64 = ref_logp
            .iter()
            .zip(scratch.iter())
            .map(|(&r, &m)| (r as f64).exp() * (r as f64 - m as f64))
            .sum();
        // Rounding can make a zero divergence slightly negative.
        self.kl.push(kl.max(0.0));
        // In f64 from the logits, exactly as `perplexity` computes it.
        let model_nll = log_sum_exp(model_logits) - model_logits[target] as f64;
        self.model_nll.push(model_nll);
        self.reference_nll.push(ref_nll);
        self.nll_change.push(model_nll - ref_nll);
        if argmax(ref_logp) == argmax(model_logits) {
            self.agree += 1;
        }
    }

    fn finish(&self, windows: usize) -> Divergence {
        Divergence {
            kl: self.kl.mean(),
            kl_std_error: self.kl.std_error(),
            top1_agreement: self.agree as f64 / self.kl.count().max(1) as f64,
            nll_change_std_error: self.nll_change.std_error(),
            model: Perplexity::from_nll(&self.model_nll, windows),
            reference: Perplexity::from_nll(&self.reference_nll, windows),
        }
    }
}

fn check_vocab(model: &Model, reference: &Model) -> Result<()> {
    if model.config.vocab != reference.config.vocab {
        return Err(Error::InvalidArgument(format!(
            "the models' vocabularies differ ({} and {} tokens)",
            model.config.vocab, reference.config.vocab
        )));
    }
    Ok(())
}

/// Compares `model` with `reference` on `ids`, running both window by window (memory stays
/// at two sessions). `progress(done, total)` is called after each window.
pub fn compare(
    model: &Arc<Model>,
    reference: &Arc<Model>,
    ids: &[u32],
    ctx: usize,
    stride: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Divergence> {
    check_vocab(model, reference)?;
    let vocab = model.config.vocab;
    let windows = plan(ids.len(), ctx, stride)?;
    let mut ref_session = Session::new(reference.clone(), Some(ctx))?;
    let mut session = Session::new(model.clone(), Some(ctx))?;
    let mut ref_logp = vec![0f32; ctx * vocab];
    let mut ref_nll = vec![0f64; ctx];
    let mut scratch = vec![0f32; vocab];
    let mut tally = Tally::default();
    for (i, w) in windows.iter().enumerate() {
        let chunk = &ids[w.begin..w.begin + ctx];
        ref_session.reset();
        let ref_logits = ref_session.eval(chunk, true)?;
        for t in w.first..ctx {
            let r = (t - 1) * vocab..t * vocab;
            let row = &ref_logits[r.clone()];
            ref_nll[t] = log_sum_exp(row) - row[chunk[t] as usize] as f64;
            log_softmax(row, &mut ref_logp[r]);
        }
        session.reset();
        let logits = session.eval(chunk, true)?;
        for (t, &target) in chunk.iter().enumerate().skip(w.first) {
            let r = (t - 1) * vocab..t * vocab;
            tally.push(
                &ref_logp[r.clone()],
                ref_nll[t],
                &logits[r],
                target as usize,
                &mut scratch,
            );
        }
        progress(i + 1, windows.len());
    }
    Ok(tally.finish(windows.len()))
}

/// A reference model's log-probabilities at every scored position of a text, kept in memory
/// so that many models (calibration trials) can be compared against it without re-running it.
/// Holds `positions x vocab` f32 values: meant for short calibration texts.
pub struct ReferenceDistributions {
    ids: Vec<u32>,
    ctx: usize,
    windows: Vec<Window>,
    vocab: usize,
    logp: Vec<f32>,
    /// The reference's NLL of the true token at each position.
    nll: Vec<f64>,
}

impl ReferenceDistributions {
    /// Runs `reference` over `ids` (windows of `ctx` moving by `stride`).
    pub fn compute(
        reference: &Arc<Model>,
        ids: &[u32],
        ctx: usize,
        stride: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let vocab = reference.config.vocab;
        let windows = plan(ids.len(), ctx, stride)?;
        let mut logp = Vec::new();
        let mut nll = Vec::new();
        let mut row = vec![0f32; vocab];
        super::perplexity::for_each_scored(
            reference,
            ids,
            ctx,
            &windows,
            progress,
            &mut |w, t, logits| {
                nll.push(log_sum_exp(logits) - logits[ids[w.begin + t] as usize] as f64);
                log_softmax(logits, &mut row);
                logp.extend_from_slice(&row);
            },
        )?;
        Ok(ReferenceDistributions {
            ids: ids.to_vec(),
            ctx,
            windows,
            vocab,
            logp,
            nll,
        })
    }

    /// Scored positions.
    pub fn positions(&self) -> usize {
        self.logp.len() / self.vocab.max(1)
    }

    /// Compares `model` with the stored reference.
    pub fn compare(
        &self,
        model: &Arc<Model>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Divergence> {
        if model.config.vocab != self.vocab {
            return Err(Error::InvalidArgument(format!(
                "the models' vocabularies differ ({} and {} tokens)",
                model.config.vocab, self.vocab
            )));
        }
        let mut scratch = vec![0f32; self.vocab];
        let mut tally = Tally::default();
        let mut at = 0usize;
        let ids = &self.ids;
        super::perplexity::for_each_scored(
            model,
            ids,
            self.ctx,
            &self.windows,
            progress,
            &mut |w, t, logits| {
                let r = &self.logp[at * self.vocab..(at + 1) * self.vocab];
                let target = ids[w.begin + t] as usize;
                tally.push(r, self.nll[at], logits, target, &mut scratch);
                at += 1;
            },
        )?;
        Ok(tally.finish(self.windows.len()))
    }
}
