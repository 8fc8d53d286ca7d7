//! The `edgemoe` command line: generate text, convert models, inspect model files.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod calibrate;
mod chat;
mod convert;
mod generate;
mod inspect;
mod kl;
mod options;
mod perplexity;
mod profile;
mod replay;
mod sweep;
mod trace;

/// Run Mixture-of-Experts language models on devices whose memory is smaller than the model.
#[derive(Parser)]
#[command(name = "edgemoe", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it as it is produced.
    Generate(generate::GenerateArgs),
    /// Chat: one message per line on standard input, the model's chat template, the KV cache
    /// kept across turns; `/undo`, `/reset`, `/quit`; Ctrl-C stops the reply.
    Chat(chat::ChatArgs),
    /// Measure perplexity on a text file (sliding window, no BOS), with its standard error.
    Perplexity(perplexity::PerplexityArgs),
    /// Compare a model's next-token distributions with a reference model's on a text:
    /// mean KL(reference || model), top-1 agreement, both perplexities.
    Kl(kl::KlArgs),
    /// Record which experts a generation uses, layer by layer (JSON), for `replay`.
    Trace(trace::TraceArgs),
    /// Score cache policies against Belady's optimum on a recorded trace.
    Replay(replay::ReplayArgs),
    /// Convert a Hugging Face checkpoint directory or a llama.cpp GGUF to edgemoe's layout.
    Convert(convert::ConvertArgs),
    /// Find per-expert quantisation types within a quality tolerance (EdgeMoE's bitwidth
    /// adaptation); writes the type table, the converted model and a report.
    Calibrate(calibrate::CalibrateArgs),
    /// Count which experts follow which on calibration text (EdgeMoE's statistics predictor)
    /// and write a copy of the model carrying the table (`edgemoe.predictor.*`).
    Profile(profile::ProfileArgs),
    /// Show a model file's architecture, tensors and where its bytes go.
    Inspect(inspect::InspectArgs),
    /// Measure prompt and decode speed the way llama-bench does (pp N, tg N; random tokens).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Perplexity(a) => perplexity::run(a),
        Command::Kl(a) => kl::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Profile(a) => profile::run(a),
        Command::Inspect(a) => inspect::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
