//! `edgemoe convert`: writes edgemoe's packed GGUF layout from a Hugging Face checkpoint or a
//! stock llama.cpp GGUF.
//!
//! The layout: `general.alignment = 4096`; every non-expert tensor first (the part that stays
//! resident), then for each layer and expert the three matrices `blk.L.ffn_{gate,up,down}.E`
//! back to back, so one aligned read returns a whole expert. With a low-precision type
//! ([`ConvertOptions::low_expert_type`]), a second copy of every expert follows, packed the
//! same way under `blk.L.ffn_{gate,up,down}.E.low.weight`, its type in
//! `edgemoe.low_precision.type` (read on a cache miss: lower precision on a miss, HOBBIT).

pub mod calibrate;
pub mod expert_types;
mod from_gguf;
mod from_hf;
mod progress;
pub mod random;

use std::path::Path;

use progress::Stage;
pub use progress::{Progress, ProgressFn, ProgressUnit};

use crate::engine::config::FORMAT_VERSION;
use crate::engine::ModelConfig;
use crate::format::{GgufValue, GgufWriter, TensorSpec};
use crate::tensor::GgmlType;
use crate::{Error, Result};

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

/// Pattern for `--expert-type`: every routed expert matrix of the packed layout.
pub const EXPERT_PATTERN: &str = "blk.*.ffn_*.*.weight";
/// Pattern for `--attn-type`: every attention matrix.
pub const ATTENTION_PATTERN: &str = "blk.*.attn_*";

/// Whether `name` matches the glob `pattern` (`*`: any run of characters, `?`: one).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and how much of `name` it has taken so far.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The type a tensor of `role` is stored as, falling back to a float type when its rows are
/// not a whole number of quantisation blocks.
fn target_type(
    name: &str,
    role: Role,
    dims: &[u64],
    opts: &ConvertOptions,
    keep_source: GgmlType,
) -> GgmlType {
    let Some(wanted) = wanted_type(name, role, opts, keep_source) else {
        return GgmlType::F32;
    };
    if dims[0] % wanted.block_len() as u64 != 0 {
        GgmlType::F16
    } else {
        wanted
    }
}

/// The type asked for a tensor of `role`, before any fallback; `None` for small tensors
/// (always f32).
fn wanted_type(
    name: &str,
    role: Role,
    opts: &ConvertOptions,
    keep_source: GgmlType,
) -> Option<GgmlType> {
    let by_name = || {
        opts.overrides
            .iter()
            .rev()
            .find(|(p, _)| glob_match(p, name))
            .map(|&(_, t)| t)
    };
    Some(match role {
        Role::Small => return None,
        Role::Matrix => by_name().or(opts.matrix_type).unwrap_or(keep_source),
        // A per-expert table is more specific than a name pattern.
        Role::Expert(l, e) => opts
            .expert_types
            .as_ref()
            .and_then(|t| t.get(l).and_then(|r| r.get(e)).copied())
            .or_else(by_name)
            .or(opts.matrix_type)
            .unwrap_or(keep_source),
    })
}

/// Writes the planned tensors with `metadata` (the model config's keys are added here).
fn write(
    output: &Path,
    config: &ModelConfig,
    mut metadata: Vec<(String, GgufValue)>,
    plan: Vec<Planned<'_>>,
    opts: &ConvertOptions,
    keep_source: bool,
) -> Result<ConvertReport> {
    let mut meta = config.gguf_metadata();
    meta.push(("general.alignment".into(), GgufValue::U32(ALIGNMENT)));
    meta.push((
        "edgemoe.format_version".into(),
        GgufValue::U32(FORMAT_VERSION),
    ));
    if let Some(table) = &opts.expert_types {
        let table = expert_types::ExpertTypes {
            layers: table.clone(),
            tolerance: None,
            calibration: None,
        };
        table.check_shape(config.n_layers, config.n_experts)?;
        // The caller's notes (tolerance, calibration), if any, come with `metadata`.
        if !metadata.iter().any(|(k, _)| k == "edgemoe.bitwidth.format") {
            metadata.extend(table.gguf_metadata());
        }
    }
    metadata.retain(|(k, _)| !meta.iter().any(|(m, _)| m == k));
    meta.extend(metadata);
    for (pattern, _) in &opts.overrides {
        let used = plan
            .iter()
            .any(|p| p.role != Role::Small && glob_match(pattern, &p.name));
        if !used {
            return Err(Error::InvalidArgument(format!(
                "type override `{pattern}` matches no weight matrix (names look like blk.0.attn_q.weight, blk.0.ffn_up.3.weight, output.weight)"
            )));
        }
    }
    let types: Vec<GgmlType> = plan
        .iter()
        .map(|p| {
            let keep = if keep_source {
                p.source_type
            } else {
                GgmlType::F16
            };
            target_type(&p.name, p.role, &p.dims, opts, keep)
        })
        .collect();
    let fallbacks: Vec<Fallback> = plan
        .iter()
        .zip(&types)
        .filter_map(|(p, &written)| {
            let keep = if keep_source {
                p.source_type
            } else {
                GgmlType::F16
            };
            let wanted = wanted_type(&p.name, p.role, opts, keep)?;
            (wanted != written).then(|| Fallback {
                tensor: p.name.clone(),
                wanted,
                written,
                row_len: p.dims[0],
            })
        })
        .collect();
    let mut specs: Vec<TensorSpec> = plan
        .iter()
        .zip(&types)
        .map(|(p, &ty)| TensorSpec {
            name: p.name.clone(),
            dims: p.dims.clone(),
            ty,
        })
        .collect();
    // The low-precision copies: (index of the expert matrix in `plan`, its type), written
    // after everything else in the same layer/expert order, so each copy is one read too.
    let mut low_copies: Vec<(usize, GgmlType)> = Vec::new();
    if let Some(low) = opts.low_expert_type {
        for (i, p) in plan.iter().enumerate() {
            let Role::Expert(l, e) = p.role else {
                continue;
            };
            if p.dims[0] % low.block_len() as u64 != 0 {
                return Err(Error::InvalidArgument(format!(
                    "low-precision type {low} needs rows of a multiple of {} values; `{}` has rows of {}",
                    low.block_len(),
                    p.name,
                    p.dims[0]
                )));
            }
            let kind = p
                .name
                .split('.')
                .nth(2)
                .and_then(|k| k.strip_prefix("ffn_"))
                .ok_or_else(|| Error::Shape(format!("unexpected expert name `{}`", p.name)))?;
            specs.push(TensorSpec {
                name: crate::engine::experts::low_precision_name(l, kind, e),
                dims: p.dims.clone(),
                ty: low,
            });
            low_copies.push((i, low));
        }
        meta.retain(|(k, _)| k != crate::engine::experts::LOW_PRECISION_TYPE_KEY);
        meta.push((
            crate::engine::experts::LOW_PRECISION_TYPE_KEY.into(),
            GgufValue::U32(low as u32),
        ));
    }
    let mut total = 0u64;
    let mut expert_bytes = 0u64;
    let mut low_expert_bytes = 0u64;
    for (i, s) in specs.iter().enumerate() {
        let size = s.size()?;
        total += size;
        match plan.get(i).map(|p| p.role) {
            Some(Role::Expert(..)) => expert_bytes += size,
            Some(_) => {}
            None => low_expert_bytes += size,
        }
    }
    let mut stage = Stage::start(
        opts.progress.as_ref(),
        "writing tensors",
        ProgressUnit::Bytes,
        total,
    );
    let n_tensors = specs.len();
    let mut writer = GgufWriter::create(output, &meta, specs.clone())?;
    for ((p, spec), ty) in plan.iter().zip(&specs).zip(types) {
        stage.item(&p.name);
        let bytes = match (p.produce)()? {
            Payload::Raw(raw) if ty == p.source_type => raw,
            Payload::Raw(raw) => {
                let n = spec.dims.iter().product::<u64>() as usize;
                let mut values = vec![0f32; n];
                decode_rows(p.source_type, &raw, spec.dims[0] as usize, &mut values)?;
                encode_rows(ty, &values, spec.dims[0] as usize)?
            }
            Payload::F32(values) => encode_rows(ty, &values, spec.dims[0] as usize)?,
        };
        writer.write_tensor(&bytes)?;
        stage.advance(bytes.len() as u64);
    }
    for (&(i, ty), spec) in low_copies.iter().zip(&specs[plan.len()..]) {
        let p = &plan[i];
        stage.item(&spec.name);
        let row = spec.dims[0] as usize;
        let bytes = match (p.produce)()? {
            Payload::Raw(raw) if ty == p.source_type => raw,
            Payload::Raw(raw) => {
                let n = spec.dims.iter().product::<u64>() as usize;
                let mut values = vec![0f32; n];
                decode_rows(p.source_type, &raw, row, &mut values)?;
                encode_rows(ty, &values, row)?
            }
            Payload::F32(values) => encode_rows(ty, &values, row)?,
        };
        writer.write_tensor(&bytes)?;
        stage.advance(bytes.len() as u64);
    }
    writer.finish()?;
    stage.finish();
    Ok(ConvertReport {
        config: config.clone(),
        tensors: n_tensors,
        bytes_written: std::fs::metadata(output).map(|m| m.len()).unwrap_or(0),
        expert_bytes,
        low_expert_bytes,
        fallbacks,
    })
}

/// Decodes rows of `row_len` elements of `ty`.
fn decode_rows(ty: GgmlType, raw: &[u8], row_len: usize, out: &mut [f32]) -> Result<()> {
    let rb = ty.row_bytes(row_len)?;
    if raw.len() != rb * (out.len() / row_len.max(1)) {
        return Err(Error::Shape(format!(
            "{} bytes are not {} rows of {ty}",
            raw.len(),
            out.len() / row_len.max(1)
        )));
    }
    for (src, dst) in raw.chunks_exact(rb).zip(out.chunks_exact_mut(row_len)) {
        crate::quant::dequantize(ty, src, dst)?;
    }
    Ok(())
}

/// Encodes rows of `row_len` f32 values as `ty`.
fn encode_rows(ty: GgmlType, values: &[f32], row_len: usize) -> Result<Vec<u8>> {
    let rb = ty.row_bytes(row_len)?;
    let rows = values.len() / row_len.max(1);
    let mut out = vec![0u8; rb * rows];
    for (src, dst) in values.chunks_exact(row_len).zip(out.chunks_exact_mut(rb)) {
        crate::quant::quantize(ty, src, dst)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("blk.*.attn_*", "blk.12.attn_q.weight"));
        assert!(glob_match(super::EXPERT_PATTERN, "blk.3.ffn_down.7.weight"));
        assert!(!glob_match(
            super::EXPERT_PATTERN,
            "blk.3.ffn_down_shexp.weight"
        ));
        assert!(!glob_match(super::EXPERT_PATTERN, "blk.3.ffn_norm.weight"));
        assert!(glob_match("output.weight", "output.weight"));
        assert!(glob_match("blk.?.attn_v*", "blk.4.attn_v.weight"));
        assert!(!glob_match("blk.?.attn_v*", "blk.14.attn_v.weight"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
        assert!(glob_match("a*b*", "acbd"));
    }
}
