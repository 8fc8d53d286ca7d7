//! Perplexity over a token stream with a sliding window.
//!
//! Windows of `ctx` tokens start at `0, stride, 2*stride, ...`; only full windows are used (a
//! partial last window is dropped). Each window is evaluated alone from an empty cache, no BOS.
//! The first window scores its tokens `1..ctx` (each given the tokens before it in the window);
//! every later window scores only the tokens past the end of the previous one, so each token is
//! scored once, with at least `ctx - stride` tokens of context (the Hugging Face "perplexity of
//! fixed-length models" protocol). `stride == ctx` is the demo model's protocol:
//! non-overlapping windows, `ctx - 1` predictions each.

use std::sync::Arc;

use super::{Model, Session};
use crate::{Error, Result};

/// One window of a [`plan`]: `ids[begin..begin + ctx]`, scoring positions `first..ctx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub begin: usize,
    /// Position (within the window) of the first scored token; at least 1.
    pub first: usize,
}

/// The windows that score `n_tokens` tokens with `ctx` tokens of context, moving by `stride`.
pub fn plan(n_tokens: usize, ctx: usize, stride: usize) -> Result<Vec<Window>> {
    if ctx < 2 {
        return Err(Error::InvalidArgument(
            "the window must hold at least 2 tokens".into(),
        ));
    }
    if stride == 0 || stride > ctx {
        return Err(Error::InvalidArgument(format!(
            "the stride must be between 1 and the window ({ctx}), not {stride}"
        )));
    }
    if n_tokens < ctx {
        return Err(Error::InvalidArgument(format!(
            "{n_tokens} tokens do not fill one window of {ctx}"
        )));
    }
    let mut out = Vec::new();
    let mut begin = 0;
    while begin + ctx <= n_tokens {
        // The previous window ended at begin - stride + ctx; position 0 has no prediction.
        let first = if begin == 0 { 1 } else { (ctx - stride).max(1) };
        out.push(Window { begin, first });
        begin += stride;
    }
    Ok(out)
}

/// Runs `model` over every window of `windows` and calls `score(window, position, logits)` for
/// each scored position: `logits` predicts token `ids[window.begin + position]`.
/// `progress(done, total)` is called after each window.
pub fn for_each_scored(
    model: &Arc<Model>,
    ids: &[u32],
    ctx: usize,
    windows: &[Window],
    progress: &mut dyn FnMut(usize, usize),
    score: &mut dyn FnMut(&Window, usize, &[f32]),
) -> Result<()> {
    for_each_scored_with(model, ids, ctx, windows, false, progress, score)
}

/// [`for_each_scored`], evaluating each window one token at a time when `token_by_token`
/// (as decoding does; the logits are bit-identical to a batch, but per-token decisions such
/// as lower precision on a miss see one token at a time).
pub fn for_each_scored_with(
    model: &Arc<Model>,
    ids: &[u32],
    ctx: usize,
    windows: &[Window],
    token_by_token: bool,
    progress: &mut dyn FnMut(usize, usize),
    score: &mut dyn FnMut(&Window, usize, &[f32]),
) -> Result<()> {
    let vocab = model.config.vocab;
    let mut session = Session::new(model.clone(), Some(ctx))?;
    for (i, w) in windows.iter().enumerate() {
        let chunk = ids.get(w.begin..w.begin + ctx).ok_or_else(|| {
            Error::InvalidArgument(format!("window at {} runs past the tokens", w.begin))
        })?;
        session.reset();
        if token_by_token {
            // Token t - 1's logits predict token t.
            for t in 1..ctx {
                let logits = session.eval(&chunk[t - 1..t], false)?;
                if t >= w.first {
                    score(w, t, logits);
                }
            }
        } else {
            let logits = session.eval(chunk, true)?;
            for t in w.first..ctx {
                score(w, t, &logits[(t - 1) * vocab..t * vocab]);
            }
        }
        progress(i + 1, windows.len());
    }
    Ok(())
}

/// `log(sum(exp(row)))`, computed stably in f64.
pub fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    row.iter()
        .map(|&v| (v as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max
}

/// Mean and standard error of the mean of a stream of values (Welford's method).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MeanAccumulator {
    n: usize,
    mean: f64,
    m2: f64,
}

impl MeanAccumulator {
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    pub fn count(&self) -> usize {
        self.n
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    /// Standard error of the mean (sample standard deviation / sqrt(n)); 0 below 2 values.
    pub fn std_error(&self) -> f64 {
        if self.n < 2 {
            return 0.0;
        }
        (self.m2 / (self.n - 1) as f64 / self.n as f64).sqrt()
    }
}

/// The result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    pub perplexity: f64,
    /// Standard error of the perplexity: that of the mean NLL, propagated through `exp`.
    pub perplexity_std_error: f64,
    pub mean_nll: f64,
    /// Standard error of the mean NLL (tokens treated as independent).
    pub nll_std_error: f64,
    pub windows: usize,
    pub predictions: usize,
}

impl Perplexity {
    /// The perplexity of the NLLs in `acc`, measured over `windows` windows.
    pub(crate) fn from_nll(acc: &MeanAccumulator, windows: usize) -> Self {
        let ppl = acc.mean().exp();
        Perplexity {
            perplexity: ppl,
            perplexity_std_error: ppl * acc.std_error(),
            mean_nll: acc.mean(),
            nll_std_error: acc.std_error(),
            windows,
            predictions: acc.count(),
        }
    }
}

/// Perplexity of `model` on `ids` with windows of `ctx` tokens moving by `stride` (see the
/// module docs). `progress(done, total)` is called after each window.
pub fn perplexity(
    model: &Arc<Model>,
    ids: &[u32],
    ctx: usize,
    stride: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    perplexity_with(model, ids, ctx, stride, false, progress)
}

/// [`perplexity`], evaluating token by token when `token_by_token` (see
/// [`for_each_scored_with`]).
pub fn perplexity_with(
    model: &Arc<Model>,
    ids: &[u32],
    ctx: usize,
    stride: usize,
    token_by_token: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    let windows = plan(ids.len(), ctx, stride)?;
    let mut acc = MeanAccumulator::default();
    let score = &mut |w: &Window, t: usize, row: &[f32]| {
        acc.push(log_sum_exp(row) - row[ids[w.begin + t] as usize] as f64);
    };
    for_each_scored_with(model, ids, ctx, &windows, token_by_token, progress, score)?;
    Ok(Perplexity::from_nll(&acc, windows.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_overlapping_windows_score_all_but_their_first_token() {
        let w = plan(10, 4, 4).unwrap();
        let want = [(0, 1), (4, 1)].map(|(begin, first)| Window { begin, first });
        assert_eq!(w, want);
    }

    #[test]
    fn strided_windows_score_each_token_once() {
        let (n, ctx, stride) = (50, 8, 3);
        let windows = plan(n, ctx, stride).unwrap();
        let mut scored = Vec::new();
        for w in &windows {
            scored.extend((w.first..ctx).map(|t| w.begin + t));
        }
        let last = windows.last().unwrap().begin + ctx;
        assert_eq!(scored, (1..last).collect::<Vec<_>>());
        assert!(plan(5, 8, 3).is_err());
        assert!(plan(50, 8, 0).is_err());
        assert!(plan(50, 8, 9).is_err());
    }

    #[test]
    fn standard_error_of_the_mean() {
        let mut a = MeanAccumulator::default();
        for x in [1.0, 2.0, 3.0, 4.0] {
            a.push(x);
        }
        assert!((a.mean() - 2.5).abs() < 1e-12);
        // sample sd = sqrt(5/3); se = sd / 2
        assert!((a.std_error() - (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
    }
}
