//! `edgemoe inspect`: a model file's architecture, tensors and where its bytes go.

use std::path::PathBuf;

use clap::Args;
use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::engine::Model;
use edgemoe::format::GgufFile;

use crate::options::human;

#[derive(Args)]
pub struct InspectArgs {
    /// A GGUF model file.
    model: PathBuf,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
}

pub fn run(a: InspectArgs) -> edgemoe::Result<()> {
    let model = Model::load(&a.model)?;
    let file = GgufFile::open(&a.model)?;
    print_architecture(&a, &model, &file);
    print_bytes(&model);
    print_plans(&a, &model, &file)?;
    if a.tensors {
        print_tensors(&file);
    }
    Ok(())
}

/// The file's layout, the family and its shape.
fn print_architecture(a: &InspectArgs, model: &Model, file: &GgufFile) {
    let c = &model.config;
    let layout = if file.get("edgemoe.format_version").is_some() {
        "edgemoe packed (one read per expert)"
    } else {
        "llama.cpp merged experts"
    };
    println!("file          {}", a.model.display());
    println!(
        "layout        {layout}, alignment {}",
        file.header.alignment
    );
    println!(
        "family        {} (general.architecture = {})",
        c.family.name, c.family.gguf_arch
    );
    println!(
        "shape         {} layers, hidden {}, {} heads ({} KV, head size {}), vocab {}",
        c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab
    );
    println!(
        "experts       {} per layer, {} used per token, intermediate {}{}",
        c.n_experts,
        c.n_experts_used,
        c.expert_ffn,
        if c.shared_ffn > 0 {
            format!(", shared expert {}", c.shared_ffn)
        } else {
            String::new()
        }
    );
    println!(
        "rope          theta {}, {:?}; rms eps {}; top-k renormalised: {}",
        c.rope_theta, c.family.rope, c.norm_eps, c.norm_topk
    );
}

/// Resident and expert bytes, expert sizes and types, low-precision copies.
fn print_bytes(model: &Model) {
    let c = &model.config;
    let experts = model.expert_bytes();
    let total = model.resident_bytes + experts;
    println!(
        "bytes         resident {} ({:.1}%), experts {} ({:.1}%)",
        human(model.resident_bytes),
        100.0 * model.resident_bytes as f64 / total as f64,
        human(experts),
        100.0 * experts as f64 / total as f64
    );
    let sizes: Vec<u64> = model.directory.iter().map(|e| e.bytes()).collect();
    let (min, max) = (
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().max().copied().unwrap_or(0),
    );
    println!(
        "per expert    {} .. {} ({} experts); per token at most {}",
        human(min),
        human(max),
        sizes.len(),
        human(max * (c.n_experts_used * c.n_layers) as u64)
    );
    if let Some(loc) = model.directory.iter().next() {
        println!(
            "expert types  gate {}, up {}, down {}",
            loc.gate.ty, loc.up.ty, loc.down.ty
        );
    }
    if let Some(ty) = model.directory.low_precision_type() {
        let low = model.directory.low_precision_bytes();
        let max_low = model.directory.iter_low().map(|e| e.bytes()).max();
        println!(
            "low precision {ty} copies of every expert: {} ({} per expert), for --low-precision-threshold",
            human(low),
            human(max_low.unwrap_or(0))
        );
    }
}

/// The bitwidth plan and the predictor statistics the file carries, if any.
fn print_plans(a: &InspectArgs, model: &Model, file: &GgufFile) -> edgemoe::Result<()> {
    if let Some(table) = ExpertTypes::from_gguf(&file.header, &a.model)? {
        let counts: Vec<String> = table
            .histogram()
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        println!("bitwidth plan {} experts", counts.join(", "));
        if let Some(t) = &table.tolerance {
            println!("  tolerance   {t}");
        }
        if let Some(c) = &table.calibration {
            println!("  calibration {c}");
        }
    }
    if let Some(t) = &model.expert_stats {
        let (k1, k2) = t.keys();
        println!(
            "predictor     EdgeMoE statistics: {} tokens, {k1} one-layer and {k2} two-layer keys{}",
            t.tokens(),
            t.calibration
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn print_tensors(file: &GgufFile) {
    println!(
        "\n{:<40} {:>6} {:>20} {:>12}",
        "tensor", "type", "dims", "bytes"
    );
    for t in &file.header.tensors {
        println!(
            "{:<40} {:>6} {:>20} {:>12}",
            t.name,
            t.ty.name(),
            format!("{:?}", t.dims),
            t.size
        );
    }
}
