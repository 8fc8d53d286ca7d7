//! Loading a tokenizer from a Hugging Face checkpoint directory.

use std::path::Path;

use serde_json::Value;

use super::{Specials, Tokenizer};
use crate::{Error, Result};

/// Reads a JSON file, `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| Error::invalid_file(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// An id from a JSON value that is an integer (or, with `list`, the first of a list).
fn ids_of(v: &Value) -> Vec<u32> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Value::Array(items) => items.iter().flat_map(ids_of).collect(),
        _ => Vec::new(),
    }
}

/// A special-token entry of tokenizer_config.json: a string or `{"content": ...}`.
fn token_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// The chat template of tokenizer_config.json: a string, or a list of named templates.
fn chat_template_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t["name"] == name)
                    .and_then(|t| t["template"].as_str())
            };
            named("default")
                .or_else(|| list.first().and_then(|t| t["template"].as_str()))
                .map(str::to_string)
        }
        _ => None,
    }
}

impl Tokenizer {
    /// Loads the tokenizer of a Hugging Face checkpoint directory: `tokenizer.json`, plus
    /// `tokenizer_config.json` (special tokens, `add_bos_token`, chat template),
    /// `generation_config.json` (EOS ids, possibly several) and `config.json` (vocabulary
    /// size, fallback ids) when present. A `chat_template.jinja` file is used when the
    /// config has no template.
    pub fn from_hf_files(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        let json = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let inner = super::parse_tokenizer_json(&json)
            .map_err(|e| Error::invalid_file(&path, format!("cannot load tokenizer: {e}")))?;
        let tcfg = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let gcfg = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let mcfg = read_json(&dir.join("config.json"))?.unwrap_or(Value::Null);
        // Multimodal configs keep the language model's settings under `text_config`.
        let text_cfg = |key: &str| {
            let v = &mcfg[key];
            if v.is_null() {
                &mcfg["text_config"][key]
            } else {
                v
            }
        };
        let named = |key: &str| -> Result<Option<u32>> {
            match token_text(&tcfg[key]) {
                None => Ok(None),
                Some(t) => inner.token_to_id(t).map(Some).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "tokenizer_config.json {key} `{t}` is not a token of tokenizer.json"
                    ))
                }),
            }
        };
        let first = |v: &Value| ids_of(v).first().copied();

        let bos = named("bos_token")?
            .or_else(|| first(&gcfg["bos_token_id"]))
            .or_else(|| first(text_cfg("bos_token_id")));
        // EOS: everything generation stops at; generation_config's list first.
        let mut eos = ids_of(&gcfg["eos_token_id"]);
        eos.extend(named("eos_token")?);
        eos.extend(ids_of(text_cfg("eos_token_id")));
        let pad = named("pad_token")?
            .or_else(|| first(&gcfg["pad_token_id"]))
            .or_else(|| first(text_cfg("pad_token_id")));
        let mut chat_template = chat_template_of(&tcfg["chat_template"]);
        if chat_template.is_none() {
            let p = dir.join("chat_template.jinja");
            match std::fs::read_to_string(&p) {
                Ok(t) => chat_template = Some(t),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
        let specials = Specials {
            bos,
            eos,
            pad,
            add_bos: tcfg["add_bos_token"].as_bool(),
            add_eos: tcfg["add_eos_token"].as_bool(),
            chat_template,
        };
        let min_vocab = text_cfg("vocab_size").as_u64().unwrap_or(0) as usize;
        Tokenizer::assemble(inner, Some(json), specials, min_vocab)
    }
}
