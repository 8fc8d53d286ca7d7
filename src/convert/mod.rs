//! `edgemoe convert`: writes edgemoe's packed GGUF layout from a Hugging Face checkpoint or a
//! stock llama.cpp GGUF.
//!
//! The layout: `general.alignment = 4096`; every non-expert tensor first (the part that stays
//! resident), then for each layer and expert the three matrices `blk.L.ffn_{gate,up,down}.E`
//! back to back, so one aligned read returns a whole expert. With a low-precision type
//! ([`ConvertOptions::low_expert_type`]), a second copy of every expert follows, packed the
//! same way under `blk.L.ffn_{gate,up,down}.E.low.weight`, its type in
//! `edgemoe.low_precision.type` (read on a cache miss: lower precision on a miss, HOBBIT).

// `deny`, not `forbid`, here and in from_hf/mod.rs: a `forbid` would reach every submodule,
// and the checkpoint reader (from_hf/checkpoint.rs) maps safetensors shards with the module's
// one allowed `unsafe`. Every other file forbids unsafe code.
#![deny(unsafe_code)]

pub mod calibrate;
pub mod expert_types;
mod from_gguf;
mod from_hf;
mod progress;
pub mod random;
mod tensor_types;
mod write;

use std::path::Path;

pub use progress::{Progress, ProgressFn, ProgressUnit};
pub use tensor_types::{glob_match, ATTENTION_PATTERN, EXPERT_PATTERN};

use crate::engine::ModelConfig;
use crate::format::GgufValue;
use crate::tensor::GgmlType;
use crate::Result;
use write::write;

/// Alignment of edgemoe files: a page, and a multiple of every O_DIRECT block size.
pub const ALIGNMENT: u32 = 4096;

/// What `convert` writes.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Type of matrices (attention, embeddings, experts). Norms, biases and routers stay f32.
    /// `None` keeps the source's type when converting a GGUF and means f16 for checkpoints.
    pub matrix_type: Option<GgmlType>,
    /// Overrides for expert matrices: `expert_types[layer][expert]`.
    pub expert_types: Option<Vec<Vec<GgmlType>>>,
    /// Types by tensor name: `(glob, type)` pairs matched against the names written (the
    /// packed layout's: `blk.0.attn_q.weight`, `blk.0.ffn_gate.3.weight`, `output.weight`).
    /// `*` matches any run of characters, `?` one. The last matching pair wins; they apply to
    /// matrices (not norms, biases or routers) and yield to `expert_types`. A pattern that
    /// matches no matrix is an error (a typo would otherwise go unnoticed).
    pub overrides: Vec<(String, GgmlType)>,
    /// Also store every expert at this (lower) type, after the experts at their own type:
    /// the copies lower precision on a miss reads. Encoded from the source values, not from
    /// the first copy. Every expert row must be a whole number of its blocks.
    pub low_expert_type: Option<GgmlType>,
    /// Receives progress reports (stage `writing tensors`, in bytes, the tensor in hand as the
    /// item). `None` (the default): silent.
    pub progress: Option<ProgressFn>,
}

/// What a conversion wrote.
#[derive(Clone, Debug)]
pub struct ConvertReport {
    pub config: ModelConfig,
    pub tensors: usize,
    pub bytes_written: u64,
    pub expert_bytes: u64,
    /// Bytes of the low-precision expert copies (0 without them).
    pub low_expert_bytes: u64,
    /// Tensors written as f16 instead of the type asked for, because their rows are not a
    /// whole number of that type's blocks (e.g. K-quants need rows of 256k elements).
    pub fallbacks: Vec<Fallback>,
}

/// A tensor stored as another type than the one asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    pub tensor: String,
    pub wanted: GgmlType,
    pub written: GgmlType,
    pub row_len: u64,
}

/// The role of a tensor, which decides the type it is stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Norm weights, biases, routers: always f32.
    Small,
    /// Attention and embedding matrices.
    Matrix,
    /// An expert matrix of (layer, expert).
    Expert(usize, usize),
}

/// A tensor to write, with the function that produces its values as f32 (row-major,
/// `dims[0]` fastest), or its bytes already in the target type.
struct Planned<'a> {
    name: String,
    dims: Vec<u64>,
    role: Role,
    source_type: GgmlType,
    produce: Box<dyn Fn() -> Result<Payload> + 'a>,
}

enum Payload {
    F32(Vec<f32>),
    /// Bytes already encoded as `Planned::source_type`.
    Raw(Vec<u8>),
}

/// Converts `input` (a Hugging Face checkpoint directory or a GGUF file) to `output`.
pub fn convert(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<ConvertReport> {
    convert_with_metadata(input, output, opts, Vec::new())
}

/// [`convert`] with each expert at the type `table` gives it; the table (with its tolerance
/// and calibration notes) is stored in the output's `edgemoe.bitwidth.*` metadata.
pub fn convert_with_expert_types(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    table: &expert_types::ExpertTypes,
) -> Result<ConvertReport> {
    let opts = ConvertOptions {
        expert_types: Some(table.layers.clone()),
        ..opts.clone()
    };
    convert_with_metadata(input, output, &opts, table.gguf_metadata())
}

/// [`convert`], adding `extra` to the output's metadata.
fn convert_with_metadata(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    extra: Vec<(String, GgufValue)>,
) -> Result<ConvertReport> {
    if input.is_dir() {
        from_hf::convert(input, output, opts, extra)
    } else {
        from_gguf::convert(input, output, opts, extra)
    }
}
