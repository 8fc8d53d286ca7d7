//! Writing a plan of tensors in the packed layout: the file's metadata, each tensor's type,
//! the low-precision expert copies after everything else, then every tensor encoded in order.

#![forbid(unsafe_code)]

use std::path::Path;

use super::progress::Stage;
use super::tensor_types::{check_overrides, choose_types};
use super::ALIGNMENT;
use super::{expert_types, ConvertOptions, ConvertReport, Payload, Planned, ProgressUnit, Role};
use crate::engine::config::FORMAT_VERSION;
use crate::engine::experts::{low_precision_name, LOW_PRECISION_TYPE_KEY};
use crate::engine::ModelConfig;
use crate::format::{GgufValue, GgufWriter, TensorSpec};
use crate::tensor::GgmlType;
use crate::{Error, Result};

type Metadata = Vec<(String, GgufValue)>;

/// Writes the planned tensors with `metadata` (the model config's keys are added here).
pub(super) fn write(
    output: &Path,
    config: &ModelConfig,
    metadata: Metadata,
    plan: Vec<Planned<'_>>,
    opts: &ConvertOptions,
    keep_source: bool,
) -> Result<ConvertReport> {
    let mut meta = file_metadata(config, metadata, opts)?;
    check_overrides(&plan, opts)?;
    let (types, fallbacks) = choose_types(&plan, opts, keep_source);
    let mut specs: Vec<TensorSpec> = plan
        .iter()
        .zip(types)
        .map(|(p, ty)| TensorSpec {
            name: p.name.clone(),
            dims: p.dims.clone(),
            ty,
        })
        .collect();
    // The low-precision copies (each the index of its expert matrix in `plan`), written after
    // everything else in the same layer/expert order, so each copy is one read too.
    let mut low_copies = Vec::new();
    if let Some(low) = opts.low_expert_type {
        let (low_specs, sources) = low_precision_copies(&plan, low)?;
        specs.extend(low_specs);
        low_copies = sources;
        meta.retain(|(k, _)| k != LOW_PRECISION_TYPE_KEY);
        meta.push((LOW_PRECISION_TYPE_KEY.into(), GgufValue::U32(low as u32)));
    }
    let sizes = Sizes::of(&specs, &plan)?;
    let mut stage = Stage::start(
        opts.progress.as_ref(),
        "writing tensors",
        ProgressUnit::Bytes,
        sizes.total,
    );
    let sources: Vec<&Planned<'_>> = plan
        .iter()
        .chain(low_copies.iter().map(|&i| &plan[i]))
        .collect();
    write_tensors(output, &meta, &specs, &sources, &mut stage)?;
    stage.finish();
    Ok(ConvertReport {
        config: config.clone(),
        tensors: specs.len(),
        bytes_written: std::fs::metadata(output).map(|m| m.len()).unwrap_or(0),
        expert_bytes: sizes.experts,
        low_expert_bytes: sizes.low_experts,
        fallbacks,
    })
}

/// The output's metadata: the model config's keys, the layout's, then the caller's
/// `metadata` (less any key already set) with the per-expert type table of `opts`.
fn file_metadata(
    config: &ModelConfig,
    mut metadata: Metadata,
    opts: &ConvertOptions,
) -> Result<Metadata> {
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
    Ok(meta)
}

/// The low-precision copy of every expert matrix of `plan` at type `low`: its tensor, and
/// the index in `plan` of the matrix it copies.
fn low_precision_copies(
    plan: &[Planned<'_>],
    low: GgmlType,
) -> Result<(Vec<TensorSpec>, Vec<usize>)> {
    let mut specs = Vec::new();
    let mut sources = Vec::new();
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
            name: low_precision_name(l, kind, e),
            dims: p.dims.clone(),
            ty: low,
        });
        sources.push(i);
    }
    Ok((specs, sources))
}

/// Bytes of the tensors to write.
struct Sizes {
    total: u64,
    /// The expert matrices at their own types.
    experts: u64,
    /// The low-precision copies (the tensors past the end of the plan).
    low_experts: u64,
}

impl Sizes {
    fn of(specs: &[TensorSpec], plan: &[Planned<'_>]) -> Result<Sizes> {
        let mut sizes = Sizes {
            total: 0,
            experts: 0,
            low_experts: 0,
        };
        for (i, s) in specs.iter().enumerate() {
            let size = s.size()?;
            sizes.total += size;
            match plan.get(i).map(|p| p.role) {
                Some(Role::Expert(..)) => sizes.experts += size,
                Some(_) => {}
                None => sizes.low_experts += size,
            }
        }
        Ok(sizes)
    }
}

/// Writes the file: `meta`, then each tensor of `specs` produced by the planned tensor of
/// `sources` at the same index.
fn write_tensors(
    output: &Path,
    meta: &Metadata,
    specs: &[TensorSpec],
    sources: &[&Planned<'_>],
    stage: &mut Stage<'_>,
) -> Result<()> {
    let mut writer = GgufWriter::create(output, meta, specs.to_vec())?;
    for (p, spec) in sources.iter().zip(specs) {
        stage.item(&spec.name);
        let bytes = encode(p, spec)?;
        writer.write_tensor(&bytes)?;
        stage.advance(bytes.len() as u64);
    }
    writer.finish()
}

/// The bytes of `spec` from the values of `p`: its source bytes as they are when already of
/// `spec`'s type, else decoded to f32 if need be and encoded.
fn encode(p: &Planned<'_>, spec: &TensorSpec) -> Result<Vec<u8>> {
    let row = spec.dims[0] as usize;
    Ok(match (p.produce)()? {
        Payload::Raw(raw) if spec.ty == p.source_type => raw,
        Payload::Raw(raw) => {
            let n = spec.dims.iter().product::<u64>() as usize;
            let mut values = vec![0f32; n];
            decode_rows(p.source_type, &raw, row, &mut values)?;
            encode_rows(spec.ty, &values, row)?
        }
        Payload::F32(values) => encode_rows(spec.ty, &values, row)?,
    })
}

/// Decodes rows of `row_len` elements of `ty`.
pub(super) fn decode_rows(ty: GgmlType, raw: &[u8], row_len: usize, out: &mut [f32]) -> Result<()> {
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
pub(super) fn encode_rows(ty: GgmlType, values: &[f32], row_len: usize) -> Result<Vec<u8>> {
    let rb = ty.row_bytes(row_len)?;
    let rows = values.len() / row_len.max(1);
    let mut out = vec![0u8; rb * rows];
    for (src, dst) in values.chunks_exact(row_len).zip(out.chunks_exact_mut(rb)) {
        crate::quant::quantize(ty, src, dst)?;
    }
    Ok(out)
}
