//! Chat templates: render a model's Jinja chat template (or a caller's) with a conversation,
//! as transformers' `apply_chat_template(tokenize=False)` does, byte for byte.
//!
//! Templates come from a GGUF header ([`ChatTemplate::from_gguf`]), an HF checkpoint
//! ([`ChatTemplate::from_tokenizer_config`], [`ChatTemplate::from_hf_dir`]) or a string
//! ([`ChatTemplate::new`]). Rendering runs under [`Limits`] (fuel, output size, recursion), so
//! a template that loops, recurses or grows without end returns a [`TemplateError`].
//!
//! ```
//! use edgemoe::chat::{ChatTemplate, Message, RenderOptions};
//! let t = ChatTemplate::new(
//!     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
//!      {% if add_generation_prompt %}<|assistant|>{% endif %}",
//! )
//! .unwrap();
//! let prompt = t
//!     .render(&[Message::new("user", "Hi")], &RenderOptions::new().generation_prompt(true))
//!     .unwrap();
//! assert_eq!(prompt, "<|user|>Hi\n<|assistant|>");
//! ```

#![forbid(unsafe_code)]

mod env;
mod error;
mod python;
mod source;
mod time;

use std::io::{self, Write};

use minijinja::value::Value;
use minijinja::{Environment, ErrorKind};

pub use error::TemplateError;
pub use source::{gguf_template_names, SpecialTokens};

/// One message of a conversation. `role` is usually `system`, `user`, `assistant` or `tool`;
/// templates decide which they accept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// What bounds one render. A render past any bound stops with a [`TemplateError`].
///
/// Not bounded: the size of a string the template builds without printing it. minijinja caps
/// `'x' * n` at 100 MB, but a loop that doubles a string with `~` or `+` some 30 times
/// exhausts memory within its fuel. Render templates from untrusted sources in a process that
/// may fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Template instructions one render may run (minijinja fuel).
    pub fuel: u64,
    /// Bytes the rendered text may have.
    pub max_output: usize,
    /// Nesting depth of macros, loops and conditions (capped by minijinja at 500).
    pub recursion: usize,
}

impl Default for Limits {
    /// 5 million instructions (a 1000-turn conversation takes under 100 thousand with the
    /// templates of tests/fixtures/chat; an endless loop stops in under a second), 1 MiB of
    /// output, recursion 200.
    fn default() -> Self {
        Limits {
            fuel: 5_000_000,
            max_output: 1 << 20,
            recursion: 200,
        }
    }
}

/// The variables of a render besides the messages.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// End the prompt with the header of an assistant reply.
    pub add_generation_prompt: bool,
    /// `bos_token` as the template sees it (e.g. `<s>`); undefined when `None`.
    pub bos_token: Option<String>,
    /// `eos_token` as the template sees it (e.g. `</s>`); undefined when `None`.
    pub eos_token: Option<String>,
    /// `tools`: a JSON array of tool definitions; `None` when the template gets `tools=None`.
    pub tools_json: Option<String>,
    /// More variables as one JSON object, e.g. `{"enable_thinking": false}`. They cannot
    /// replace `messages`; a `tools`, `add_generation_prompt` or `bos_token` given here wins
    /// over the field of the same meaning.
    pub extra_json: Option<String>,
    /// The time `strftime_now` reports, in seconds since the Unix epoch (UTC); `None`: now.
    pub now: Option<i64>,
}

impl RenderOptions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn generation_prompt(mut self, on: bool) -> Self {
        self.add_generation_prompt = on;
        self
    }

    pub fn special_tokens(mut self, tokens: &SpecialTokens) -> Self {
        self.bos_token = tokens.bos.clone();
        self.eos_token = tokens.eos.clone();
        self
    }

    pub fn tools(mut self, json: impl Into<String>) -> Self {
        self.tools_json = Some(json.into());
        self
    }

    pub fn extra(mut self, json: impl Into<String>) -> Self {
        self.extra_json = Some(json.into());
        self
    }
}

/// A parsed chat template, ready to render any number of times (from any thread).
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    limits: Limits,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source_len", &self.source.len())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Parses a Jinja chat template with the default [`Limits`].
    pub fn new(source: impl Into<String>) -> Result<Self, TemplateError> {
        Self::with_limits(source, Limits::default())
    }

    /// Parses a Jinja chat template; renders run under `limits`.
    pub fn with_limits(source: impl Into<String>, limits: Limits) -> Result<Self, TemplateError> {
        let source = source.into();
        let env = env::build(source.clone(), &limits)
            .map_err(|e| TemplateError::Syntax(error::describe(&e)))?;
        Ok(ChatTemplate {
            env,
            source,
            limits,
        })
    }

    /// The template's Jinja text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The limits renders run under.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Renders `messages` (plain role/content pairs).
    pub fn render(
        &self,
        messages: &[Message],
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        self.render_value(Value::from_serialize(messages), options)
    }

    /// Renders messages given as a JSON array of objects, for messages with more fields than
    /// role and content (`tool_calls`, `reasoning_content`, `name`, content parts, ...).
    /// Key order is kept, as Python keeps it.
    pub fn render_json(
        &self,
        messages_json: &str,
        options: &RenderOptions,
    ) -> Result<String, TemplateError> {
        let messages = parse_json("messages", messages_json)?;
        if messages.kind() != minijinja::value::ValueKind::Seq {
            return Err(TemplateError::InvalidVariables(
                "messages must be a JSON array".into(),
            ));
        }
        self.render_value(messages, options)
    }

    fn render_value(&self, messages: Value, o: &RenderOptions) -> Result<String, TemplateError> {
        let ctx = context(messages, o)?;
        let template = self
            .env
            .get_template(env::TEMPLATE_NAME)
            .map_err(|e| TemplateError::Render(error::describe(&e)))?;
        let mut out = LimitedWriter::new(self.limits.max_output);
        let result = time::with_clock(o.now, || template.render_captured_to(ctx, &mut out));
        match result {
            Ok(_) => String::from_utf8(out.buf)
                .map_err(|_| TemplateError::Render("the output is not UTF-8".into())),
            Err(_) if out.overflowed => Err(TemplateError::OutputTooLarge {
                limit: self.limits.max_output,
            }),
            Err(e) => Err(classify(&e, &self.limits)),
        }
    }
}

/// Parses JSON into a template value, keeping object key order.
fn parse_json(what: &str, json: &str) -> Result<Value, TemplateError> {
    serde_json::from_str::<Value>(json)
        .map_err(|e| TemplateError::InvalidVariables(format!("{what}: {e}")))
}

/// The render's variables: transformers passes `messages`, `tools`, `documents`,
/// `add_generation_prompt`, the special tokens and the caller's extra arguments.
fn context(messages: Value, o: &RenderOptions) -> Result<Value, TemplateError> {
    let mut vars: Vec<(String, Value)> = Vec::new();
    if let Some(json) = &o.extra_json {
        let extra = parse_json("extra variables", json)?;
        if extra.kind() != minijinja::value::ValueKind::Map {
            return Err(TemplateError::InvalidVariables(
                "extra variables must be a JSON object".into(),
            ));
        }
        for key in extra
            .try_iter()
            .map_err(|e| TemplateError::InvalidVariables(e.to_string()))?
        {
            let name = key.as_str().unwrap_or_default().to_string();
            if name == "messages" {
                return Err(TemplateError::InvalidVariables(
                    "extra variables cannot replace `messages`".into(),
                ));
            }
            let value = extra.get_item(&key).unwrap_or_default();
            vars.push((name, value));
        }
    }
    let tools = match &o.tools_json {
        Some(json) => parse_json("tools", json)?,
        None => Value::from(()),
    };
    let mut set = |name: &str, value: Value| {
        if !vars.iter().any(|(k, _)| k == name) {
            vars.push((name.to_string(), value));
        }
    };
    set("tools", tools);
    set("documents", Value::from(()));
    set(
        "add_generation_prompt",
        Value::from(o.add_generation_prompt),
    );
    if let Some(bos) = &o.bos_token {
        set("bos_token", Value::from(bos.as_str()));
    }
    if let Some(eos) = &o.eos_token {
        set("eos_token", Value::from(eos.as_str()));
    }
    vars.push(("messages".into(), messages));
    Ok(Value::from_iter(vars))
}

/// Maps a failed render to its typed error.
fn classify(e: &minijinja::Error, limits: &Limits) -> TemplateError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(raised) = s.downcast_ref::<env::Raised>() {
            return TemplateError::Raised(raised.0.clone());
        }
        source = s.source();
    }
    match e.kind() {
        ErrorKind::OutOfFuel => TemplateError::OutOfFuel { fuel: limits.fuel },
        ErrorKind::SyntaxError => TemplateError::Syntax(error::describe(e)),
        ErrorKind::InvalidOperation
            if e.detail().is_some_and(|d| d.contains("recursion limit")) =>
        {
            TemplateError::RecursionLimit
        }
        _ => TemplateError::Render(error::describe(e)),
    }
}

/// A writer that refuses to grow past `limit` bytes.
struct LimitedWriter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl LimitedWriter {
    fn new(limit: usize) -> Self {
        LimitedWriter {
            buf: Vec::new(),
            limit,
            overflowed: false,
        }
    }
}

impl Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len().saturating_add(data.len()) > self.limit {
            self.overflowed = true;
            return Err(io::Error::other("output limit exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
