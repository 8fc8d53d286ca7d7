//! Loading a tokenizer from GGUF metadata: the embedded `tokenizer.json` when edgemoe's
//! converter wrote one, otherwise a `tokenizers` pipeline rebuilt from llama.cpp's
//! `tokenizer.ggml.*` arrays that behaves like llama.cpp's tokenizers.

use serde_json::json;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper};

use super::token_type as tt;
use super::{Specials, Tokenizer};
use crate::format::{GgufFile, GgufValue};
use crate::{Error, Result};

/// Typed access to the tokenizer keys of one GGUF file; every malformed value is an
/// [`Error::InvalidFile`] naming the key.
struct Meta<'a> {
    file: &'a GgufFile,
}

impl<'a> Meta<'a> {
    fn bad(&self, key: &str, what: impl std::fmt::Display) -> Error {
        Error::invalid_file(&self.file.path, format!("`{key}` {what}"))
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.bad(key, "is not a string")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.bad(key, "is not a bool")),
        }
    }

    fn id(&self, key: &str) -> Result<Option<u32>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => match v.as_i64() {
                // llama.cpp writes -1 (as a signed value) for "none".
                Some(-1) => Ok(None),
                Some(i) => u32::try_from(i)
                    .map(Some)
                    .map_err(|_| self.bad(key, format!("is not a token id ({i})"))),
                None => Err(self.bad(key, "is not an integer")),
            },
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [GgufValue]>> {
        match self.file.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| self.bad(key, "is not an array")),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| self.bad(key, format!("item {i} is not a string")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn numbers<T>(
        &self,
        key: &str,
        conv: impl Fn(&GgufValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| conv(v).ok_or_else(|| self.bad(key, format!("item {i} is not a number"))))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// A per-token array that must have one entry per token.
    fn per_token<T>(
        &self,
        key: &str,
        n: usize,
        conv: impl Fn(&GgufValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>> {
        let v = self.numbers(key, conv)?;
        if let Some(v) = &v {
            if v.len() != n {
                return Err(self.bad(key, format!("has {} entries for {n} tokens", v.len())));
            }
        }
        Ok(v)
    }
}

/// Pre-tokenizer regexes (applied one after another, as llama.cpp's `unicode_regex_split`)
/// and whether to NFC-normalise, per `tokenizer.ggml.pre`, following llama.cpp's
/// `llama-vocab.cpp`. The case-insensitive contractions are spelt out as llama.cpp does.
fn bpe_pre(pre: &str) -> Option<(&'static [&'static str], bool, bool)> {
    const GPT2: &str =
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const STARCODER: &[&str] = &[
        r"\p{N}",
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    ];
    const DEFAULT: &[&str] = &[
        r"[\p{P}\$\+<=>\^~\|]+",
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
        r"\p{N}+",
        r"[0-9][0-9][0-9]",
    ];
    const DEEPSEEK3: &[&str] = &[
        r"\p{N}{1,3}",
        r"[一-龥぀-ゟ゠-ヿ]+",
        r"[!\x22#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ];
    // (regexes, NFC, ignore_merges)
    Some(match pre {
        "default" => (DEFAULT, false, false),
        "gpt-2" | "gpt2" | "phi-2" | "mpt" | "jais" | "roberta-bpe" | "trillion" => {
            (&[GPT2], false, false)
        }
        // OLMo's tokenizer (GPT-NeoX) normalises to NFC before the GPT-2 split.
        "olmo" => (&[GPT2], true, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "dbrx" | "smaug-bpe" => {
            (&[LLAMA3], false, true)
        }
        // Qwen's tokenizers normalise to NFC.
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => (&[QWEN2], true, false),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" => {
            (STARCODER, false, false)
        }
        "deepseek-v3" => (DEEPSEEK3, false, false),
        _ => return None,
    })
}

impl Tokenizer {
    /// Loads the tokenizer of a GGUF file. When `tokenizer.huggingface.json` is present (as
    /// edgemoe's converter writes it) it is used with the `tokenizer.ggml.*` ids and flags.
    /// Otherwise the tokenizer is rebuilt from llama.cpp's arrays: `gpt2` (byte-level BPE
    /// from tokens + merges, pre-tokenizer per `tokenizer.ggml.pre`) or `llama`
    /// (SentencePiece BPE from tokens + scores, with byte fallback).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let m = Meta { file };
        let arch = m.str("general.architecture")?.unwrap_or("");
        // The model's vocabulary size: the logits width may exceed the tokenizer's.
        let mut min_vocab = file
            .get(&format!("{arch}.vocab_size"))
            .and_then(GgufValue::as_u64)
            .unwrap_or(0) as usize;
        if let Some(t) = file.tensor("token_embd.weight") {
            min_vocab = min_vocab.max(t.dims.get(1).copied().unwrap_or(0) as usize);
        }
        if let Some(n) = m.array("tokenizer.ggml.tokens")?.map(<[_]>::len) {
            min_vocab = min_vocab.max(n);
        }

        let mut eos: Vec<u32> = match m.numbers("edgemoe.eos_token_ids", GgufValue::as_u64)? {
            Some(ids) => ids
                .into_iter()
                .map(|i| {
                    u32::try_from(i).map_err(|_| m.bad("edgemoe.eos_token_ids", "holds a bad id"))
                })
                .collect::<Result<_>>()?,
            None => Vec::new(),
        };
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            eos.extend(m.id(key)?);
        }
        let mut specials = Specials {
            bos: m.id("tokenizer.ggml.bos_token_id")?,
            eos,
            pad: m.id("tokenizer.ggml.padding_token_id")?,
            add_bos: m.bool("tokenizer.ggml.add_bos_token")?,
            add_eos: m.bool("tokenizer.ggml.add_eos_token")?,
            chat_template: m.str("tokenizer.chat_template")?.map(str::to_string),
        };

        if let Some(json) = m.str("tokenizer.huggingface.json")? {
            let inner = super::parse_tokenizer_json(json).map_err(|e| {
                m.bad(
                    "tokenizer.huggingface.json",
                    format!("cannot be loaded: {e}"),
                )
            })?;
            return Tokenizer::assemble(inner, Some(json.to_string()), specials, min_vocab);
        }

        let model = m.str("tokenizer.ggml.model")?.ok_or_else(|| {
            Error::Tokenizer(format!(
                "{} has no tokenizer (neither tokenizer.huggingface.json nor tokenizer.ggml.model)",
                file.path.display()
            ))
        })?;
        let inner = match model {
            "gpt2" => {
                // llama.cpp never adds BOS to BPE vocabularies unless told to.
                specials.add_bos = Some(specials.add_bos.unwrap_or(false));
                build_bpe(&m)?
            }
            "llama" => {
                specials.add_bos = Some(specials.add_bos.unwrap_or(true));
                build_spm(&m)?
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "GGUF tokenizer model `{other}` (supported: gpt2, llama, or an embedded tokenizer.huggingface.json)"
                )))
            }
        };
        Tokenizer::assemble(inner, None, specials, min_vocab)
    }
}

/// Tokens, types and the vocabulary map shared by both builders.
struct Vocabulary<'a> {
    tokens: Vec<&'a str>,
    types: Vec<i64>,
    /// Token string → id over the tokens that can appear (all but UNUSED); a repeated
    /// string keeps its first id, as llama.cpp's map does.
    vocab: Vocab,
}

fn vocabulary<'a>(m: &Meta<'a>) -> Result<Vocabulary<'a>> {
    let key = "tokenizer.ggml.tokens";
    let tokens = m.strings(key)?.ok_or_else(|| m.bad(key, "is missing"))?;
    if tokens.is_empty() {
        return Err(m.bad(key, "is empty"));
    }
    if u32::try_from(tokens.len()).is_err() {
        return Err(m.bad(key, "has too many tokens"));
    }
    let types = m
        .per_token("tokenizer.ggml.token_type", tokens.len(), GgufValue::as_i64)?
        .unwrap_or_else(|| vec![tt::NORMAL; tokens.len()]);
    let mut vocab = Vocab::default();
    for (id, (&t, &ty)) in tokens.iter().zip(&types).enumerate() {
        if ty != tt::UNUSED && !t.is_empty() {
            vocab.entry(t.to_string()).or_insert(id as u32);
        }
    }
    for key in [
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        if let Some(id) = m.id(key)? {
            if id as usize >= tokens.len() {
                return Err(m.bad(key, format!("is {id}, past the {} tokens", tokens.len())));
            }
        }
    }
    Ok(Vocabulary {
        tokens,
        types,
        vocab,
    })
}

/// Control and unknown tokens become special added tokens, user-defined ones plain added
/// tokens, so that their text is matched in the input as llama.cpp does.
fn added_tokens(tk: &mut tokenizers::Tokenizer, v: &Vocabulary<'_>) {
    let mut special = Vec::new();
    let mut plain = Vec::new();
    for (id, (&t, &ty)) in v.tokens.iter().zip(&v.types).enumerate() {
        // Only the id the vocabulary map resolves the string to can be added.
        if t.is_empty() || v.vocab.get(t) != Some(&(id as u32)) {
            continue;
        }
        match ty {
            tt::CONTROL | tt::UNKNOWN => special.push(AddedToken::from(t, true).normalized(false)),
            tt::USER_DEFINED => plain.push(AddedToken::from(t, false).normalized(false)),
            _ => {}
        }
    }
    tk.add_special_tokens(&special);
    tk.add_tokens(&plain);
}

fn component<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Tokenizer(format!("building the tokenizer: {e}")))
}

/// Byte-level BPE (`tokenizer.ggml.model = gpt2`).
fn build_bpe(m: &Meta<'_>) -> Result<tokenizers::Tokenizer> {
    let v = vocabulary(m)?;
    let pre = m.str("tokenizer.ggml.pre")?.unwrap_or("default");
    let (regexes, nfc, ignore_merges) = bpe_pre(pre).ok_or_else(|| {
        Error::Unsupported(format!(
            "GGUF BPE pre-tokenizer `{pre}` (tokenizer.ggml.pre)"
        ))
    })?;
    let key = "tokenizer.ggml.merges";
    let merges = m.strings(key)?.ok_or_else(|| m.bad(key, "is missing"))?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // llama.cpp splits at the first space after the first character.
            let at = s
                .char_indices()
                .skip(1)
                .find(|&(_, c)| c == ' ')
                .map(|(at, _)| at)
                .ok_or_else(|| m.bad(key, format!("item {i} `{s}` is not two tokens")))?;
            Ok((s[..at].to_string(), s[at + 1..].to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(v.vocab.clone(), merges)
        .ignore_merges(ignore_merges)
        .build()
        .map_err(|e| m.bad(key, format!("do not fit the tokens: {e}")))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    if nfc {
        tk.with_normalizer(Some(component::<NormalizerWrapper>(
            json!({"type": "NFC"}),
        )?));
    }
    let mut steps: Vec<serde_json::Value> = regexes
        .iter()
        .map(|r| json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false}))
        .collect();
    steps.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}));
    tk.with_pre_tokenizer(Some(component::<PreTokenizerWrapper>(
        json!({"type": "Sequence", "pretokenizers": steps}),
    )?));
    tk.with_decoder(Some(component::<DecoderWrapper>(json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false
    }))?));
    added_tokens(&mut tk, &v);
    Ok(tk)
}

/// BPE merges of a SentencePiece vocabulary, as transformers' SentencePiece converter
/// derives them: every split of a token into two tokens is a merge, ranked by the merged
/// token's score (higher first; ties keep id order).
fn spm_merges(v: &Vocabulary<'_>, scores: &[f32]) -> Vec<(String, String)> {
    let mut merges: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, &piece) in v.tokens.iter().enumerate() {
        if v.vocab.get(piece) != Some(&(id as u32)) {
            continue;
        }
        let start = merges.len();
        for (at, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(at);
            if let (Some(&li), Some(&ri)) = (v.vocab.get(l), v.vocab.get(r)) {
                merges.push((scores[id], li, ri, id as u32));
            }
        }
        merges[start..].sort_by_key(|&(_, l, r, _)| (l, r));
    }
    // Stable: equal scores keep token order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, l, r, _)| {
            (
                v.tokens[l as usize].to_string(),
                v.tokens[r as usize].to_string(),
            )
        })
        .collect()
}

/// SentencePiece BPE (`tokenizer.ggml.model = llama`) with byte fallback, behaving like
/// llama.cpp's SPM tokenizer: a `▁` is put before every stretch of text (at the start and
/// after each special token) unless `tokenizer.ggml.add_space_prefix` is false.
fn build_spm(m: &Meta<'_>) -> Result<tokenizers::Tokenizer> {
    let v = vocabulary(m)?;
    let scores = m
        .per_token("tokenizer.ggml.scores", v.tokens.len(), |x| {
            x.as_f64().map(|f| f as f32)
        })?
        .unwrap_or_else(|| vec![0.0; v.tokens.len()]);
    let merges = spm_merges(&v, &scores);
    let unk = v
        .tokens
        .iter()
        .zip(&v.types)
        .find(|&(_, &ty)| ty == tt::UNKNOWN)
        .map(|(&t, _)| t.to_string());
    let mut builder = BPE::builder()
        .vocab_and_merges(v.vocab.clone(), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|e| {
        m.bad(
            "tokenizer.ggml.tokens",
            format!("do not form a vocabulary: {e}"),
        )
    })?;
    let space_prefix = m.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
    let mut tk = tokenizers::Tokenizer::new(bpe);
    // The normaliser runs on each stretch of text between special tokens, so the prefix
    // goes before each, as in llama.cpp (and unlike Metaspace, also before a leading space).
    let mut norm = Vec::new();
    if space_prefix {
        norm.push(json!({"type": "Prepend", "prepend": "▁"}));
    }
    norm.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
    tk.with_normalizer(Some(component::<NormalizerWrapper>(
        json!({"type": "Sequence", "normalizers": norm}),
    )?));
    let mut dec = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        dec.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    tk.with_decoder(Some(component::<DecoderWrapper>(
        json!({"type": "Sequence", "decoders": dec}),
    )?));
    added_tokens(&mut tk, &v);
    Ok(tk)
}
