//! `edgemoe convert`: a Hugging Face checkpoint or a llama.cpp GGUF to edgemoe's layout.

use std::path::PathBuf;

use clap::Args;
use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::convert::{
    convert, convert_with_expert_types, ConvertOptions, Fallback, ATTENTION_PATTERN, EXPERT_PATTERN,
};
use edgemoe::tensor::GgmlType;

use crate::options::{human, StageBars};

#[derive(Args)]
pub struct ConvertArgs {
    /// A Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json) or a
    /// GGUF file.
    input: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of weight matrices: f32, f16, bf16, q8_0, q4_k, ... (norms, biases and routers
    /// stay f32). Default: f16 for checkpoints, unchanged for GGUF input.
    #[arg(long = "type")]
    ty: Option<String>,
    /// Type of the tensors whose output name matches a glob, e.g. `blk.*.attn_*=q8_0`,
    /// `blk.*.ffn_down.*.weight=q6_k`, `output.weight=q8_0` (repeatable; the last match wins).
    #[arg(long = "override", value_name = "PATTERN=TYPE")]
    overrides: Vec<String>,
    /// Type of attention matrices (shorthand for --override 'blk.*.attn_*=T').
    #[arg(long)]
    attn_type: Option<String>,
    /// Type of routed expert matrices (shorthand for --override 'blk.*.ffn_*.*.weight=T').
    #[arg(long)]
    expert_type: Option<String>,
    /// Per-expert types: a JSON table written by `edgemoe calibrate` (format
    /// `edgemoe.expert-types/1`, see `convert::expert_types`); stored in the output's
    /// `edgemoe.bitwidth.*` metadata.
    #[arg(long)]
    expert_types: Option<PathBuf>,
    /// Also store every expert at this lower type (e.g. q4_0, q2_k), after the others, for
    /// lower precision on a miss (`--low-precision-threshold` when running).
    #[arg(long)]
    low_expert_type: Option<String>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

impl ConvertArgs {
    /// `--attn-type`, `--expert-type` and `--override` as (pattern, type) pairs, in that order.
    fn overrides(&self) -> edgemoe::Result<Vec<(String, GgmlType)>> {
        let mut overrides = Vec::new();
        if let Some(t) = &self.attn_type {
            overrides.push((ATTENTION_PATTERN.to_string(), GgmlType::from_name(t)?));
        }
        if let Some(t) = &self.expert_type {
            overrides.push((EXPERT_PATTERN.to_string(), GgmlType::from_name(t)?));
        }
        for o in &self.overrides {
            let (pattern, ty) = o.rsplit_once('=').ok_or_else(|| {
                edgemoe::Error::InvalidArgument(format!("--override `{o}` is not PATTERN=TYPE"))
            })?;
            overrides.push((pattern.to_string(), GgmlType::from_name(ty)?));
        }
        Ok(overrides)
    }
}

pub fn run(a: ConvertArgs) -> edgemoe::Result<()> {
    let overrides = a.overrides()?;
    let bars = StageBars::default();
    let opts = ConvertOptions {
        matrix_type: a.ty.as_deref().map(GgmlType::from_name).transpose()?,
        overrides,
        low_expert_type: a
            .low_expert_type
            .as_deref()
            .map(GgmlType::from_name)
            .transpose()?,
        progress: bars.callback(a.quiet),
        ..Default::default()
    };
    let report = match &a.expert_types {
        Some(path) => {
            let table = ExpertTypes::read(path)?;
            convert_with_expert_types(&a.input, &a.output, &opts, &table)?
        }
        None => convert(&a.input, &a.output, &opts)?,
    };
    eprintln!(
        "wrote {} ({} tensors, {}, of which experts {})",
        a.output.display(),
        report.tensors,
        human(report.bytes_written),
        human(report.expert_bytes)
    );
    if report.low_expert_bytes > 0 {
        eprintln!(
            "low-precision expert copies: {}",
            human(report.low_expert_bytes)
        );
    }
    report_fallbacks(&report.fallbacks);
    Ok(())
}

/// Says which tensors could not take the type asked for, grouped by (wanted, row length).
pub fn report_fallbacks(fallbacks: &[Fallback]) {
    let mut groups: Vec<(GgmlType, GgmlType, u64, Vec<&str>)> = Vec::new();
    for f in fallbacks {
        match groups
            .iter_mut()
            .find(|g| (g.0, g.1, g.2) == (f.wanted, f.written, f.row_len))
        {
            Some(g) => g.3.push(&f.tensor),
            None => groups.push((f.wanted, f.written, f.row_len, vec![&f.tensor])),
        }
    }
    for (wanted, written, row_len, names) in groups {
        eprintln!(
            "note: {} tensors written as {written} instead of {wanted}: rows of {row_len} elements are not whole {wanted} blocks of {} (first: {})",
            names.len(),
            wanted.block_len(),
            names[0]
        );
    }
}
