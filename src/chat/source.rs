//! Where chat templates come from: a GGUF header (`tokenizer.chat_template`, named ones as
//! `tokenizer.chat_template.<name>`), an HF `tokenizer_config.json` (`chat_template` as a
//! string or a list of `{name, template}`), or a `chat_template.jinja` file. Also the special
//! token strings (`bos_token`, `eos_token`) the templates print.

use std::path::Path;

use serde_json::Value as Json;

use super::{ChatTemplate, Limits, TemplateError};
use crate::engine::Model;
use crate::format::{GgufFile, GgufValue};
use crate::tokenizer::Tokenizer;

const GGUF_KEY: &str = "tokenizer.chat_template";

/// The names of the named templates a GGUF file carries (`tokenizer.chat_templates`, or the
/// `tokenizer.chat_template.<name>` keys when that list is absent). The default template
/// (`tokenizer.chat_template`) is not among them.
pub fn gguf_template_names(file: &GgufFile) -> Vec<String> {
    if let Some(list) = file
        .get("tokenizer.chat_templates")
        .and_then(GgufValue::as_array)
    {
        return list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    let prefix = format!("{GGUF_KEY}.");
    file.header
        .metadata
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// A named template of tokenizer_config.json's list form; `None` picks `default`, then the
/// first entry.
fn pick_named<'a>(list: &'a [Json], name: Option<&str>) -> Result<&'a str, TemplateError> {
    let find = |n: &str| {
        list.iter()
            .find(|t| t["name"] == n)
            .and_then(|t| t["template"].as_str())
    };
    let found = match name {
        Some(n) => find(n),
        None => find("default").or_else(|| list.first().and_then(|t| t["template"].as_str())),
    };
    found.ok_or_else(|| match name {
        Some(n) => TemplateError::Missing(format!("no template named `{n}`")),
        None => TemplateError::InvalidSource("`chat_template` is an empty list".into()),
    })
}

impl ChatTemplate {
    /// The template of a GGUF file: `tokenizer.chat_template`, or with `name` the named
    /// template `tokenizer.chat_template.<name>` (`name` "default" is the default one).
    pub fn from_gguf(file: &GgufFile, name: Option<&str>) -> Result<Self, TemplateError> {
        let key = match name {
            None | Some("default") => GGUF_KEY.to_string(),
            Some(n) => format!("{GGUF_KEY}.{n}"),
        };
        match file.get(&key) {
            None => Err(TemplateError::Missing(format!(
                "{} has no `{key}`",
                file.path.display()
            ))),
            Some(v) => match v.as_str() {
                Some(s) => Self::new(s),
                None => Err(TemplateError::InvalidSource(format!(
                    "`{key}` is not a string"
                ))),
            },
        }
    }

    /// The template in the text of a `tokenizer_config.json`: `chat_template` as a string, or
    /// the entry called `name` (default: `default`, else the first) of its list form.
    pub fn from_tokenizer_config(json: &str, name: Option<&str>) -> Result<Self, TemplateError> {
        let cfg: Json = serde_json::from_str(json)
            .map_err(|e| TemplateError::InvalidSource(format!("tokenizer_config.json: {e}")))?;
        match &cfg["chat_template"] {
            Json::Null => Err(TemplateError::Missing(
                "tokenizer_config.json has no `chat_template`".into(),
            )),
            Json::String(s) if name.is_none() || name == Some("default") => Self::new(s.as_str()),
            Json::String(_) => Err(TemplateError::Missing(format!(
                "no template named `{}`",
                name.unwrap_or_default()
            ))),
            Json::Array(list) => Self::new(pick_named(list, name)?),
            _ => Err(TemplateError::InvalidSource(
                "`chat_template` is neither a string nor a list".into(),
            )),
        }
    }

    /// The template of an HF checkpoint directory: `chat_template.jinja` when present (as
    /// transformers prefers it), else tokenizer_config.json's `chat_template`.
    pub fn from_hf_dir(dir: &Path, name: Option<&str>) -> Result<Self, TemplateError> {
        let jinja = dir.join("chat_template.jinja");
        if name.is_none() && jinja.is_file() {
            return Self::from_file(&jinja);
        }
        let cfg = dir.join("tokenizer_config.json");
        let text = std::fs::read_to_string(&cfg)
            .map_err(|e| TemplateError::Missing(format!("{}: {e}", cfg.display())))?;
        Self::from_tokenizer_config(&text, name)
    }

    /// A template file (e.g. `chat_template.jinja`).
    pub fn from_file(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TemplateError::Missing(format!("{}: {e}", path.display())))?;
        Self::new(text)
    }

    /// A loaded model's template: the GGUF header's (`name` as in [`Self::from_gguf`]), else
    /// the one its tokenizer carries.
    pub fn from_model(model: &Model, name: Option<&str>) -> Result<Self, TemplateError> {
        match Self::from_gguf(&model.file, name) {
            Err(TemplateError::Missing(why)) if name.is_none() => {
                match model.tokenizer().ok().and_then(Tokenizer::chat_template) {
                    Some(t) => Self::new(t),
                    None => Err(TemplateError::Missing(why)),
                }
            }
            other => other,
        }
    }

    /// The same template with other limits.
    pub fn limited(self, limits: Limits) -> Result<Self, TemplateError> {
        Self::with_limits(self.source, limits)
    }
}

/// The special-token strings templates print as `bos_token` and `eos_token`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<String>,
    pub eos: Option<String>,
}

impl SpecialTokens {
    /// From a model's tokenizer: the text of its BOS id and of its first EOS id.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> Self {
        SpecialTokens {
            bos: tokenizer.bos_id().and_then(|id| tokenizer.id_to_token(id)),
            eos: tokenizer
                .eos_ids()
                .first()
                .and_then(|&id| tokenizer.id_to_token(id)),
        }
    }

    /// A loaded model's: from its tokenizer, else from its GGUF header's keys.
    pub fn from_model(model: &Model) -> Self {
        match model.tokenizer() {
            Ok(t) => Self::from_tokenizer(t),
            Err(_) => Self::from_gguf(&model.file),
        }
    }

    /// From a GGUF header: the BOS/EOS ids of llama.cpp's keys, read in
    /// `tokenizer.ggml.tokens` or else in the embedded `tokenizer.huggingface.json`.
    pub fn from_gguf(file: &GgufFile) -> Self {
        let id = |key: &str| usize::try_from(file.get(key)?.as_i64()?).ok();
        let (bos, eos) = (
            id("tokenizer.ggml.bos_token_id"),
            id("tokenizer.ggml.eos_token_id"),
        );
        if let Some(tokens) = file
            .get("tokenizer.ggml.tokens")
            .and_then(GgufValue::as_array)
        {
            let text = |id: Option<usize>| tokens.get(id?)?.as_str().map(str::to_string);
            return SpecialTokens {
                bos: text(bos),
                eos: text(eos),
            };
        }
        let json = file
            .get("tokenizer.huggingface.json")
            .and_then(GgufValue::as_str)
            .and_then(|s| serde_json::from_str::<Json>(s).ok())
            .unwrap_or_default();
        SpecialTokens {
            bos: bos.and_then(|i| hf_token_text(&json, i)),
            eos: eos.and_then(|i| hf_token_text(&json, i)),
        }
    }

    /// From the text of a `tokenizer_config.json` (`bos_token`/`eos_token`, as a string or an
    /// added-token object with `content`).
    pub fn from_tokenizer_config(json: &str) -> Self {
        let cfg: Json = serde_json::from_str(json).unwrap_or_default();
        let text = |v: &Json| match v {
            Json::String(s) => Some(s.clone()),
            Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
            _ => None,
        };
        SpecialTokens {
            bos: text(&cfg["bos_token"]),
            eos: text(&cfg["eos_token"]),
        }
    }
}

/// The text of token `id` in a `tokenizer.json`: an added token, else a vocabulary entry.
fn hf_token_text(json: &Json, id: usize) -> Option<String> {
    let added = json["added_tokens"].as_array().and_then(|list| {
        list.iter()
            .find(|t| t["id"].as_u64() == Some(id as u64))
            .and_then(|t| t["content"].as_str())
    });
    let vocab = || {
        json["model"]["vocab"].as_object().and_then(|v| {
            v.iter()
                .find(|(_, i)| i.as_u64() == Some(id as u64))
                .map(|(k, _)| k.as_str())
        })
    };
    added.or_else(vocab).map(str::to_string)
}
