//! Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded.
//!
//! The order is llama.cpp's common default chain: repetition penalty, top-k, top-p, min-p,
//! temperature, then a draw from the remaining distribution with a ChaCha8 generator seeded
//! from [`SamplerParams::seed`]. [`StopStrings`] watches generated text for stop strings.

#![forbid(unsafe_code)]

mod stop;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

pub use stop::{StopOutcome, StopStrings};

/// How to pick the next token. The default is greedy (argmax).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerParams {
    /// Softmax temperature; 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 = off.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 = off.
    pub min_p: f32,
    /// Repetition penalty (CTRL / llama.cpp style: positive logits divided, negative ones
    /// multiplied); 1 = off.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at; 0 = off.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl SamplerParams {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!(
                "temperature {} is not a finite value ≥ 0",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p {} is not in (0, 1]", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p {} is not in [0, 1]", self.min_p));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad(format!(
                "repeat_penalty {} is not a finite value > 0",
                self.repeat_penalty
            ));
        }
        Ok(())
    }

    /// Whether sampling is plain argmax over (penalised) logits.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Picks tokens from logits. Holds its scratch buffers, so after the first call of a given
/// vocabulary size `sample` does not allocate.
#[derive(Clone, Debug)]
pub struct Sampler {
    params: SamplerParams,
    rng: ChaCha8Rng,
    /// Penalised logits (NaN replaced by -inf).
    work: Vec<f32>,
    /// Candidates (logit, id) still in the running.
    cand: Vec<(f32, u32)>,
    /// One bit per id: already penalised in this call.
    seen: Vec<u64>,
}

/// Candidate order: higher logit first, ties to the lower id.
fn by_logit_desc(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl Sampler {
    /// A sampler with `params` (checked: [`Error::InvalidArgument`] when out of range).
    pub fn new(params: SamplerParams) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
            work: Vec::new(),
            cand: Vec::new(),
            seen: Vec::new(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// Restarts the random sequence from the seed.
    pub fn reset(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(self.params.seed);
    }

    /// Picks the next token from `logits` (one per vocabulary id), given the tokens so far
    /// (`history`, used by the repetition penalty). NaN logits count as -inf. With empty
    /// logits, or when every logit is -inf/NaN, returns the lowest id (0).
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        self.work.clear();
        self.work.extend(
            logits
                .iter()
                .map(|&l| if l.is_nan() { f32::NEG_INFINITY } else { l }),
        );
        self.penalize(history);
        if self.params.is_greedy() {
            return argmax(&self.work);
        }

        self.cand.clear();
        self.cand.extend(
            self.work
                .iter()
                .enumerate()
                .filter(|(_, &l)| l > f32::NEG_INFINITY)
                .map(|(i, &l)| (l, i as u32)),
        );
        if self.cand.is_empty() {
            return 0;
        }
        let p = &self.params;
        // top-k
        if p.top_k > 0 && p.top_k < self.cand.len() {
            self.cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            self.cand.truncate(p.top_k);
        }
        // top-p: needs the candidates sorted, and their probabilities at temperature 1.
        if p.top_p < 1.0 {
            self.cand.sort_unstable_by(by_logit_desc);
            let max = self.cand[0].0;
            let total: f64 = self.cand.iter().map(|c| f64::from(c.0 - max).exp()).sum();
            let mut cum = 0.0;
            let mut keep = self.cand.len();
            for (i, c) in self.cand.iter().enumerate() {
                cum += f64::from(c.0 - max).exp() / total;
                if cum >= f64::from(p.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            self.cand.truncate(keep.max(1));
        }
        // min-p: p_i ≥ min_p · p_max  ⇔  logit_i ≥ max_logit + ln(min_p).
        if p.min_p > 0.0 {
            let max = self
                .cand
                .iter()
                .map(|c| c.0)
                .fold(f32::NEG_INFINITY, f32::max);
            let threshold = max + p.min_p.ln();
            self.cand.retain(|c| c.0 >= threshold);
        }
        // temperature, softmax, draw.
        let inv_t = 1.0 / f64::from(p.temperature);
        let max = self
            .cand
            .iter()
            .map(|c| c.0)
            .fold(f32::NEG_INFINITY, f32::max);
        let total: f64 = self
            .cand
            .iter()
            .map(|c| (f64::from(c.0 - max) * inv_t).exp())
            .sum();
        let r: f64 = self.rng.random::<f64>() * total;
        let mut cum = 0.0;
        for c in &self.cand {
            cum += (f64::from(c.0 - max) * inv_t).exp();
            if r < cum {
                return c.1;
            }
        }
        // Rounding left r at the very top: the last candidate.
        self.cand.last().map_or(0, |c| c.1)
    }

    /// Applies the repetition penalty once to each distinct id among the last
    /// `repeat_last_n` tokens of `history`.
    fn penalize(&mut self, history: &[u32]) {
        let p = &self.params;
        if p.repeat_penalty == 1.0 || p.repeat_last_n == 0 || history.is_empty() {
            return;
        }
        let n = self.work.len();
        let words = n.div_ceil(64);
        if self.seen.len() < words {
            self.seen.resize(words, 0);
        }
        let recent = &history[history.len().saturating_sub(p.repeat_last_n)..];
        for &id in recent {
            let i = id as usize;
            if i >= n {
                continue;
            }
            let (w, bit) = (i / 64, 1u64 << (i % 64));
            if self.seen[w] & bit != 0 {
                continue;
            }
            self.seen[w] |= bit;
            let l = &mut self.work[i];
            if *l <= 0.0 {
                *l *= p.repeat_penalty;
            } else {
                *l /= p.repeat_penalty;
            }
        }
        // Clear only the bits set above.
        for &id in recent {
            if (id as usize) < n {
                self.seen[id as usize / 64] = 0;
            }
        }
    }
}

/// Index of the largest value, ties to the lowest index; 0 for an empty slice.
fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &x) in v.iter().enumerate() {
        if x > best_v {
            best = i;
            best_v = x;
        }
    }
    best as u32
}
