//! What several subcommands share: the model flags, the measured text, sizes and progress bars.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use edgemoe::convert::{Progress, ProgressFn, ProgressUnit};
use edgemoe::engine::{Backend, LoadOptions, Model, PredictionOptions, PredictorKind};
use indicatif::{ProgressBar, ProgressStyle};

/// The bundled demo model, found from the working directory or the source tree.
pub fn default_model() -> PathBuf {
    let local = PathBuf::from("models/demo.gguf");
    if local.exists() {
        local
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf")
    }
}

#[derive(Args)]
pub struct ModelArgs {
    /// Model file (GGUF). Default: the bundled demo model, models/demo.gguf.
    #[arg(short, long)]
    pub model: Option<PathBuf>,
    /// Memory budget for the whole model (e.g. 512M, 2G); experts are streamed from storage
    /// into a pool sized to fit. Default: no limit, everything resident.
    #[arg(long)]
    pub memory: Option<String>,
    /// Expert source when a budget is set: auto, io_uring, pread, mmap.
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Layers ahead whose experts are predicted and preloaded (0: no prediction).
    #[arg(long, default_value_t = 1)]
    pub lookahead: usize,
    /// Expert predictor: lookahead (later layers' routers on the current hidden state), stats
    /// (EdgeMoE statistics written by `edgemoe profile`), none.
    #[arg(long, default_value = "lookahead")]
    pub predictor: String,
    /// Experts preloaded per token per predicted layer (default: the experts a token uses).
    #[arg(long)]
    pub preload_count: Option<usize>,
    /// Router look-ahead: do not predict layer l+1 a second time once layer l's experts ran.
    #[arg(long)]
    pub no_refine: bool,
    /// Streaming: do not read experts into empty pool slots ahead of need.
    #[arg(long)]
    pub no_fill_ahead: bool,
    /// Streaming: preload every prediction at once, evicting if need be (default: a preload
    /// that would evict waits for demand reads, and is dropped when it cannot pay).
    #[arg(long)]
    pub eager_preloads: bool,
    /// Expert-cache eviction policy when streaming: adaptive, lru, lfu, edgemoe, hobbit,
    /// forward.
    #[arg(long, default_value = "adaptive")]
    pub policy: String,
    /// Kernel threads (0: one per physical core).
    #[arg(short = 't', long, default_value_t = 0)]
    pub threads: usize,
    /// Lower precision on a miss (HOBBIT): a routed expert that is not cached, is not the
    /// token's top-1 and has less than this share of the token's top-k gate weight is read
    /// from its low-precision copy (a file converted with --low-expert-type). Default: off.
    #[arg(long, value_name = "F")]
    pub low_precision_threshold: Option<f32>,
    /// Set by the command: tokens of KV cache the budget reserves.
    #[arg(skip)]
    pub context_length: Option<usize>,
}

pub fn parse_backend(name: &str) -> edgemoe::Result<Backend> {
    Backend::parse(name).ok_or_else(|| {
        edgemoe::Error::InvalidArgument(format!(
            "unknown backend `{name}` (auto, resident, io_uring, pread, mmap)"
        ))
    })
}

impl ModelArgs {
    /// The model file: `--model`, or the demo model.
    pub fn path(&self) -> PathBuf {
        self.model.clone().unwrap_or_else(default_model)
    }

    pub fn policy(&self) -> edgemoe::Result<edgemoe::stream::PolicyKind> {
        edgemoe::stream::PolicyKind::parse(&self.policy).ok_or_else(|| {
            edgemoe::Error::InvalidArgument(format!(
                "unknown policy `{}` (lru, lfu, edgemoe, hobbit, forward)",
                self.policy
            ))
        })
    }

    pub fn prediction(&self) -> edgemoe::Result<PredictionOptions> {
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

    /// Loads the model as the flags say, and reports how a budget was split.
    pub fn load(&self) -> edgemoe::Result<Model> {
        let memory_budget = match &self.memory {
            Some(m) => Some(edgemoe::sys::parse_bytes(m).ok_or_else(|| {
                edgemoe::Error::InvalidArgument(format!("`{m}` is not a size like 512M or 2G"))
            })?),
            None => None,
        };
        let backend = parse_backend(&self.backend)?;
        let policy = self.policy()?;
        let model = Model::load_with(
            &self.path(),
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
        report_budget(&model);
        Ok(model)
    }
}

/// How a memory budget was split, on stderr (nothing when the model is resident).
fn report_budget(model: &Model) {
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
}

/// A text to measure on, and the sliding window to measure with.
#[derive(Args)]
pub struct TextArgs {
    /// Text file to measure on.
    #[arg(short = 'f', long, alias = "file")]
    pub text: PathBuf,
    /// Use only the last fraction of the file (0.1: the demo model's held-out split).
    #[arg(long, default_value_t = 1.0)]
    pub tail: f64,
    /// Tokens per window.
    #[arg(long, alias = "window", default_value_t = 256)]
    pub ctx: usize,
    /// Tokens the window moves by; each window scores only tokens the previous one did not.
    /// Default: the window (non-overlapping windows).
    #[arg(long)]
    pub stride: Option<usize>,
}

impl TextArgs {
    pub fn stride(&self) -> usize {
        self.stride.unwrap_or(self.ctx)
    }

    /// The text (its last `--tail` fraction), tokenized without BOS.
    pub fn tokens(&self, model: &Model) -> edgemoe::Result<Vec<u32>> {
        let text =
            std::fs::read_to_string(&self.text).map_err(|e| edgemoe::Error::io(&self.text, e))?;
        // Split where the demo model's trainer does: by characters, `text[int(0.9 * len):]`.
        let n_chars = text.chars().count();
        let skip = (n_chars as f64 * (1.0 - self.tail.clamp(0.0, 1.0))) as usize;
        model
            .tokenizer()?
            .encode(&text[char_offset(&text, skip)..], false)
    }
}

/// The byte offset of character `n` of `text` (its length when `text` is shorter).
pub fn char_offset(text: &str, n: usize) -> usize {
    text.char_indices()
        .nth(n)
        .map(|(i, _)| i)
        .unwrap_or(text.len())
}

/// `bytes` in binary units: `512 B`, `1.50 KiB`, `2.00 GiB`.
pub fn human(bytes: u64) -> String {
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

/// A progress bar over the windows of a measurement.
pub fn window_bar(what: &str, windows: usize) -> ProgressBar {
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

/// A bar for one stage of the library's progress reports: bytes with the item in hand
/// (conversion), or a count of steps (calibration).
fn stage_bar(p: &Progress<'_>) -> ProgressBar {
    let bar = ProgressBar::new(p.total);
    let template = match p.unit {
        ProgressUnit::Bytes => "{msg:>24} [{bar:40}] {bytes}/{total_bytes} ({eta})".to_string(),
        ProgressUnit::Items => format!("{:>28} [{{bar:40}}] {{pos}}/{{len}} ({{eta}})", p.stage),
    };
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}

/// Terminal bars drawn from the library's progress reports, one bar per stage; clears what
/// is left on drop (an operation that failed half-way).
#[derive(Clone, Default)]
pub struct StageBars(Arc<Mutex<Option<(String, ProgressBar)>>>);

impl StageBars {
    /// The callback to pass in the library's options (`None` when `quiet`: no reports).
    pub fn callback(&self, quiet: bool) -> Option<ProgressFn> {
        if quiet {
            return None;
        }
        let bars = self.clone();
        Some(ProgressFn::new(move |p| bars.show(p)))
    }

    fn show(&self, p: Progress<'_>) {
        let Ok(mut open) = self.0.lock() else {
            return;
        };
        if open.as_ref().is_some_and(|(stage, _)| stage != p.stage) {
            if let Some((_, bar)) = open.take() {
                bar.finish_and_clear();
            }
        }
        if open.is_none() {
            if p.finished() {
                return;
            }
            *open = Some((p.stage.to_string(), stage_bar(&p)));
        }
        if let Some((_, bar)) = open.as_ref() {
            if !p.item.is_empty() {
                bar.set_message(p.item.to_string());
            }
            if bar.length() != Some(p.total) {
                bar.set_length(p.total);
            }
            if bar.position() != p.done {
                bar.set_position(p.done);
            }
        }
        if p.finished() {
            if let Some((_, bar)) = open.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Drop for StageBars {
    fn drop(&mut self) {
        // The last clone (the caller's, once the options holding the callback are gone).
        if Arc::strong_count(&self.0) == 1 {
            if let Ok(mut open) = self.0.lock() {
                if let Some((_, bar)) = open.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

/// Sampling flags shared by `generate` and `chat`.
#[derive(clap::Args)]
pub struct SamplingArgs {
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Keep the k most likely tokens (0: off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens up to this probability mass (1: off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than this fraction of the most likely one (0: off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise tokens seen in the last `--repeat-last-n` tokens (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed: the same seed gives the same text.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampler settings these flags describe.
    pub fn params(&self) -> edgemoe::sampling::SamplerParams {
        edgemoe::sampling::SamplerParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed: self.seed,
        }
    }
}
