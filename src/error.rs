//! The crate's typed error. Every failure a user can cause (a bad file, a bad
//! argument, an I/O error) is one of these, never a panic.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// Errors returned by edgemoe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error, with the file it concerns when known.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model file that is truncated, corrupt or not what it claims to be.
    #[error("invalid model file {path}: {reason}")]
    InvalidFile { path: PathBuf, reason: String },
    /// A model whose architecture or shape edgemoe does not support.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// Wrong shapes or types between tensors.
    #[error("shape error: {0}")]
    Shape(String),
    /// A caller passed an invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Tokenizer construction or use failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The context window is full.
    #[error("context full: {needed} tokens needed, {capacity} available")]
    ContextFull { needed: usize, capacity: usize },
    /// The memory budget cannot hold what the model needs to run.
    #[error("memory budget of {budget} bytes is too small: this model needs at least {needed} bytes ({detail})")]
    BudgetTooSmall {
        budget: u64,
        needed: u64,
        detail: String,
    },
    /// The operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corrupt-file error on `path`.
    pub fn invalid_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::InvalidFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
