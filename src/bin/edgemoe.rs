//! The `edgemoe` command line: generate text, convert models, inspect model files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use edgemoe::convert::{convert, ConvertOptions};
use edgemoe::engine::Model;
use edgemoe::format::GgufFile;
use edgemoe::tensor::GgmlType;

/// Run Mixture-of-Experts language models on devices whose memory is smaller than the model.
#[derive(Parser)]
#[command(name = "edgemoe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert a Hugging Face checkpoint directory or a llama.cpp GGUF to edgemoe's layout.
    Convert(ConvertArgs),
    /// Show a model file's architecture, tensors and where its bytes go.
    Inspect(InspectArgs),
}

#[derive(Args)]
struct ConvertArgs {
    /// A Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json) or a
    /// GGUF file.
    input: PathBuf,
    /// Output GGUF file.
    #[arg(short, long)]
    output: PathBuf,
    /// Type of weight matrices: f32, f16, bf16 (norms, biases and routers stay f32).
    /// Default: f16 for checkpoints, unchanged for GGUF input.
    #[arg(long = "type")]
    ty: Option<String>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// A GGUF model file.
    model: PathBuf,
    /// List every tensor.
    #[arg(long)]
    tensors: bool,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

fn run_convert(a: ConvertArgs) -> edgemoe::Result<()> {
    let opts = ConvertOptions {
        matrix_type: a.ty.as_deref().map(GgmlType::from_name).transpose()?,
        expert_types: None,
        progress: !a.quiet,
    };
    let report = convert(&a.input, &a.output, &opts)?;
    eprintln!(
        "wrote {} ({} tensors, {}, of which experts {})",
        a.output.display(),
        report.tensors,
        human(report.bytes_written),
        human(report.expert_bytes)
    );
    Ok(())
}

fn run_inspect(a: InspectArgs) -> edgemoe::Result<()> {
    let model = Model::load(&a.model)?;
    let c = &model.config;
    let file = GgufFile::open(&a.model)?;
    let layout = if file.get("edgemoe.format_version").is_some() {
        "edgemoe packed (one read per expert)"
    } else {
        "llama.cpp merged experts"
    };
    println!("file          {}", a.model.display());
    println!("layout        {layout}, alignment {}", file.header.alignment);
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
    if a.tensors {
        println!("\n{:<40} {:>6} {:>20} {:>12}", "tensor", "type", "dims", "bytes");
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
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Convert(a) => run_convert(a),
        Command::Inspect(a) => run_inspect(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
