//! Perplexity over a token stream, the protocol the demo model's numbers use: non-overlapping
//! windows of `window` tokens (a partial last window is dropped), each evaluated alone from an
//! empty cache; the loss of tokens 1..window given the tokens before them in the window.

use std::sync::Arc;

use super::{Model, Session};
use crate::{Error, Result};

/// The result of [`perplexity`].
#[derive(Clone, Debug, PartialEq)]
pub struct Perplexity {
    pub perplexity: f64,
    pub mean_nll: f64,
    pub windows: usize,
    pub predictions: usize,
}

/// Perplexity of `model` on `ids`. `progress(done, total)` is called after each window.
pub fn perplexity(
    model: &Arc<Model>,
    ids: &[u32],
    window: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Perplexity> {
    if window < 2 {
        return Err(Error::InvalidArgument(
            "the window must hold at least 2 tokens".into(),
        ));
    }
    let windows = ids.len() / window;
    if windows == 0 {
        return Err(Error::InvalidArgument(format!(
            "{} tokens do not fill one window of {window}",
            ids.len()
        )));
    }
    let vocab = model.config.vocab;
    let mut session = Session::new(model.clone(), Some(window))?;
    let mut nll = 0f64;
    let mut predictions = 0usize;
    for w in 0..windows {
        let chunk = &ids[w * window..(w + 1) * window];
        session.reset();
        let logits = session.eval(chunk, true)?;
        for t in 0..window - 1 {
            let row = &logits[t * vocab..(t + 1) * vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let log_sum = row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln()
                + max;
            nll += log_sum - row[chunk[t + 1] as usize] as f64;
            predictions += 1;
        }
        progress(w + 1, windows);
    }
    let mean_nll = nll / predictions as f64;
    Ok(Perplexity {
        perplexity: mean_nll.exp(),
        mean_nll,
        windows,
        predictions,
    })
}
