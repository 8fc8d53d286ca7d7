//! `edgemoe bench`: prompt and decode speed the way llama-bench measures them, or a budget
//! sweep ([`crate::sweep`]).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use edgemoe::engine::{Model, PredictionOptions, PredictorKind, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::options::{parse_backend, ModelArgs};
use crate::sweep;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt-processing test: tokens evaluated as one batch in a fresh context (0: skip).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    /// Text-generation test: tokens decoded one at a time in a fresh context (0: skip).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    /// Timed repetitions of each test (after one untimed warm-up).
    #[arg(short = 'r', long, default_value_t = 5)]
    repetitions: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Budget sweep instead: expert pool sizes in percent of all expert bytes, each run
    /// decoding --n-gen tokens from a cold cache (e.g. 10,25,50,75,100).
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Backends the sweep runs (io_uring, pread, mmap).
    #[arg(long, value_delimiter = ',', default_value = "io_uring,pread,mmap")]
    sweep_backends: Vec<String>,
    /// Predictors the sweep runs (none, lookahead, stats); depth, preload count and policy
    /// come from --lookahead, --preload-count and --policy.
    #[arg(long, value_delimiter = ',', default_value = "none,lookahead")]
    sweep_predictors: Vec<String>,
    /// Where the sweep writes sweep.json, sweep.csv and sweep.md
    /// (`tools/plot/plot_sweep.py DIR/sweep.json` draws the PNG).
    #[arg(long, default_value = "sweep")]
    out: PathBuf,
}

/// Tokens per second of each timed repetition of one bench test.
#[derive(serde::Serialize)]
struct BenchResult {
    test: String,
    n_tokens: usize,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ts: Vec<f64>,
}

impl BenchResult {
    fn new(test: String, n_tokens: usize, samples_ts: Vec<f64>) -> Self {
        let n = samples_ts.len().max(1) as f64;
        let avg_ts = samples_ts.iter().sum::<f64>() / n;
        let var = samples_ts
            .iter()
            .map(|x| (x - avg_ts) * (x - avg_ts))
            .sum::<f64>()
            / (n - 1.0).max(1.0);
        BenchResult {
            test,
            n_tokens,
            avg_ts,
            stddev_ts: var.sqrt(),
            samples_ts,
        }
    }
}

/// As llama-bench: `pp N` evaluates N random tokens as one batch, `tg N` decodes N random
/// tokens one by one (after BOS when the model uses it), each in a fresh context, after one
/// untimed warm-up; no sampling, no tokenizer.
pub fn run(mut a: BenchArgs) -> edgemoe::Result<()> {
    if !a.sweep.is_empty() {
        return sweep::run(&sweep_plan(&a)?);
    }
    let ctx = a.n_prompt.max(a.n_gen + 1).max(1);
    a.model.context_length = Some(ctx);
    let model = Arc::new(a.model.load()?);
    let vocab = model.config.vocab as u32;
    let bos = model
        .tokenizer()
        .ok()
        .filter(|t| t.adds_bos())
        .and_then(|t| t.bos_id());
    let mut session = Session::new(model.clone(), Some(ctx))?;
    let mut results = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    if a.n_prompt > 0 {
        let n = a.n_prompt;
        let mut run = |n| pp(&mut session, &mut rng, vocab, n);
        run(n)?; // untimed warm-up
        let samples = timed(a.repetitions, n, &mut run)?;
        results.push(BenchResult::new(format!("pp{n}"), n, samples));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    if a.n_gen > 0 {
        let n = a.n_gen;
        let mut run = |n| tg(&mut session, &mut rng, vocab, bos, n);
        run(1)?; // untimed warm-up
        let samples = timed(a.repetitions, n, &mut run)?;
        results.push(BenchResult::new(format!("tg{n}"), n, samples));
    }
    print_results(&a, &model, &results);
    Ok(())
}

/// The sweep the flags describe.
fn sweep_plan(a: &BenchArgs) -> edgemoe::Result<sweep::SweepPlan> {
    let backends = a
        .sweep_backends
        .iter()
        .map(|b| parse_backend(b))
        .collect::<edgemoe::Result<Vec<_>>>()?;
    Ok(sweep::SweepPlan {
        model: a.model.path(),
        percents: a.sweep.clone(),
        backends,
        predictors: a
            .sweep_predictors
            .iter()
            .map(|p| PredictorKind::parse(p))
            .collect::<edgemoe::Result<Vec<_>>>()?,
        prediction: PredictionOptions {
            depth: a.model.lookahead.max(1),
            preload_count: a.model.preload_count,
            refine: !a.model.no_refine,
            ..Default::default()
        },
        policy: a.model.policy()?,
        fill_ahead: !a.model.no_fill_ahead,
        budget_aware_preloads: !a.model.eager_preloads,
        threads: a.model.threads,
        n_gen: a.n_gen,
        out: a.out.clone(),
    })
}

/// `repetitions` runs of `test` over `n` tokens, in tokens per second.
fn timed(
    repetitions: usize,
    n: usize,
    test: &mut dyn FnMut(usize) -> edgemoe::Result<f64>,
) -> edgemoe::Result<Vec<f64>> {
    (0..repetitions)
        .map(|_| test(n).map(|s| n as f64 / s))
        .collect()
}

/// Seconds to evaluate `n` random tokens as one batch in a fresh context.
fn pp(session: &mut Session, rng: &mut ChaCha8Rng, vocab: u32, n: usize) -> edgemoe::Result<f64> {
    let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab)).collect();
    session.reset();
    let t = std::time::Instant::now();
    session.eval(&ids, false)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds to decode `n` tokens one at a time in a fresh context (BOS first, if any).
fn tg(
    session: &mut Session,
    rng: &mut ChaCha8Rng,
    vocab: u32,
    bos: Option<u32>,
    n: usize,
) -> edgemoe::Result<f64> {
    session.reset();
    let mut token = bos.unwrap_or_else(|| rng.random_range(0..vocab));
    let t = std::time::Instant::now();
    for _ in 0..n {
        session.eval(&[token], false)?;
        token = rng.random_range(0..vocab);
    }
    Ok(t.elapsed().as_secs_f64())
}

fn print_results(a: &BenchArgs, model: &Model, results: &[BenchResult]) {
    let path = a.model.path();
    if a.json {
        let doc = serde_json::json!({
            "model": path.display().to_string(),
            "threads": a.model.threads,
            "kernel": edgemoe::quant::kernel_name(),
            "experts": model.experts.name(),
            "budget": model.budget().map(|b| b.budget),
            "peak_rss": edgemoe::sys::peak_rss_bytes(),
            "results": results,
        });
        println!("{doc}");
    } else {
        println!(
            "{} | threads {} | kernel {} | experts {}",
            path.display(),
            a.model.threads,
            edgemoe::quant::kernel_name(),
            model.experts.name()
        );
        for r in results {
            println!(
                "{:>8} {:>10.2} ± {:>7.2} tok/s",
                r.test, r.avg_ts, r.stddev_ts
            );
        }
    }
}
