//! The typed errors of chat-template loading and rendering.

/// Why a chat template could not be loaded or rendered. Never a panic, never a hang: a render
/// that loops, recurses too deep or writes too much stops with one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The model or file carries no chat template (or none of the requested name).
    #[error("no chat template: {0}")]
    Missing(String),
    /// A `tokenizer_config.json` or GGUF entry that should hold a template does not.
    #[error("invalid chat template source: {0}")]
    InvalidSource(String),
    /// The template does not parse.
    #[error("chat template syntax error: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)`; the message is kept.
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    /// The render used up its fuel (a loop that does not end, or far too much work).
    #[error("chat template render stopped: it used more than {fuel} instructions")]
    OutOfFuel { fuel: u64 },
    /// The rendered text grew past the output limit.
    #[error("chat template render stopped: the output exceeds {limit} bytes")]
    OutputTooLarge { limit: usize },
    /// Macros or blocks nested deeper than the recursion limit.
    #[error("chat template render stopped: recursion limit exceeded")]
    RecursionLimit,
    /// The extra variables or messages given to the render are not valid (bad JSON, not an
    /// object, a reserved name).
    #[error("invalid chat template variables: {0}")]
    InvalidVariables(String),
    /// Any other failure during the render (an undefined method, a type error, ...).
    #[error("chat template render failed: {0}")]
    Render(String),
}

impl From<TemplateError> for crate::Error {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::Missing(_) => crate::Error::Unsupported(e.to_string()),
            _ => crate::Error::InvalidArgument(e.to_string()),
        }
    }
}

/// The message of a minijinja error with its cause chain, on one line.
pub(crate) fn describe(e: &minijinja::Error) -> String {
    let mut text = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        text.push_str(&format!(" (line {line})"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
