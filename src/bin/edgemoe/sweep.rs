//! `edgemoe bench --sweep`: decode speed, hit rate and bytes per token against the memory
//! budget, per backend and predictor, each run from a cold cache, next to the two physical
//! limits measured in the same run: compute time per token with every expert resident, and
//! the raw sequential uncached read bandwidth of the same file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use edgemoe::engine::model::preflight;
use edgemoe::engine::{Backend, LoadOptions, Model, PredictionOptions, PredictorKind, Session};
use edgemoe::stream::PolicyKind;
use edgemoe::stream::{rawread, Source};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// What to sweep.
pub struct SweepPlan {
    pub model: PathBuf,
    /// Expert pool sizes, in percent of all expert bytes.
    pub percents: Vec<f64>,
    pub backends: Vec<Backend>,
    /// Expert predictors driving preloads (`none`: no preloading).
    pub predictors: Vec<PredictorKind>,
    /// Depth and preload count of the predictors.
    pub prediction: PredictionOptions,
    pub policy: PolicyKind,
    /// See [`LoadOptions::fill_ahead`] and [`LoadOptions::budget_aware_preloads`].
    pub fill_ahead: bool,
    pub budget_aware_preloads: bool,
    pub threads: usize,
    /// Tokens decoded per run.
    pub n_gen: usize,
    pub out: PathBuf,
}

/// One budget, backend and predictor.
#[derive(Serialize)]
struct Run {
    backend: String,
    predictor: String,
    percent: f64,
    budget: u64,
    pool: u64,
    tokens: usize,
    tokens_per_second: f64,
    ms_per_token: f64,
    hit_rate: f64,
    /// Fetches served by the cache or a preload.
    served_rate: f64,
    hits: u64,
    preload_hits: u64,
    misses: u64,
    preloads: u64,
    wasted_preloads: u64,
    /// Of `preloads`, fill-ahead reads into empty slots.
    fill_reads: u64,
    /// Predictions not preloaded (not worth an eviction, or their layer came first).
    dropped_preloads: u64,
    bytes_read_per_token: f64,
    /// Bytes the used experts needed that were not already cached (demand misses and useful
    /// preloads): what any engine with this cache content has to read.
    needed_bytes_per_token: f64,
    read_bandwidth: f64,
    io_wait_ms_per_token: f64,
    /// max(resident compute time, needed bytes / raw bandwidth), per token.
    ideal_ms_per_token: f64,
    /// Actual over ideal time per token (1.0 is the physical limit).
    vs_ideal: f64,
    /// Resident compute plus needed bytes / raw bandwidth, per token: a pipeline that never
    /// overlaps a read with computation.
    serial_ms_per_token: f64,
    /// Decode time per token with every expert resident, measured just before this run.
    resident_ms_per_token: f64,
    /// Mean of the raw sequential read passes just before and just after this run.
    raw_read_bandwidth: f64,
    /// How much of the shorter of compute and needed reads ran beside the other:
    /// (serial - actual) / min(compute, reads). 1.0 reaches the ideal; 0 overlaps nothing.
    hidden_share: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    threads: usize,
    kernel: String,
    policy: String,
    fill_ahead: bool,
    budget_aware_preloads: bool,
    expert_bytes: u64,
    resident_ms_per_token: f64,
    /// Mean of every raw pass.
    raw_read_bandwidth: f64,
    /// Each raw pass, bytes per second: one before the first run and one after each run.
    raw_read_passes: Vec<f64>,
    runs: Vec<Run>,
}

/// Runs the sweep; writes `sweep.json`, `sweep.csv` and `sweep.md` into `plan.out` and prints
/// the table.
pub fn run(plan: &SweepPlan) -> edgemoe::Result<()> {
    std::fs::create_dir_all(&plan.out).map_err(|e| edgemoe::Error::io(&plan.out, e))?;
    let ctx = plan.n_gen + 1;
    let pf = preflight(&plan.model, u64::MAX / 4, Some(ctx))?;
    let fixed = pf.resident + pf.kv_cache + pf.scratch;
    let mut limits = Limits::measure(plan, ctx)?;
    let mut runs = Vec::new();
    for &backend in &plan.backends {
        for &predictor in &plan.predictors {
            let prediction = PredictionOptions {
                predictor,
                ..plan.prediction
            };
            for &pct in &plan.percents {
                let budget = fixed + (pf.max_pool as f64 * pct / 100.0) as u64;
                if !runs.is_empty() {
                    let ms = limits.resident_pass()?;
                    limits.resident_passes.push(ms);
                }
                if let Some(run) = limits.run(backend, prediction, pct, budget)? {
                    eprintln!("{}", row(&run));
                    runs.push(run);
                }
            }
        }
    }
    let report = Report {
        model: plan.model.display().to_string(),
        threads: plan.threads,
        kernel: limits.kernel,
        policy: format!("{:?}", plan.policy).to_lowercase(),
        fill_ahead: plan.fill_ahead,
        budget_aware_preloads: plan.budget_aware_preloads,
        expert_bytes: pf.expert_bytes,
        resident_ms_per_token: mean(&limits.resident_passes),
        raw_read_bandwidth: mean(&limits.raw_passes),
        raw_read_passes: limits.raw_passes,
        runs,
    };
    write_outputs(&plan.out, &report)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The limits: compute with every expert in memory (warm), and raw storage bandwidth. Both
/// are measured again next to every run: on a shared or virtual machine either moves by up to
/// 2x within minutes (CPU steal, the disk's own caching).
struct Limits<'a> {
    plan: &'a SweepPlan,
    ctx: usize,
    kernel: String,
    source: Source,
    /// Byte range of the experts in the file.
    region: (u64, u64),
    /// Resident decode time per token, ms: one before the first run, then before each later one.
    resident_passes: Vec<f64>,
    /// Raw read bandwidth, bytes per second: one before the first run and one after each run.
    raw_passes: Vec<f64>,
}

impl<'a> Limits<'a> {
    /// The first pass of each limit.
    fn measure(plan: &'a SweepPlan, ctx: usize) -> edgemoe::Result<Self> {
        let mut limits = Limits {
            plan,
            ctx,
            kernel: String::new(),
            source: Source::path(&plan.model),
            region: (0, 0),
            resident_passes: Vec::new(),
            raw_passes: Vec::new(),
        };
        limits.resident_passes.push(limits.resident_pass()?);
        limits.kernel = edgemoe::quant::kernel_name().to_string();
        limits.region = expert_region(&plan.model)?;
        limits.source.drop_page_cache();
        limits.raw_passes.push(limits.raw_pass()?);
        eprintln!("resident compute {:.2} ms/token", limits.resident_passes[0]);
        Ok(limits)
    }

    /// Decode time per token with every expert resident, ms.
    fn resident_pass(&self) -> edgemoe::Result<f64> {
        let plan = self.plan;
        let resident = Arc::new(Model::load_with(
            &plan.model,
            LoadOptions {
                backend: Backend::Resident,
                threads: plan.threads,
                context_length: Some(self.ctx),
                ..Default::default()
            },
        )?);
        decode(&resident, plan.n_gen.min(16))?; // page the mapped weights in
        Ok(decode(&resident, plan.n_gen)? * 1e3 / plan.n_gen as f64)
    }

    /// Raw sequential uncached read bandwidth of the expert region, bytes per second.
    ///
    /// The disk's speed drifts (a virtual disk by up to 2x within minutes), so a raw pass runs
    /// before the first run and after every run; each run is held to the mean of the two passes
    /// around it. At least 256 MiB a pass: the demo's 7.5 MiB read once take ~12 ms.
    fn raw_pass(&self) -> edgemoe::Result<f64> {
        let (start, end) = self.region;
        self.source.drop_page_cache();
        let raw =
            rawread::sequential_read(&self.source, start, end - start, 4 << 20, 16, 256 << 20)?;
        eprintln!(
            "raw sequential uncached read ({} KiB reads, 16 in flight): {:.0} MiB/s ({} MiB in {} passes){}",
            raw.chunk >> 10,
            raw.bandwidth() / (1 << 20) as f64,
            raw.bytes >> 20,
            raw.passes,
            raw.cache_note
                .as_deref()
                .map(|n| format!(" [{n}]"))
                .unwrap_or_default()
        );
        Ok(raw.bandwidth())
    }

    /// The model streamed under `budget` from a cold page cache; `None` (with a note) when
    /// the budget is below the minimum.
    fn load(
        &self,
        backend: Backend,
        prediction: PredictionOptions,
        pct: f64,
        budget: u64,
    ) -> edgemoe::Result<Option<Arc<Model>>> {
        let plan = self.plan;
        self.source.drop_page_cache();
        match Model::load_with(
            &plan.model,
            LoadOptions {
                memory_budget: Some(budget),
                backend,
                threads: plan.threads,
                context_length: Some(self.ctx),
                policy: plan.policy,
                prediction,
                fill_ahead: plan.fill_ahead,
                budget_aware_preloads: plan.budget_aware_preloads,
                ..Default::default()
            },
        ) {
            Ok(m) => Ok(Some(Arc::new(m))),
            Err(edgemoe::Error::BudgetTooSmall { .. }) => {
                eprintln!("{pct}%: below the minimum budget, skipped");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// One run: decodes `plan.n_gen` tokens under `budget`, then a raw pass.
    fn run(
        &mut self,
        backend: Backend,
        prediction: PredictionOptions,
        pct: f64,
        budget: u64,
    ) -> edgemoe::Result<Option<Run>> {
        let resident_ms = self.resident_passes[self.resident_passes.len() - 1];
        let Some(model) = self.load(backend, prediction, pct, budget)? else {
            return Ok(None);
        };
        let st = model
            .streamed()
            .cloned()
            .ok_or_else(|| edgemoe::Error::InvalidArgument("not streamed".into()))?;
        st.reset_stats();
        let secs = decode(&model, self.plan.n_gen)?;
        let s = st.stats();
        drop(model);
        let raw_before = *self.raw_passes.last().unwrap_or(&0.0);
        let raw_after = self.raw_pass()?;
        self.raw_passes.push(raw_after);
        let raw_bw = (raw_before + raw_after) / 2.0;
        let n = self.plan.n_gen as f64;
        let mean_read = s.bytes_read as f64 / s.reads.max(1) as f64;
        let needed = (s.misses + s.preload_hits) as f64 * mean_read / n;
        let ms = secs * 1e3 / n;
        let read_ms = needed / raw_bw * 1e3;
        let ideal = resident_ms.max(read_ms);
        let serial = resident_ms + read_ms;
        Ok(Some(Run {
            backend: st.backend_name().to_string(),
            predictor: prediction.predictor.name().to_string(),
            percent: pct,
            budget,
            pool: st.pool_bytes(),
            tokens: self.plan.n_gen,
            tokens_per_second: n / secs,
            ms_per_token: ms,
            hit_rate: s.hit_rate(),
            served_rate: (s.hits + s.preload_hits) as f64 / s.gets.max(1) as f64,
            hits: s.hits,
            preload_hits: s.preload_hits,
            misses: s.misses,
            preloads: s.preloads,
            wasted_preloads: s.wasted_preloads,
            fill_reads: s.fill_reads,
            dropped_preloads: s.dropped_preloads,
            bytes_read_per_token: s.bytes_read as f64 / n,
            needed_bytes_per_token: needed,
            read_bandwidth: s.read_bandwidth(),
            io_wait_ms_per_token: s.io_wait.as_secs_f64() * 1e3 / n,
            ideal_ms_per_token: ideal,
            vs_ideal: ms / ideal,
            serial_ms_per_token: serial,
            hidden_share: hidden_share(resident_ms, read_ms, ms),
            raw_read_bandwidth: raw_bw,
            resident_ms_per_token: resident_ms,
        }))
    }
}

/// (serial - actual) / the shorter of compute and reads; 1 when there is nothing to hide.
fn hidden_share(compute_ms: f64, read_ms: f64, actual_ms: f64) -> f64 {
    let shorter = compute_ms.min(read_ms);
    if shorter > 0.0 {
        (compute_ms + read_ms - actual_ms) / shorter
    } else {
        1.0
    }
}

/// Decodes `n` random tokens one at a time in a fresh session (predicting as the model's
/// defaults say); returns the seconds taken.
fn decode(model: &Arc<Model>, n: usize) -> edgemoe::Result<f64> {
    let mut session = Session::new(model.clone(), Some(n + 1))?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let vocab = model.config.vocab as u32;
    let t0 = Instant::now();
    for _ in 0..n {
        session.eval(&[rng.random_range(0..vocab)], false)?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// Byte range of the file holding experts (what a streamed run reads from).
fn expert_region(path: &Path) -> edgemoe::Result<(u64, u64)> {
    let file = edgemoe::format::GgufFile::open(path)?;
    let config = edgemoe::engine::ModelConfig::from_gguf(&file.header, path)?;
    let dir = edgemoe::engine::ExpertDirectory::from_gguf(&file.header, &config, path)?;
    let spans = dir.iter().map(|e| e.span());
    let (lo, hi) = spans.fold((u64::MAX, 0), |(lo, hi), (s, e)| (lo.min(s), hi.max(e)));
    Ok((lo.min(hi), hi))
}

const HEADER: &str = "| backend | predictor | budget % | pool MiB | tok/s | ms/token | resident ms | raw MiB/s | ideal ms | vs ideal | serial ms | hidden | hit rate | served | MiB read/token | read MiB/s | wait ms/token |";

fn row(r: &Run) -> String {
    format!(
        "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2}x | {:.2} | {:.2} | {:.3} | {:.3} | {:.1} | {:.0} | {:.1} |",
        r.backend,
        r.predictor,
        r.percent,
        r.pool as f64 / (1 << 20) as f64,
        r.tokens_per_second,
        r.ms_per_token,
        r.resident_ms_per_token,
        r.raw_read_bandwidth / (1 << 20) as f64,
        r.ideal_ms_per_token,
        r.vs_ideal,
        r.serial_ms_per_token,
        r.hidden_share,
        r.hit_rate,
        r.served_rate,
        r.bytes_read_per_token / (1 << 20) as f64,
        r.read_bandwidth / (1 << 20) as f64,
        r.io_wait_ms_per_token,
    )
}

fn write_outputs(out: &Path, report: &Report) -> edgemoe::Result<()> {
    let write = |name: &str, text: String| {
        let p = out.join(name);
        std::fs::write(&p, text).map_err(|e| edgemoe::Error::io(&p, e))
    };
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| edgemoe::Error::InvalidArgument(format!("report: {e}")))?;
    write("sweep.json", json)?;
    // Every field of every run, one row each (columns in the JSON's key order).
    let rows: Vec<serde_json::Value> = report
        .runs
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()
        .map_err(|e| edgemoe::Error::InvalidArgument(format!("report: {e}")))?;
    let mut csv = String::new();
    if let Some(serde_json::Value::Object(first)) = rows.first() {
        csv += &first.keys().cloned().collect::<Vec<_>>().join(",");
        csv.push('\n');
    }
    for row in &rows {
        if let serde_json::Value::Object(fields) = row {
            let cells: Vec<String> = fields.values().map(|v| v.to_string()).collect();
            csv += &cells.join(",");
            csv.push('\n');
        }
    }
    write("sweep.csv", csv)?;
    let sep = HEADER
        .split('|')
        .skip(1)
        .map(|_| "---|")
        .collect::<String>();
    let mut md = format!(
        "{}: {} threads, {} kernels, {} policy, fill-ahead {}, budget-aware preloads {}; expert bytes {} MiB\n\nresident compute {:.2} ms/token and raw sequential uncached read (reads of up to 4 MiB, 16 in flight, at least 256 MiB) {:.0} MiB/s, means of passes next to each run (the run's own in its row)\n\n{HEADER}\n|{}\n",
        report.model,
        report.threads,
        report.kernel,
        report.policy,
        on_off(report.fill_ahead),
        on_off(report.budget_aware_preloads),
        report.expert_bytes >> 20,
        report.resident_ms_per_token,
        report.raw_read_bandwidth / (1 << 20) as f64,
        &sep[..sep.len() - 4]
    );
    for r in &report.runs {
        md += &row(r);
        md.push('\n');
    }
    println!("{md}");
    write("sweep.md", md)
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}
