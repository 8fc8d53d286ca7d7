//! Stock llama.cpp GGUF (merged `ffn_*_exps` expert tensors) or an edgemoe GGUF to
//! edgemoe's layout, optionally changing tensor types.

#![forbid(unsafe_code)]

use std::path::Path;

use super::{write, ConvertOptions, ConvertReport, Payload, Planned, Role};
use crate::engine::{ExpertDirectory, ModelConfig};
use crate::format::{GgufFile, GgufValue};
use crate::Result;

/// Metadata keys that describe the old file's layout rather than the model.
fn is_layout_key(key: &str) -> bool {
    key == "general.alignment" || key == "general.file_type" || key.starts_with("edgemoe.")
}

pub(super) fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    extra: Vec<(String, GgufValue)>,
) -> Result<ConvertReport> {
    let file = GgufFile::open(input)?;
    let cfg = ModelConfig::from_gguf(&file.header, input)?;
    let dir = ExpertDirectory::from_gguf(&file.header, &cfg, input)?;
    let mut plan = resident_tensors(&file);
    plan.extend(expert_tensors(&file, &cfg, &dir)?);
    let mut metadata: Vec<(String, GgufValue)> = file
        .header
        .metadata
        .iter()
        .filter(|(k, _)| !is_layout_key(k))
        .cloned()
        .collect();
    metadata.extend(extra);
    write(output, &cfg, metadata, plan, opts, true)
}

/// Whether `name` is an expert tensor: llama.cpp's merged `ffn_*_exps` or edgemoe's
/// `blk.L.ffn_{gate,up,down}.E.weight`.
fn is_expert(name: &str) -> bool {
    name.contains("_exps.") || {
        let parts: Vec<&str> = name.split('.').collect();
        parts.len() == 5 && parts[2].starts_with("ffn_") && parts[3].parse::<usize>().is_ok()
    }
}

/// Every tensor but the experts, in the file's order, copied as they are stored.
fn resident_tensors(file: &GgufFile) -> Vec<Planned<'_>> {
    let mut plan = Vec::new();
    for t in &file.header.tensors {
        // Low-precision copies are made again from the experts (or dropped).
        if is_expert(&t.name) || crate::engine::experts::is_low_precision_name(&t.name) {
            continue;
        }
        let role = if t.dims.len() == 1 || t.name.contains("ffn_gate_inp") {
            Role::Small
        } else {
            Role::Matrix
        };
        plan.push(Planned {
            name: t.name.clone(),
            dims: t.dims.clone(),
            role,
            source_type: t.ty,
            produce: Box::new(move || Ok(Payload::Raw(file.data(t).to_vec()))),
        });
    }
    plan
}

/// Each expert's three matrices, layer by layer, cut out of wherever the file keeps them.
fn expert_tensors<'a>(
    file: &'a GgufFile,
    cfg: &ModelConfig,
    dir: &ExpertDirectory,
) -> Result<Vec<Planned<'a>>> {
    let mut plan = Vec::new();
    for l in 0..cfg.n_layers {
        for e in 0..cfg.n_experts {
            let loc = *dir.get(l, e)?;
            for (kind, m) in [("gate", loc.gate), ("up", loc.up), ("down", loc.down)] {
                plan.push(Planned {
                    name: format!("blk.{l}.ffn_{kind}.{e}.weight"),
                    dims: vec![m.cols as u64, m.rows as u64],
                    role: Role::Expert(l, e),
                    source_type: m.ty,
                    produce: Box::new(move || {
                        let bytes = file.bytes();
                        Ok(Payload::Raw(
                            bytes[m.offset as usize..(m.offset + m.len) as usize].to_vec(),
                        ))
                    }),
                });
            }
        }
    }
    Ok(plan)
}
