//! Text ⇄ token ids, built on the Hugging Face `tokenizers` crate.
//!
//! A [`Tokenizer`] comes from a Hugging Face checkpoint directory ([`Tokenizer::from_hf_files`])
//! or from a GGUF file ([`Tokenizer::from_gguf`]): either the `tokenizer.json` text that
//! edgemoe's converter embeds (`tokenizer.huggingface.json`), or, for stock llama.cpp files,
//! a pipeline rebuilt from the `tokenizer.ggml.*` arrays that behaves like llama.cpp's own
//! BPE ("gpt2") and SentencePiece ("llama") tokenizers.
//!
//! [`StreamDecoder`] turns generated ids into text incrementally; the concatenation of what it
//! returns is exactly [`Tokenizer::decode`] of all the ids.

#![forbid(unsafe_code)]

mod gguf;
mod hf;
mod stream;

use std::fmt;
use std::sync::OnceLock;

use crate::format::GgufValue;
use crate::{Error, Result};

pub use stream::StreamDecoder;
use stream::{DecodeKind, Piece};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub(crate) mod token_type {
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const UNUSED: i64 = 5;
    pub const BYTE: i64 = 6;
}

/// Which llama.cpp tokenizer family a tokenizer behaves like (for `tokenizer.ggml.model`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    /// Byte-level BPE (`gpt2`).
    ByteLevelBpe,
    /// SentencePiece-style BPE with byte fallback (`llama`).
    SentencePiece,
    /// Anything else the `tokenizers` crate can run.
    Other,
}

/// Special ids and flags that do not live in the `tokenizers` pipeline itself.
#[derive(Clone, Debug, Default)]
struct Specials {
    bos: Option<u32>,
    eos: Vec<u32>,
    pad: Option<u32>,
    /// `None`: decided by what the post-processor does.
    add_bos: Option<bool>,
    add_eos: Option<bool>,
    chat_template: Option<String>,
}

/// Special tokens that end a chat turn in the templates of the families people run (as
/// llama.cpp's end-of-generation set has them): generation stops at them besides EOS.
pub const END_OF_TURN: [&str; 10] = [
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|return|>",
    "<|call|>",
    "<｜end▁of▁sentence｜>",
    "<|end_of_text|>",
];

/// `eos`, then each special (added, `special`) token of [`END_OF_TURN`] the vocabulary has.
fn end_of_generation(inner: &tokenizers::Tokenizer, eos: &[u32], vocab_size: usize) -> Vec<u32> {
    let mut eog = eos.to_vec();
    let mut extra: Vec<u32> = inner
        .get_added_tokens_decoder()
        .iter()
        .filter(|(&id, t)| {
            t.special && (id as usize) < vocab_size && END_OF_TURN.contains(&t.content.as_str())
        })
        .map(|(&id, _)| id)
        .collect();
    extra.sort_unstable();
    for id in extra {
        if !eog.contains(&id) {
            eog.push(id);
        }
    }
    eog
}

/// A model's tokenizer. Cheap to share between threads (`Send + Sync`).
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The same pipeline with special-token matching turned off, built on first use.
    literal: OnceLock<tokenizers::Tokenizer>,
    /// The `tokenizer.json` text this tokenizer was read from, kept verbatim for conversion.
    json: Option<String>,
    bos: Option<u32>,
    eos: Vec<u32>,
    /// `eos` and the special tokens that end a chat turn (see [`END_OF_TURN`]).
    eog: Vec<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// What the `tokenizers` post-processor adds by itself, so `encode` can correct it.
    post_adds_bos: bool,
    post_adds_eos: bool,
    chat_template: Option<String>,
    /// Number of ids the model knows (its logits width): at least the tokenizer's id range.
    vocab_size: usize,
    family: Family,
    kind: DecodeKind,
    /// Per-id decoded pieces for the decoders [`StreamDecoder`] knows (empty for the others).
    pieces: Vec<Piece>,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("family", &self.family)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish_non_exhaustive()
    }
}

/// A `tokenizers` pipeline from tokenizer.json text, checked to be JSON first: tokenizers
/// 0.22 panics (`expect("Helper")`) on malformed JSON inside `decoder` instead of failing.
fn parse_tokenizer_json(json: &str) -> std::result::Result<tokenizers::Tokenizer, String> {
    serde_json::from_str::<serde::de::IgnoredAny>(json).map_err(|e| e.to_string())?;
    json.parse::<tokenizers::Tokenizer>()
        .map_err(|e| e.to_string())
}

/// Token ids a tokenizer may use (ids 0 to 2^22 - 1).
const MAX_TOKEN_IDS: usize = 1 << 22;

fn tk_err(context: &str, e: impl fmt::Display) -> Error {
    Error::Tokenizer(format!("{context}: {e}"))
}

impl Tokenizer {
    /// Wraps a built `tokenizers` pipeline. `min_vocab` is the model's vocabulary size when
    /// known (e.g. config.json `vocab_size`), which may exceed the tokenizer's id range.
    fn assemble(
        inner: tokenizers::Tokenizer,
        json: Option<String>,
        specials: Specials,
        min_vocab: usize,
    ) -> Result<Self> {
        let id_range = id_range(&inner);
        // A table is kept per id below the largest: an id far beyond any real vocabulary
        // (the largest have some 260 thousand tokens) is a corrupt file, not an allocation.
        if id_range > MAX_TOKEN_IDS {
            return Err(Error::Tokenizer(format!(
                "token id {} is beyond the {MAX_TOKEN_IDS} ids supported",
                id_range - 1
            )));
        }
        let vocab_size = id_range.max(min_vocab);
        if vocab_size == 0 {
            return Err(Error::Tokenizer("the tokenizer has no tokens".into()));
        }
        let check = |what: &str, id: u32| {
            if (id as usize) < vocab_size {
                Ok(id)
            } else {
                Err(Error::Tokenizer(format!(
                    "{what} id {id} is outside the vocabulary of {vocab_size}"
                )))
            }
        };
        let bos = specials.bos.map(|b| check("BOS", b)).transpose()?;
        let pad = specials.pad.map(|p| check("padding", p)).transpose()?;
        let mut eos = Vec::with_capacity(specials.eos.len());
        for e in specials.eos {
            let e = check("EOS", e)?;
            if !eos.contains(&e) {
                eos.push(e);
            }
        }
        // What does the post-processor add on its own? Probe with the empty string.
        let probe = inner
            .encode_fast("", true)
            .map_err(|e| tk_err("encoding failed", e))?;
        let probe = probe.get_ids();
        let post_adds_bos = bos.is_some() && probe.first().copied() == bos;
        let post_adds_eos = !eos.is_empty()
            && probe.len() > usize::from(post_adds_bos)
            && probe.last().copied() == eos.first().copied();
        let add_bos = specials.add_bos.unwrap_or(post_adds_bos) && bos.is_some();
        let add_eos = specials.add_eos.unwrap_or(post_adds_eos) && !eos.is_empty();
        let kind = DecodeKind::classify(&inner);
        let family = match kind {
            DecodeKind::ByteLevel => Family::ByteLevelBpe,
            DecodeKind::Spm { .. } | DecodeKind::Metaspace { .. } => Family::SentencePiece,
            DecodeKind::Generic => Family::Other,
        };
        let pieces = kind.pieces(&inner, id_range);
        let eog = end_of_generation(&inner, &eos, vocab_size);
        Ok(Tokenizer {
            inner,
            literal: OnceLock::new(),
            json,
            bos,
            eos,
            eog,
            pad,
            add_bos,
            add_eos,
            post_adds_bos,
            post_adds_eos,
            chat_template: specials.chat_template,
            vocab_size,
            family,
            kind,
            pieces,
        })
    }

    /// Text to ids. With `add_bos`, special tokens are added as the model's own tokenizer
    /// adds them by default (BOS when the model uses one, EOS in the rare models that append
    /// it); without, the ids are the text alone. Special-token text such as `<|im_end|>` in
    /// `text` becomes the special token.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        self.encode_with(text, add_bos, true)
    }

    /// Like [`encode`](Self::encode); with `parse_special = false`, special-token text in
    /// `text` is tokenized as ordinary text (llama.cpp's `parse_special = false`).
    pub fn encode_with(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let tk = if parse_special {
            &self.inner
        } else {
            self.literal.get_or_init(|| {
                let mut t = self.inner.clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        let enc = tk
            .encode_fast(text, add_bos)
            .map_err(|e| tk_err("encoding failed", e))?;
        let mut ids = enc.get_ids().to_vec();
        if add_bos {
            // Make the result follow `add_bos`/`add_eos` whatever the post-processor did.
            match (self.add_bos, self.post_adds_bos) {
                (true, false) => ids.insert(0, self.bos.unwrap_or_default()),
                (false, true) if !ids.is_empty() => {
                    ids.remove(0);
                }
                _ => {}
            }
            match (self.add_eos, self.post_adds_eos) {
                (true, false) => ids.push(self.eos[0]),
                (false, true) => {
                    ids.pop();
                }
                _ => {}
            }
        }
        Ok(ids)
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            Some(id) => Err(Error::InvalidArgument(format!(
                "token id {id} is outside the vocabulary of {}",
                self.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// Ids to text, as Hugging Face's `tokenizer.decode(ids)` does by default: special tokens
    /// are kept, invalid UTF-8 becomes U+FFFD, ids the tokenizer has no token for (padding
    /// rows of a larger embedding) produce nothing. Ids ≥ [`vocab_size`](Self::vocab_size)
    /// are an [`Error::InvalidArgument`].
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        self.inner
            .decode(ids, false)
            .map_err(|e| tk_err("decoding failed", e))
    }

    /// The raw bytes token `id` stands for in output (may be part of a UTF-8 character):
    /// byte-level BPE tokens are mapped back to bytes, SentencePiece `▁` becomes a space and
    /// `<0xNN>` the byte. Special tokens give their text; ids without a token give nothing.
    pub fn token_to_piece(&self, id: u32) -> Result<Vec<u8>> {
        self.check_ids(&[id])?;
        if self.kind == DecodeKind::Generic {
            return Ok(self.decode(&[id])?.into_bytes());
        }
        Ok(match self.pieces.get(id as usize) {
            Some(Piece::Byte(b)) => vec![*b],
            Some(Piece::Text(t)) => self.kind.piece_bytes(t),
            Some(Piece::Missing) | None => Vec::new(),
        })
    }

    /// The token's string as the vocabulary spells it (`Ġthe`, `▁the`, `<0x0A>`), if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a token string (as the vocabulary spells it), if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The BOS id, when the model has one (whether or not [`encode`](Self::encode) adds it).
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// Every id that ends generation (the first is the model's main EOS).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// Whether `id` is one of the model's EOS ids ([`Tokenizer::eos_ids`]).
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    /// Every id that ends generation: the EOS ids, then the special tokens that end a chat
    /// turn (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<|return|>`, ...; llama.cpp's
    /// end-of-generation set).
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation ([`Tokenizer::eog_ids`]); generation stops at it.
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// The padding id, if any.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `encode(text, true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// The chat template (Jinja source) shipped with the tokenizer, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Number of ids: the model's vocabulary (logits width) when known, at least the
    /// tokenizer's own id range.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// GGUF metadata describing this tokenizer, as edgemoe's converter writes it:
    /// `tokenizer.huggingface.json` (the tokenizer.json text) plus the `tokenizer.ggml.*`
    /// ids and flags, `edgemoe.eos_token_ids`, the chat template, and a llama.cpp-style
    /// token list for inspection tools.
    pub fn gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        // Serialising a pipeline this module built cannot fail in practice; if it did, the
        // file would carry the llama.cpp-style keys only.
        let json = match &self.json {
            Some(j) => Some(j.clone()),
            None => self.inner.to_string(false).ok(),
        };
        let mut m: Vec<(String, GgufValue)> = Vec::new();
        let mut put = |k: &str, v: GgufValue| m.push((k.to_string(), v));
        let model = match self.family {
            Family::SentencePiece => "llama",
            Family::ByteLevelBpe | Family::Other => "gpt2",
        };
        if self.family != Family::Other {
            put("tokenizer.ggml.model", GgufValue::String(model.into()));
            let (tokens, types) = self.token_table();
            put("tokenizer.ggml.tokens", GgufValue::string_array(tokens));
            put("tokenizer.ggml.token_type", GgufValue::i32_array(types));
        }
        if let Some(json) = json {
            put("tokenizer.huggingface.json", GgufValue::String(json));
        }
        if let Some(b) = self.bos {
            put("tokenizer.ggml.bos_token_id", GgufValue::U32(b));
        }
        if let Some(&e) = self.eos.first() {
            put("tokenizer.ggml.eos_token_id", GgufValue::U32(e));
            put(
                "edgemoe.eos_token_ids",
                GgufValue::i32_array(self.eos.iter().map(|&e| e as i32)),
            );
        }
        if let Some(p) = self.pad {
            put("tokenizer.ggml.padding_token_id", GgufValue::U32(p));
        }
        put(
            "tokenizer.ggml.add_bos_token",
            GgufValue::Bool(self.add_bos),
        );
        put(
            "tokenizer.ggml.add_eos_token",
            GgufValue::Bool(self.add_eos),
        );
        if let Some(t) = &self.chat_template {
            put("tokenizer.chat_template", GgufValue::String(t.clone()));
        }
        m
    }

    /// Token strings and llama.cpp token types for ids `0..vocab_size`.
    fn token_table(&self) -> (Vec<String>, Vec<i32>) {
        let added = self.inner.get_added_tokens_decoder();
        let byte_fallback = self.family == Family::SentencePiece;
        let mut tokens = Vec::with_capacity(self.vocab_size);
        let mut types = Vec::with_capacity(self.vocab_size);
        for id in 0..self.vocab_size as u32 {
            let (tok, ty) = match (added.get(&id), self.inner.id_to_token(id)) {
                (Some(a), _) if a.special => (a.content.clone(), token_type::CONTROL),
                (Some(a), _) => (a.content.clone(), token_type::USER_DEFINED),
                (None, Some(t)) if byte_fallback && stream::byte_token(&t).is_some() => {
                    (t, token_type::BYTE)
                }
                (None, Some(t)) => (t, token_type::NORMAL),
                (None, None) => (format!("[PAD{id}]"), token_type::UNUSED),
            };
            tokens.push(tok);
            types.push(ty as i32);
        }
        (tokens, types)
    }
}

/// One past the largest id the pipeline has a token for.
fn id_range(inner: &tokenizers::Tokenizer) -> usize {
    let model = inner.get_vocab(false).values().copied().max();
    let added = inner.get_added_tokens_decoder().keys().copied().max();
    model.max(added).map_or(0, |m| m as usize + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Tokenizer>();
        check::<StreamDecoder>();
    }
}
