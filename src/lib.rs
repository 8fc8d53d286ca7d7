//! edgemoe: run Mixture-of-Experts language models on devices whose memory is
//! smaller than the model.
//!
//! Non-expert weights stay resident; experts are reached only through an
//! [`expert::ExpertSource`], so the engine never assumes that every expert is in
//! memory. See `docs/architecture.md` for the architecture.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod capi;
pub mod chat;
pub mod convert;
pub mod engine;
pub mod error;
pub mod expert;
pub mod format;
pub mod quant;
pub mod sampling;
pub mod stream;
pub mod sys;
pub mod tensor;
pub mod tokenizer;

pub use error::{Error, Result};
