//! The generation loop: prompt, sample, stream text, stop.

use std::time::Instant;

use super::session::Session;
use crate::sampling::{Sampler, SamplerParams, StopStrings};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::{Error, Result};

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateParams {
    /// Most new tokens.
    pub max_tokens: usize,
    pub sampler: SamplerParams,
    /// Generation stops before any of these strings would be emitted.
    pub stop: Vec<String>,
    /// Whether to add the model's BOS token before the prompt (when it uses one).
    pub add_bos: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampler: SamplerParams::default(),
            stop: Vec::new(),
            add_bos: true,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndOfSequence,
    MaxTokens,
    StopString,
    ContextFull,
    /// The text callback asked to stop.
    Callback,
}

/// Figures of one generation.
#[derive(Clone, Debug)]
pub struct GenerateStats {
    pub prompt_tokens: usize,
    pub prompt_seconds: f64,
    pub generated_tokens: usize,
    pub decode_seconds: f64,
    pub stop_reason: StopReason,
}

impl GenerateStats {
    pub fn prompt_tokens_per_second(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_seconds.max(1e-9)
    }

    pub fn decode_tokens_per_second(&self) -> f64 {
        self.generated_tokens as f64 / self.decode_seconds.max(1e-9)
    }
}

/// Generates a continuation of `prompt` after what `session` already holds, passing text to
/// `on_text` as it is produced (always whole UTF-8 characters); `on_text` returns `false` to stop.
pub fn generate(
    session: &mut Session,
    tokenizer: &Tokenizer,
    prompt: &str,
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<GenerateStats> {
    let ids = tokenizer.encode(prompt, params.add_bos)?;
    generate_ids(session, tokenizer, &ids, params, on_text, &mut Vec::new())
}

/// [`generate`] from prompt token ids; the sampled tokens are appended to `generated` (the
/// session's cache then holds `ids` and all of `generated` but possibly its last token, up to
/// [`Session::position`]).
pub fn generate_ids(
    session: &mut Session,
    tokenizer: &Tokenizer,
    ids: &[u32],
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> bool,
    generated_ids: &mut Vec<u32>,
) -> Result<GenerateStats> {
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    let mut sampler = Sampler::new(params.sampler.clone())?;
    let mut history: Vec<u32> = ids.to_vec();
    let start = Instant::now();
    let mut next = sampler.sample(session.eval(ids, false)?, &history);
    let prompt_seconds = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut decoder = StreamDecoder::default();
    let mut filter = StopStrings::new(params.stop.iter().cloned());
    let mut generated = 0;
    let stop_reason = loop {
        if tokenizer.is_eog(next) {
            break StopReason::EndOfSequence;
        }
        generated += 1;
        history.push(next);
        generated_ids.push(next);
        let text = decoder.push(tokenizer, next)?;
        let out = filter.push(&text);
        if !out.emit.is_empty() && !on_text(&out.emit) {
            break StopReason::Callback;
        }
        if out.stop.is_some() {
            break StopReason::StopString;
        }
        if generated >= params.max_tokens {
            break StopReason::MaxTokens;
        }
        if session.position() >= session.capacity() {
            break StopReason::ContextFull;
        }
        next = sampler.sample(session.eval(&[next], false)?, &history);
    };
    if stop_reason != StopReason::StopString && stop_reason != StopReason::Callback {
        let rest = filter.push(&decoder.finish()).emit + &filter.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
    }
    Ok(GenerateStats {
        prompt_tokens: ids.len(),
        prompt_seconds,
        generated_tokens: generated,
        decode_seconds: decode_start.elapsed().as_secs_f64(),
        stop_reason,
    })
}
