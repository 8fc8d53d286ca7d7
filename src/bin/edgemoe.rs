//! The `edgemoe` command line: generate text, convert models, inspect model files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[path = "edgemoe/sweep.rs"]
mod sweep;
use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::convert::{
    convert, convert_with_expert_types, ConvertOptions, ATTENTION_PATTERN, EXPERT_PATTERN,
};
use std::sync::Arc;

use edgemoe::engine::generate::{generate, GenerateParams};
use edgemoe::engine::perplexity::perplexity_with;
use edgemoe::engine::{Backend, LoadOptions, Model, PredictionOptions, PredictorKind, Session};
use edgemoe::format::GgufFile;
use edgemoe::sampling::SamplerParams;
use edgemoe::tensor::GgmlType;
use indicatif::{ProgressBar, ProgressStyle};

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
    Generate(GenerateArgs),
    /// Measure perplexity on a text file (sliding window, no BOS), with its standard error.
    Perplexity(PerplexityArgs),
    /// Compare a model's next-token distributions with a reference model's on a text:
    /// mean KL(reference || model), top-1 agreement, both perplexities.
    Kl(KlArgs),
    /// Record which experts a generation uses, layer by layer (JSON), for `replay`.
    Trace(TraceArgs),
    /// Score cache policies against Belady's optimum on a recorded trace.
    Replay(ReplayArgs),
    /// Convert a Hugging Face checkpoint directory or a llama.cpp GGUF to edgemoe's layout.
    Convert(ConvertArgs),
    /// Find per-expert quantisation types within a quality tolerance (EdgeMoE's bitwidth
    /// adaptation); writes the type table, the converted model and a report.
    Calibrate(CalibrateArgs),
    /// Count which experts follow which on calibration text (EdgeMoE's statistics predictor)
    /// and write a copy of the model carrying the table (`edgemoe.predictor.*`).
    Profile(ProfileArgs),
    /// Show a model file's architecture, tensors and where its bytes go.
    Inspect(InspectArgs),
    /// Measure prompt and decode speed the way llama-bench does (pp N, tg N; random tokens).
    Bench(BenchArgs),
}

/// The bundled demo model, found from the working directory or the source tree.
fn default_model() -> PathBuf {
    let local = PathBuf::from("models/demo.gguf");
    if local.exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf")
    }
}

#[derive(Args)]
struct ModelArgs {
    /// Model file (GGUF). Default: the bundled demo model, models/demo.gguf.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Memory budget for the whole model (e.g. 512M, 2G); experts are streamed from storage
    /// into a pool sized to fit. Default: no limit, everything resident.
    #[arg(long)]
    memory: Option<String>,
    /// Expert source when a budget is set: auto, io_uring, pread, mmap.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Layers ahead whose experts are predicted and preloaded (0: no prediction).
    #[arg(long, default_value_t = 1)]
    lookahead: usize,
    /// Expert predictor: lookahead (later layers' routers on the current hidden state), stats
    /// (EdgeMoE statistics written by `edgemoe profile`), none.
    #[arg(long, default_value = "lookahead")]
    predictor: String,
    /// Experts preloaded per token per predicted layer (default: the experts a token uses).
    #[arg(long)]
    preload_count: Option<usize>,
    /// Router look-ahead: do not predict layer l+1 a second time once layer l's experts ran.
    #[arg(long)]
    no_refine: bool,
    /// Streaming: do not read experts into empty pool slots ahead of need.
    #[arg(long)]
    no_fill_ahead: bool,
    /// Streaming: preload every prediction at once, evicting if need be (default: a preload
    /// that would evict waits for demand reads, and is dropped when it cannot pay).
    #[arg(long)]
    eager_preloads: bool,
    /// Expert-cache eviction policy when streaming: lru, lfu, edgemoe, hobbit, forward.
    #[arg(long, default_value = "lru")]
    policy: String,
    /// Kernel threads (0: one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Lower precision on a miss (HOBBIT): a routed expert that is not cached, is not the
    /// token's top-1 and has less than this share of the token's top-k gate weight is read
    /// from its low-precision copy (a file converted with --low-expert-type). Default: off.
    #[arg(long, value_name = "F")]
    low_precision_threshold: Option<f32>,
    /// Set by the command: tokens of KV cache the budget reserves.
    #[arg(skip)]
    context_length: Option<usize>,
}

fn parse_backend(name: &str) -> edgemoe::Result<Backend> {
    Ok(match name {
        "auto" => Backend::Auto,
        "resident" => Backend::Resident,
        "io_uring" | "uring" => Backend::IoUring,
        "pread" => Backend::Pread,
        "mmap" => Backend::Mmap,
        other => {
            return Err(edgemoe::Error::InvalidArgument(format!(
                "unknown backend `{other}` (auto, resident, io_uring, pread, mmap)"
            )))
        }
    })
}

impl ModelArgs {
    fn policy(&self) -> edgemoe::Result<edgemoe::stream::PolicyKind> {
        edgemoe::stream::PolicyKind::parse(&self.policy).ok_or_else(|| {
            edgemoe::Error::InvalidArgument(format!(
                "unknown policy `{}` (lru, lfu, edgemoe, hobbit, forward)",
                self.policy
            ))
        })
    }

    fn prediction(&self) -> edgemoe::Result<PredictionOptions> {
        let predictor = if self.lookahead == 0 {
            PredictorKind::None
        } else {
            PredictorKind::parse(&self.predictor)?
        };
        if self.preload_count == Some(0) {
            return Err(edgemoe::Error::InvalidArgument(
                "--preload-count must be at least 1".into(),
            ));
        }
        Ok(PredictionOptions {
            predictor,
            depth: self.lookahead.max(1),
            preload_count: self.preload_count,
            score_all: false,
            refine: !self.no_refine,
        })
    }

    fn load(&self) -> edgemoe::Result<Model> {
        let path = self.model.clone().unwrap_or_else(default_model);
        let memory_budget = match &self.memory {
            Some(m) => Some(edgemoe::sys::parse_bytes(m).ok_or_else(|| {
                edgemoe::Error::InvalidArgument(format!("`{m}` is not a size like 512M or 2G"))
            })?),
            None => None,
        };
        let backend = parse_backend(&self.backend)?;
        let policy = self.policy()?;
        let model = Model::load_with(
            &path,
            LoadOptions {
                memory_budget,
                backend,
                threads: self.threads,
                context_length: self.context_length,
                low_precision_threshold: self.low_precision_threshold,
                policy,
                prediction: self.prediction()?,
                fill_ahead: !self.no_fill_ahead,
                budget_aware_preloads: !self.eager_preloads,
                ..Default::default()
            },
        )?;
        if let (Some(b), Some(st)) = (model.budget(), model.streamed()) {
            eprintln!(
                "budget {}: resident weights {}, KV cache {} ({} tokens), scratch {}, expert pool {} ({} of {} experts; {} minimum){}",
                human(b.budget),
                human(b.resident),
                human(b.kv_cache),
                b.context_length,
                human(b.scratch),
                human(st.pool_bytes()),
                st.slots(),
                model.config.n_layers * model.config.n_experts,
                human(b.min_pool),
                st.notes().iter().map(|n| format!("\n  note: {n}")).collect::<String>()
            );
        }
        Ok(model)
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt.
    #[arg(short, long, default_value = "ROMEO:")]
    prompt: String,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 200)]
    max_tokens: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the most likely tokens up to this probability mass (1: off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one (0: off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Penalise tokens seen in the last `--repeat-last-n` tokens (1: off).
    #[arg(long, default_value_t = 1.1)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Random seed: the same seed gives the same text.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Do not add the BOS token before the prompt.
    #[arg(long)]
    no_bos: bool,
    /// Context length (tokens); default: prompt + max tokens.
    #[arg(long)]
    ctx: Option<usize>,
    /// Print expert-cache and prediction figures at the end.
    #[arg(long)]
    stats: bool,
}

impl GenerateArgs {
    /// The generation settings these flags describe.
    fn params(&self) -> GenerateParams {
        GenerateParams {
            max_tokens: self.max_tokens,
            sampler: SamplerParams {
                temperature: self.temp,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                seed: self.seed,
            },
            stop: self.stop.clone(),
            add_bos: !self.no_bos,
        }
    }

    /// Room for the prompt (its bytes bound its tokens) and the new tokens.
    fn context_length(&self) -> usize {
        self.ctx.unwrap_or(self.prompt.len() + self.max_tokens + 2)
    }
}

/// A text to measure on, and the sliding window to measure with.
#[derive(Args)]
struct TextArgs {
    /// Text file to measure on.
    #[arg(short = 'f', long, alias = "file")]
    text: PathBuf,
    /// Use only the last fraction of the file (0.1: the demo model's held-out split).
    #[arg(long, default_value_t = 1.0)]
    tail: f64,
    /// Tokens per window.
    #[arg(long, alias = "window", default_value_t = 256)]
    ctx: usize,
    /// Tokens the window moves by; each window scores only tokens the previous one did not.
    /// Default: the window (non-overlapping windows).
    #[arg(long)]
    stride: Option<usize>,
}

impl TextArgs {
    fn stride(&self) -> usize {
        self.stride.unwrap_or(self.ctx)
    }

    /// The text (its last `--tail` fraction), tokenized without BOS.
    fn tokens(&self, model: &Model) -> edgemoe::Result<Vec<u32>> {
        let text =
            std::fs::read_to_string(&self.text).map_err(|e| edgemoe::Error::io(&self.text, e))?;
        // Split where the demo model's trainer does: by characters, `text[int(0.9 * len):]`.
        let n_chars = text.chars().count();
        let skip = (n_chars as f64 * (1.0 - self.tail.clamp(0.0, 1.0))) as usize;
        let byte_start = text
            .char_indices()
            .nth(skip)
            .map(|(i, _)| i)
            .unwrap_or(text.len());
        model.tokenizer()?.encode(&text[byte_start..], false)
    }
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    text: TextArgs,
    /// Evaluate each window one token at a time, as decoding does (same logits; needed to
    /// measure lower precision on a miss, which a batch rarely triggers: in a window every
    /// expert is some token's top-1).
    #[arg(long)]
    token_by_token: bool,
    /// Print expert-streaming figures at the end.
    #[arg(long)]
    stats: bool,
}

/// A progress bar over the windows of a measurement.
fn window_bar(what: &str, windows: usize) -> ProgressBar {
    let bar = ProgressBar::new(windows as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} [{{bar:40}}] {{pos}}/{{len}} windows ({{eta}})"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

#[derive(Args)]
struct KlArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The reference model (GGUF), e.g. the f16 file a quantised one was made from.
    #[arg(short, long)]
    reference: PathBuf,
    #[command(flatten)]
    text: TextArgs,
}

#[derive(Args)]
struct TraceArgs {
    #[command(flatten)]
    gen: GenerateArgs,
    /// Where to write the trace.
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(Args)]
struct ReplayArgs {
    /// A trace written by `edgemoe trace`.
    trace: PathBuf,
    /// Cache sizes in experts to score (comma-separated); default: 10%, 25%, 50% of all experts.
    #[arg(long, value_delimiter = ',')]
    slots: Vec<usize>,
}

/// A recorded routing trace: every expert fetch in order, as the forward pass makes them.
#[derive(serde::Serialize, serde::Deserialize)]
struct TraceFile {
    model: String,
    n_layers: usize,
    n_experts: usize,
    n_experts_used: usize,
    /// Per token and layer, the chosen experts (router order).
    tokens: Vec<Vec<Vec<usize>>>,
    /// Per token and layer, the experts the predictor named before the layer before ran (what
    /// the engine knows while that layer fetches its experts); empty when none.
    #[serde(default)]
    predicted: Vec<Vec<Vec<usize>>>,
    /// Per token and layer, experts the router look-ahead added once the layer before had run
    /// (known from the end of that layer on).
    #[serde(default)]
    refined: Vec<Vec<Vec<usize>>>,
    /// The predictor that made `predicted`.
    #[serde(default)]
    predictor: String,
}

/// Per token: chosen, predicted and refined experts per layer.
type Recorded = [Vec<Vec<usize>>; 3];

/// Collects routing decisions and predictions into per-token, per-layer lists.
#[derive(Clone, Default)]
struct Recorder(Arc<std::sync::Mutex<std::collections::BTreeMap<usize, Recorded>>>);

impl Recorder {
    fn put(&self, which: usize, layer: usize, position: usize, experts: &[usize]) {
        if let Ok(mut map) = self.0.lock() {
            let layers = &mut map.entry(position).or_default()[which];
            if layers.len() <= layer {
                layers.resize(layer + 1, Vec::new());
            }
            // Later predictions of a layer (depth > 1, refinement) add to what is known.
            for &e in experts {
                if !layers[layer].contains(&e) {
                    layers[layer].push(e);
                }
            }
        }
    }

    /// Lists `which` (0 chosen, 1 predicted, 2 refined) of every token, `n_layers` each.
    fn take(&self, which: usize, n_layers: usize) -> Vec<Vec<Vec<usize>>> {
        self.0
            .lock()
            .map(|m| {
                m.values()
                    .map(|r| {
                        let mut v = r[which].clone();
                        v.resize(n_layers, Vec::new());
                        v
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl edgemoe::engine::RoutingObserver for Recorder {
    fn observe(&mut self, layer: usize, position: usize, routing: &edgemoe::engine::Routing) {
        self.put(0, layer, position, &routing.experts);
    }

    fn observe_prediction(&mut self, layer: usize, position: usize, experts: &[usize]) {
        // The first prediction of a layer is made before the layer before runs; a second
        // (the look-ahead's refinement) after it.
        let first = self
            .0
            .lock()
            .map(|m| {
                m.get(&position)
                    .and_then(|r| r[1].get(layer))
                    .map_or(true, Vec::is_empty)
            })
            .unwrap_or(true);
        if first {
            self.put(1, layer, position, experts);
        } else {
            let extra: Vec<usize> = {
                let m = self.0.lock();
                let known = m
                    .ok()
                    .and_then(|m| m.get(&position).map(|r| r[1][layer].clone()))
                    .unwrap_or_default();
                experts
                    .iter()
                    .copied()
                    .filter(|e| !known.contains(e))
                    .collect()
            };
            self.put(2, layer, position, &extra);
        }
    }
}

fn run_trace(mut a: TraceArgs) -> edgemoe::Result<()> {
    let ctx = a
        .gen
        .ctx
        .unwrap_or(a.gen.prompt.len() + a.gen.max_tokens + 2);
    a.gen.model.context_length = Some(ctx);
    let model = Arc::new(a.gen.model.load()?);
    let mut session = Session::new(model.clone(), Some(ctx))?;
    let recorder = Recorder::default();
    session.set_observer(Some(Box::new(recorder.clone())));
    let params = a.gen.params();
    generate(
        &mut session,
        model.tokenizer()?,
        &a.gen.prompt,
        &params,
        &mut |_| true,
    )?;
    session.set_observer(None);
    let c = &model.config;
    let trace = TraceFile {
        model: model.path.display().to_string(),
        n_layers: c.n_layers,
        n_experts: c.n_experts,
        n_experts_used: c.n_experts_used,
        tokens: recorder.take(0, c.n_layers),
        predicted: recorder.take(1, c.n_layers),
        refined: recorder.take(2, c.n_layers),
        predictor: session.prediction().predictor.name().to_string(),
    };
    let json = serde_json::to_string(&trace)
        .map_err(|e| edgemoe::Error::InvalidArgument(e.to_string()))?;
    std::fs::write(&a.output, json).map_err(|e| edgemoe::Error::io(&a.output, e))?;
    eprintln!(
        "wrote {} ({} tokens x {} layers)",
        a.output.display(),
        trace.tokens.len(),
        c.n_layers
    );
    Ok(())
}

fn run_replay(a: ReplayArgs) -> edgemoe::Result<()> {
    let text = std::fs::read_to_string(&a.trace).map_err(|e| edgemoe::Error::io(&a.trace, e))?;
    let t: TraceFile = serde_json::from_str(&text)
        .map_err(|e| edgemoe::Error::invalid_file(&a.trace, format!("not a trace: {e}")))?;
    // Fetch order as the forward pass makes it: layer by layer, experts in ascending order
    // within a layer (decode: one token at a time).
    let mut keys = Vec::new();
    for token in &t.tokens {
        for (l, experts) in token.iter().enumerate() {
            let mut e = experts.clone();
            e.sort_unstable();
            e.dedup();
            keys.extend(e.into_iter().map(|x| (l, x)));
        }
    }
    let total = t.n_layers * t.n_experts;
    let slots = if a.slots.is_empty() {
        [10, 25, 50]
            .iter()
            .map(|p| (total * p / 100).max(t.n_experts_used))
            .collect()
    } else {
        a.slots.clone()
    };
    println!(
        "{} fetches over {} tokens; {} experts in all",
        keys.len(),
        t.tokens.len(),
        total
    );
    let names: Vec<&str> = edgemoe::stream::PolicyKind::ALL
        .iter()
        .map(|k| k.build().name())
        .collect();
    let header = |last: &str| {
        let mut h = format!("{:>6}", "slots");
        for n in &names {
            h.push_str(&format!(" {n:>8}"));
        }
        h.push_str(&format!(" {:>8} {last:>12}", "belady"));
        h
    };
    let row = |n: usize, r: &[(&str, f64)], belady: f64| {
        let mut line = format!("{n:>6}");
        for (_, v) in r {
            line.push_str(&format!(" {v:>8.3}"));
        }
        let best = r.iter().map(|x| x.1).fold(0.0, f64::max);
        line.push_str(&format!(" {belady:>8.3} {:>12.3}", best / belady.max(1e-9)));
        line
    };
    println!("\ncache hit rate, demand reads only (what Belady's MIN is optimal for):");
    println!("{}", header("best/belady"));
    let mut beladys = Vec::new();
    for &n in &slots {
        let r = edgemoe::stream::compare_policies(&keys, t.n_layers, n);
        let (rates, belady) = split_belady(&r, edgemoe::stream::ReplayStats::hit_rate);
        beladys.push(belady);
        println!("{}", row(n, &rates, belady));
    }
    let steps = replay_steps(&t);
    if steps.iter().any(|s| !s.predicted_next.is_empty()) {
        println!(
            "\nfetches served from memory (kept or preloaded) with the trace's `{}` predictions \
             preloaded as the engine does; Belady's column evicts with the future known \
             (the optimum for the same preloads), the last the demand-only optimum above:",
            t.predictor
        );
        println!("{} {:>12}", header("best/belady"), "demand MIN");
        for (&n, &demand_min) in slots.iter().zip(&beladys) {
            let r = edgemoe::stream::compare_policies_with_preloads(&steps, t.n_layers, n);
            let (rates, belady) = split_belady(&r, edgemoe::stream::ReplayStats::served_rate);
            println!("{} {demand_min:>12.3}", row(n, &rates, belady));
        }
        println!("\npreloads wasted per fetch (evicted or passed over unused):");
        println!(
            "{:>6} {}",
            "slots",
            names
                .iter()
                .map(|n| format!("{n:>8}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for &n in &slots {
            let r = edgemoe::stream::compare_policies_with_preloads(&steps, t.n_layers, n);
            let w: Vec<String> = r
                .iter()
                .filter(|x| x.0 != "belady")
                .map(|x| {
                    format!(
                        "{:>8.3}",
                        x.1.wasted_preloads as f64 / x.1.accesses.max(1) as f64
                    )
                })
                .collect();
            println!("{n:>6} {}", w.join(" "));
        }
    }
    Ok(())
}

/// The online policies' rates, and Belady's.
fn split_belady(
    r: &[(&'static str, edgemoe::stream::ReplayStats)],
    rate: fn(&edgemoe::stream::ReplayStats) -> f64,
) -> (Vec<(&'static str, f64)>, f64) {
    let belady = r
        .iter()
        .find(|x| x.0 == "belady")
        .map_or(0.0, |x| rate(&x.1));
    let rates = r
        .iter()
        .filter(|x| x.0 != "belady")
        .map(|x| (x.0, rate(&x.1)))
        .collect();
    (rates, belady)
}

/// The trace as the engine ran it, layer by layer, with its predictions.
fn replay_steps(t: &TraceFile) -> Vec<edgemoe::stream::ReplayStep> {
    let mut steps = Vec::new();
    for (i, token) in t.tokens.iter().enumerate() {
        for (l, experts) in token.iter().enumerate() {
            let next = |lists: &Vec<Vec<Vec<usize>>>| {
                lists
                    .get(i)
                    .and_then(|tok| tok.get(l + 1))
                    .cloned()
                    .unwrap_or_default()
            };
            steps.push(edgemoe::stream::ReplayStep {
                layer: l,
                used: experts.clone(),
                predicted_next: next(&t.predicted),
                refined_next: next(&t.refined),
            });
        }
    }
    steps
}

#[derive(Args)]
struct ConvertArgs {
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

#[derive(Args)]
struct CalibrateArgs {
    /// The model: a GGUF with float (f16/f32/bf16) experts, or a Hugging Face checkpoint
    /// directory (converted to f16 first).
    input: PathBuf,
    /// Calibration text; unless --heldout is given, its last --heldout-fraction is held out.
    #[arg(short = 'f', long)]
    text: PathBuf,
    /// Held-out text the tolerance is checked on.
    #[arg(long)]
    heldout: Option<PathBuf>,
    #[arg(long, default_value_t = 0.1)]
    heldout_fraction: f64,
    /// Calibration tokens (from the start of the calibration text).
    #[arg(long, default_value_t = 2048)]
    calib_tokens: usize,
    /// Held-out tokens (from the start of the held-out text).
    #[arg(long, default_value_t = 8192)]
    heldout_tokens: usize,
    /// Tolerance: held-out perplexity increase over the baseline (e.g. 1% or 0.01).
    #[arg(long, default_value = "1%")]
    max_ppl_increase: String,
    /// Tolerance as a KL budget instead: mean KL(baseline || model) in nats per token.
    #[arg(long)]
    max_kl: Option<f64>,
    /// Keep this many standard errors of the held-out change (the paired per-token NLL change,
    /// or the KL) below the tolerance, so that the choice holds on other text too (the search's
    /// pick otherwise sits just inside the tolerance on its own held-out text). Default: none
    #[arg(long, default_value_t = 0.0)]
    margin: f64,
    /// Further perplexity tolerances to report (the Pareto curve), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.25%,0.5%,2%,5%")]
    sweep: Vec<String>,
    /// Candidate types, comma-separated (those that do not fit the expert rows are dropped;
    /// with the default list and no K-quant fitting, q4_0..q5_1 are used).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q2_k,q3_k,q4_k,q5_k,q6_k,q8_0"
    )]
    types: Vec<String>,
    /// The type every expert starts at and quality is measured against.
    #[arg(long, default_value = "q8_0")]
    baseline: String,
    /// Minimise total expert bytes (`bytes`) or expected bytes read per token (`reads`).
    #[arg(long, default_value = "bytes")]
    objective: String,
    /// Tokens per evaluation window.
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    /// Output directory: expert-types.json, model.gguf, report.md, report.json.
    #[arg(short, long)]
    out: PathBuf,
    /// Hide progress bars.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct BenchArgs {
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

#[derive(Args)]
struct ProfileArgs {
    /// Model file (GGUF). Default: the bundled demo model, models/demo.gguf.
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// Calibration text.
    #[arg(short = 'f', long)]
    text: PathBuf,
    /// Use only the first fraction of the text (0.9: the demo model's training split).
    #[arg(long, default_value_t = 0.9)]
    head: f64,
    /// Most calibration tokens (from the start of the text).
    #[arg(long, default_value_t = 32768)]
    tokens: usize,
    /// Tokens per window (each window starts from an empty cache).
    #[arg(long, default_value_t = 256)]
    ctx: usize,
    /// Output GGUF: the model with the predictor table.
    #[arg(short, long)]
    output: PathBuf,
    /// Kernel threads (0: one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: usize,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

fn run_profile(a: ProfileArgs) -> edgemoe::Result<()> {
    use edgemoe::engine::predictor::write_model_with_stats;
    use edgemoe::engine::profile::profile;
    let path = a.model.clone().unwrap_or_else(default_model);
    let model = Arc::new(Model::load_with(
        &path,
        LoadOptions {
            threads: a.threads,
            ..Default::default()
        },
    )?);
    let text = std::fs::read_to_string(&a.text).map_err(|e| edgemoe::Error::io(&a.text, e))?;
    let keep = (text.chars().count() as f64 * a.head.clamp(0.0, 1.0)) as usize;
    let end = text
        .char_indices()
        .nth(keep)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let mut ids = model.tokenizer()?.encode(&text[..end], false)?;
    ids.truncate(a.tokens);
    let windows = ids.len().div_ceil(a.ctx.max(1));
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        window_bar("profile", windows)
    };
    let started = std::time::Instant::now();
    let mut stats = profile(&model, &ids, a.ctx, &mut |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    stats.calibration = Some(format!(
        "{} tokens of {} (first {:.0}%), windows of {}",
        ids.len(),
        a.text
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        100.0 * a.head.clamp(0.0, 1.0),
        a.ctx
    ));
    write_model_with_stats(&path, &a.output, &stats)?;
    let (k1, k2) = stats.keys();
    eprintln!(
        "counted {} tokens in {:.1} s: {k1} one-layer and {k2} two-layer keys; wrote {}",
        stats.tokens(),
        started.elapsed().as_secs_f64(),
        a.output.display()
    );
    Ok(())
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

fn run_generate(mut a: GenerateArgs) -> edgemoe::Result<()> {
    use std::io::Write;
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
    let params = a.params();
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", a.prompt);
    let _ = out.flush();
    let stats = generate(&mut session, tokenizer, &a.prompt, &params, &mut |text| {
        let _ = write!(out, "{text}");
        let _ = out.flush();
        true
    })?;
    let _ = writeln!(out);
    drop(out);
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
    if a.stats {
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
        if let Some(st) = model.streamed() {
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
    }
    Ok(())
}

fn run_perplexity(mut a: PerplexityArgs) -> edgemoe::Result<()> {
    a.model.context_length = Some(a.text.ctx);
    let model = Arc::new(a.model.load()?);
    let ids = a.text.tokens(&model)?;
    let (ctx, stride) = (a.text.ctx, a.text.stride());
    let windows = edgemoe::engine::perplexity::plan(ids.len(), ctx, stride)?;
    let bar = window_bar("perplexity", windows.len());
    let r = perplexity_with(
        &model,
        &ids,
        ctx,
        stride,
        a.token_by_token,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "perplexity {:.4} ± {:.4} (mean NLL {:.5} ± {:.5}) over {} windows of {ctx} tokens, stride {stride}, {} predictions",
        r.perplexity, r.perplexity_std_error, r.mean_nll, r.nll_std_error, r.windows, r.predictions
    );
    if let (true, Some(st)) = (a.stats, model.streamed()) {
        let s = st.stats();
        eprintln!(
            "experts: {} fetches, {} cache hits, {} misses, read {}; {} fetches at low precision, saved {}",
            s.gets,
            s.hits,
            s.misses,
            human(s.bytes_read),
            s.low_gets,
            human(s.low_bytes_saved)
        );
    }
    Ok(())
}

fn run_kl(mut a: KlArgs) -> edgemoe::Result<()> {
    a.model.context_length = Some(a.text.ctx);
    let model = Arc::new(a.model.load()?);
    let reference = Arc::new(Model::load(&a.reference)?);
    let ids = a.text.tokens(&reference)?;
    let (ctx, stride) = (a.text.ctx, a.text.stride());
    let windows = edgemoe::engine::perplexity::plan(ids.len(), ctx, stride)?;
    let bar = window_bar("kl", windows.len());
    let d = edgemoe::engine::divergence::compare(
        &model,
        &reference,
        &ids,
        ctx,
        stride,
        &mut |done, _| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "KL(reference || model) {:.6} ± {:.6} nats per token; top-1 agreement {:.2}%",
        d.kl,
        d.kl_std_error,
        100.0 * d.top1_agreement
    );
    println!(
        "perplexity: model {:.4} ± {:.4}, reference {:.4} ± {:.4} ({:+.3}%); {} predictions in {} windows of {ctx}, stride {stride}",
        d.model.perplexity,
        d.model.perplexity_std_error,
        d.reference.perplexity,
        d.reference.perplexity_std_error,
        100.0 * (d.model.perplexity / d.reference.perplexity - 1.0),
        d.model.predictions,
        d.model.windows
    );
    Ok(())
}

fn run_convert(a: ConvertArgs) -> edgemoe::Result<()> {
    let mut overrides = Vec::new();
    if let Some(t) = &a.attn_type {
        overrides.push((ATTENTION_PATTERN.to_string(), GgmlType::from_name(t)?));
    }
    if let Some(t) = &a.expert_type {
        overrides.push((EXPERT_PATTERN.to_string(), GgmlType::from_name(t)?));
    }
    for o in &a.overrides {
        let (pattern, ty) = o.rsplit_once('=').ok_or_else(|| {
            edgemoe::Error::InvalidArgument(format!("--override `{o}` is not PATTERN=TYPE"))
        })?;
        overrides.push((pattern.to_string(), GgmlType::from_name(ty)?));
    }
    let opts = ConvertOptions {
        matrix_type: a.ty.as_deref().map(GgmlType::from_name).transpose()?,
        overrides,
        low_expert_type: a
            .low_expert_type
            .as_deref()
            .map(GgmlType::from_name)
            .transpose()?,
        progress: !a.quiet,
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
fn report_fallbacks(fallbacks: &[edgemoe::convert::Fallback]) {
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

/// `1%` or `0.01` as a fraction.
fn parse_fraction(s: &str) -> edgemoe::Result<f64> {
    let bad =
        || edgemoe::Error::InvalidArgument(format!("`{s}` is not a fraction like 1% or 0.01"));
    let v = match s.trim().strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => s.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if !(v.is_finite() && v >= 0.0) {
        return Err(bad());
    }
    Ok(v)
}

fn run_calibrate(a: CalibrateArgs) -> edgemoe::Result<()> {
    use edgemoe::convert::calibrate::{calibrate, CalibrateOptions, Objective, Tolerance};
    let io = |p: &std::path::Path, e| edgemoe::Error::io(p, e);
    std::fs::create_dir_all(&a.out).map_err(|e| io(&a.out, e))?;
    // A checkpoint directory is converted to f16 first; the final model is made from the input.
    let gguf = if a.input.is_dir() {
        let path = a.out.join("input-f16.gguf");
        let opts = ConvertOptions {
            progress: !a.quiet,
            ..Default::default()
        };
        convert(&a.input, &path, &opts)?;
        path
    } else {
        a.input.clone()
    };
    let model = Arc::new(Model::load(&gguf)?);
    let text = std::fs::read_to_string(&a.text).map_err(|e| io(&a.text, e))?;
    let (calib_text, heldout_text) = match &a.heldout {
        Some(p) => (text, std::fs::read_to_string(p).map_err(|e| io(p, e))?),
        None => {
            let n = text.chars().count();
            let keep = (n as f64 * (1.0 - a.heldout_fraction.clamp(0.0, 1.0))) as usize;
            let at = text
                .char_indices()
                .nth(keep)
                .map(|(i, _)| i)
                .unwrap_or(text.len());
            (text[..at].to_string(), text[at..].to_string())
        }
    };
    let tok = model.tokenizer()?;
    let mut calib = tok.encode(&calib_text, false)?;
    calib.truncate(a.calib_tokens);
    let mut heldout = tok.encode(&heldout_text, false)?;
    heldout.truncate(a.heldout_tokens);
    let types = a
        .types
        .iter()
        .map(|t| GgmlType::from_name(t))
        .collect::<edgemoe::Result<Vec<_>>>()?;
    let opts = CalibrateOptions {
        candidates: types,
        baseline: GgmlType::from_name(&a.baseline)?,
        tolerance: match a.max_kl {
            Some(k) => Tolerance::Kl(k),
            None => Tolerance::PplIncrease(parse_fraction(&a.max_ppl_increase)?),
        },
        sweep: a
            .sweep
            .iter()
            .map(|s| parse_fraction(s))
            .collect::<edgemoe::Result<_>>()?,
        objective: match a.objective.as_str() {
            "bytes" => Objective::Bytes,
            "reads" => Objective::Reads,
            o => {
                return Err(edgemoe::Error::InvalidArgument(format!(
                    "unknown objective `{o}` (bytes, reads)"
                )))
            }
        },
        ctx: a.ctx,
        margin: if a.margin.is_finite() && a.margin >= 0.0 {
            a.margin
        } else {
            return Err(edgemoe::Error::InvalidArgument(format!(
                "--margin must be a non-negative number of standard errors, not {}",
                a.margin
            )));
        },
        progress: !a.quiet,
    };
    let started = std::time::Instant::now();
    let cal = calibrate(&model, &calib, &heldout, &opts)?;
    let seconds = started.elapsed().as_secs_f64();
    let table_path = a.out.join("expert-types.json");
    cal.chosen.write(&table_path)?;
    let model_path = a.out.join("model.gguf");
    let convert_opts = ConvertOptions {
        progress: !a.quiet,
        ..Default::default()
    };
    let report = convert_with_expert_types(&a.input, &model_path, &convert_opts, &cal.chosen)?;
    report_fallbacks(&report.fallbacks);
    let md = format!(
        "# Bitwidth calibration of {}\n\n{}\nCalibration took {seconds:.0} s.\n",
        a.input.display(),
        cal.markdown()
    );
    std::fs::write(a.out.join("report.md"), &md).map_err(|e| io(&a.out, e))?;
    let mut json =
        serde_json::to_value(&cal).map_err(|e| edgemoe::Error::InvalidArgument(e.to_string()))?;
    let names = |t: &ExpertTypes| -> Vec<Vec<&'static str>> {
        t.layers
            .iter()
            .map(|l| l.iter().map(|x| x.name()).collect())
            .collect()
    };
    json["adapted_types"] =
        serde_json::json!(cal.adapted_types.iter().map(names).collect::<Vec<_>>());
    json["kl_matched_types"] =
        serde_json::json!(cal.kl_matched_types.iter().map(names).collect::<Vec<_>>());
    json["model"] = serde_json::json!(a.input.display().to_string());
    json["seconds"] = serde_json::json!(seconds);
    let json_path = a.out.join("report.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
    .map_err(|e| io(&json_path, e))?;
    println!("{md}");
    eprintln!(
        "wrote {}, {} ({}), report.md, report.json in {}",
        table_path.display(),
        model_path.display(),
        human(report.bytes_written),
        a.out.display()
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
    if a.tensors {
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
    Ok(())
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
fn run_bench(mut a: BenchArgs) -> edgemoe::Result<()> {
    use rand::{Rng, SeedableRng};
    if !a.sweep.is_empty() {
        let backends = a
            .sweep_backends
            .iter()
            .map(|b| parse_backend(b))
            .collect::<edgemoe::Result<Vec<_>>>()?;
        return sweep::run(&sweep::SweepPlan {
            model: a.model.model.clone().unwrap_or_else(default_model),
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
        });
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
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut session = Session::new(model.clone(), Some(ctx))?;
    let mut pp = |session: &mut Session, n: usize| -> edgemoe::Result<f64> {
        let ids: Vec<u32> = (0..n).map(|_| rng.random_range(0..vocab)).collect();
        session.reset();
        let t = std::time::Instant::now();
        session.eval(&ids, false)?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut results = Vec::new();
    if a.n_prompt > 0 {
        pp(&mut session, a.n_prompt)?;
        let samples = (0..a.repetitions)
            .map(|_| pp(&mut session, a.n_prompt).map(|s| a.n_prompt as f64 / s))
            .collect::<edgemoe::Result<Vec<f64>>>()?;
        results.push(BenchResult::new(
            format!("pp{}", a.n_prompt),
            a.n_prompt,
            samples,
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
    let mut tg = |session: &mut Session, n: usize| -> edgemoe::Result<f64> {
        session.reset();
        let mut token = bos.unwrap_or_else(|| rng.random_range(0..vocab));
        let t = std::time::Instant::now();
        for _ in 0..n {
            session.eval(&[token], false)?;
            token = rng.random_range(0..vocab);
        }
        Ok(t.elapsed().as_secs_f64())
    };
    if a.n_gen > 0 {
        tg(&mut session, 1)?;
        let samples = (0..a.repetitions)
            .map(|_| tg(&mut session, a.n_gen).map(|s| a.n_gen as f64 / s))
            .collect::<edgemoe::Result<Vec<f64>>>()?;
        results.push(BenchResult::new(format!("tg{}", a.n_gen), a.n_gen, samples));
    }
    let path = a.model.model.clone().unwrap_or_else(default_model);
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
        for r in &results {
            println!(
                "{:>8} {:>10.2} ± {:>7.2} tok/s",
                r.test, r.avg_ts, r.stddev_ts
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => run_generate(a),
        Command::Perplexity(a) => run_perplexity(a),
        Command::Kl(a) => run_kl(a),
        Command::Trace(a) => run_trace(a),
        Command::Replay(a) => run_replay(a),
        Command::Convert(a) => run_convert(a),
        Command::Calibrate(a) => run_calibrate(a),
        Command::Profile(a) => run_profile(a),
        Command::Inspect(a) => run_inspect(a),
        Command::Bench(a) => run_bench(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
