//! `edgemoe generate`: text from a prompt, streamed as it is produced.

use std::io::Write;
use std::sync::Arc;

use clap::Args;
use edgemoe::engine::generate::{generate, GenerateParams, GenerateStats};
use edgemoe::engine::{Model, PredictorKind, Session};
use edgemoe::tokenizer::Tokenizer;

use crate::options::{human, ModelArgs, SamplingArgs};

#[derive(Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt.
    #[arg(short, long, default_value = "ROMEO:")]
    pub prompt: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 200)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Do not add the BOS token before the prompt.
    #[arg(long)]
    no_bos: bool,
    /// Context length (tokens); default: prompt + max tokens.
    #[arg(long)]
    pub ctx: Option<usize>,
    /// Print expert-cache and prediction figures at the end.
    #[arg(long)]
    stats: bool,
}

impl GenerateArgs {
    /// The generation settings these flags describe.
    pub fn params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.max_tokens,
            sampler: self.sampling.params(),
            stop: self.stop.clone(),
            add_bos: !self.no_bos,
        }
    }

    /// Room for the prompt (its bytes bound its tokens) and the new tokens.
    pub fn context_length(&self) -> usize {
        self.ctx.unwrap_or(self.prompt.len() + self.max_tokens + 2)
    }
}

pub fn run(mut a: GenerateArgs) -> edgemoe::Result<()> {
    let ctx = a.context_length();
    a.model.context_length = Some(ctx);
    let model = Arc::new(a.model.load()?);
    let tokenizer = model.tokenizer()?;
    let mut session = Session::new(model.clone(), Some(ctx))?;
    if a.stats {
        // Score every predictor the model supports, not only the one preloading.
        let mut p = session.prediction();
        p.score_all = true;
        session.set_prediction(p)?;
    }
    let stats = stream_text(&a, tokenizer, &mut session)?;
    print_speed(&model, &stats);
    if a.stats {
        print_prediction_stats(&model, &session);
        print_expert_stats(&model, &stats);
    }
    Ok(())
}

/// Generates, writing the prompt and then each piece of text to stdout as it comes.
fn stream_text(
    a: &GenerateArgs,
    tokenizer: &Tokenizer,
    session: &mut Session,
) -> edgemoe::Result<GenerateStats> {
    let params = a.params();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", a.prompt);
    let _ = out.flush();
    let stats = generate(session, tokenizer, &a.prompt, &params, &mut |text| {
        let _ = write!(out, "{text}");
        let _ = out.flush();
        true
    })?;
    let _ = writeln!(out);
    Ok(stats)
}

/// Prompt and decode speed, peak memory and how the model ran.
fn print_speed(model: &Model, stats: &GenerateStats) {
    let peak = edgemoe::sys::peak_rss_bytes()
        .map(human)
        .unwrap_or_else(|| "n/a".into());
    eprintln!(
        "prompt {} tokens {:.1} tok/s | decode {} tokens {:.1} tok/s | peak memory {} | experts {} | {} threads, {} kernels",
        stats.prompt_tokens,
        stats.prompt_tokens_per_second(),
        stats.generated_tokens,
        stats.decode_tokens_per_second(),
        peak,
        model.experts.name(),
        model.thread_pool().threads(),
        edgemoe::quant::kernel_name(),
    );
}

/// Recall and precision of every predictor that was scored.
fn print_prediction_stats(model: &Model, session: &Session) {
    let opts = session.prediction();
    let count = opts.preload_count.unwrap_or(model.config.n_experts_used);
    for kind in PredictorKind::ALL {
        let Some(p) = session.prediction_stats_for(kind) else {
            continue;
        };
        if p.used.iter().sum::<u64>() == 0 {
            continue;
        }
        let layers: Vec<String> = (0..model.config.n_layers)
            .filter(|&l| p.used[l] > 0)
            .map(|l| {
                format!(
                    "L{l} {:.1}/{:.1}",
                    100.0 * p.layer_recall(l),
                    100.0 * p.layer_precision(l)
                )
            })
            .collect();
        let early = match session.early_prediction_stats_for(kind) {
            Some(e) if e != p => format!(
                " (before the previous layer's experts: recall {:.1}%, precision {:.1}%)",
                100.0 * e.recall(),
                100.0 * e.precision()
            ),
            _ => String::new(),
        };
        eprintln!(
            "predictor {}{} ({} layer{} ahead, {count} per token): recall {:.1}%, precision {:.1}%; per layer recall/precision % {}{early}",
            kind.name(),
            if kind == opts.predictor { ", preloading" } else { ", scored only" },
            opts.depth,
            if opts.depth == 1 { "" } else { "s" },
            100.0 * p.recall(),
            100.0 * p.precision(),
            layers.join(", ")
        );
    }
}

/// The expert cache's figures (nothing when every expert is resident).
fn print_expert_stats(model: &Model, stats: &GenerateStats) {
    let Some(st) = model.streamed() else {
        return;
    };
    let s = st.stats();
    let toks = (stats.prompt_tokens + stats.generated_tokens).max(1) as f64;
    eprintln!(
        "experts ({}, {} slots of {}{}): {} fetches, {} cache hits ({:.1}%), {} preload hits, {} misses, {} preloads ({} wasted); read {} ({} per token) at {}/s; waited {:.3} s on I/O",
        st.backend_name(),
        st.slots(),
        human(st.slot_bytes()),
        match st.low_copies_per_slot() {
            1 => String::new(),
            n => format!(", or {n} low-precision copies each"),
        },
        s.gets,
        s.hits,
        100.0 * s.hit_rate(),
        s.preload_hits,
        s.misses,
        s.preloads,
        s.wasted_preloads,
        human(s.bytes_read),
        human((s.bytes_read as f64 / toks) as u64),
        human(s.read_bandwidth() as u64),
        s.io_wait.as_secs_f64()
    );
    if model.low_precision_threshold.is_some() {
        eprintln!(
            "lower precision on a miss (threshold {}): {} of {} fetches ({:.1}%) at low precision, {} low-precision reads, saved {} of reads",
            model.low_precision_threshold.unwrap_or(0.0),
            s.low_gets,
            s.gets,
            100.0 * s.low_gets as f64 / s.gets.max(1) as f64,
            s.low_reads,
            human(s.low_bytes_saved)
        );
    }
}
