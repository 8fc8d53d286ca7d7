//! A loaded model: configuration, resident (non-expert) weights, the expert directory and the
//! source experts are served from. Immutable after load; shared by sessions through `Arc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::budget::BudgetPlan;
use super::config::ModelConfig;
use super::experts::{ExpertDirectory, ExpertSource, ResidentExperts};
use crate::format::GgufFile;
use crate::tensor::{ops, Matrix, ThreadPool};

use super::weights::ResidentWeights;
pub use super::weights::{LayerWeights, SharedExpert};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// A model ready to run.
pub struct Model {
    pub config: ModelConfig,
    pub path: PathBuf,
    pub layers: Vec<LayerWeights>,
    pub token_embd: Matrix,
    pub output_norm: Vec<f32>,
    /// `None` when the output projection is tied to the token embeddings.
    pub output: Option<Matrix>,
    pub directory: Arc<ExpertDirectory>,
    pub experts: Box<dyn ExpertSource>,
    /// Lower precision on a miss (HOBBIT): a routed expert that is not cached, is not the
    /// token's top-1 and has a normalised gate weight below this share of the token's top-k
    /// weight mass is read and computed from its low-precision copy. `None`: off.
    pub low_precision_threshold: Option<f32>,
    pub file: Arc<GgufFile>,
    /// Bytes of weights held in memory outside the expert source.
    pub resident_bytes: u64,
    /// The tokenizer stored in the file, or why there is none.
    tokenizer: std::result::Result<Tokenizer, String>,
    streamed: Option<Arc<crate::stream::StreamedExperts>>,
    budget: Option<BudgetPlan>,
    /// Kernel threads, shared by the model's sessions.
    pool: Arc<ThreadPool>,
    /// EdgeMoE's predictor table (`edgemoe.predictor.*`), when the file has one.
    pub expert_stats: Option<Arc<super::predictor::ExpertStats>>,
    /// How new sessions predict and preload experts.
    prediction: super::predictor::PredictionOptions,
}

/// Where experts are served from (the streaming layer's one backend enum).
pub use crate::stream::BackendKind as Backend;

/// How to load a model.
pub struct LoadOptions<'a> {
    /// Bytes the model may use in all; `None` for no limit.
    pub memory_budget: Option<u64>,
    pub backend: Backend,
    /// Kernel threads, the calling thread included; 0 for the default (the number of
    /// physical cores, see [`crate::tensor::pool::default_threads`]).
    pub threads: usize,
    /// Lock the expert pool in memory where the OS allows.
    pub mlock: bool,
    /// Expert-cache eviction policy when streaming.
    pub policy: crate::stream::PolicyKind,
    /// Tokens of KV cache the budget reserves for (default: the model's context, at most 2048).
    pub context_length: Option<usize>,
    /// How sessions predict and preload experts (default: no prediction; a session can change
    /// it). [`super::predictor::PredictorKind::Stats`] needs a file written by `edgemoe profile`.
    pub prediction: super::predictor::PredictionOptions,
    /// Called with the fraction loaded; returning false cancels the load.
    pub progress: Option<&'a mut dyn FnMut(f32) -> bool>,
    /// See [`Model::low_precision_threshold`]; needs a file with low-precision copies
    /// (`edgemoe convert --low-expert-type`). `None` (the default): off.
    pub low_precision_threshold: Option<f32>,
    /// Streaming: read experts into empty pool slots ahead of need
    /// ([`crate::stream::StreamConfig::fill_ahead`]; default on).
    pub fill_ahead: bool,
    /// Streaming: preloads that would evict wait for demand reads and are dropped when they
    /// cannot pay ([`crate::stream::StreamConfig::budget_aware_preloads`]; default on).
    pub budget_aware_preloads: bool,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            memory_budget: None,
            backend: Backend::Auto,
            threads: 0,
            mlock: true,
            policy: crate::stream::PolicyKind::default(),
            context_length: None,
            prediction: Default::default(),
            progress: None,
            low_precision_threshold: None,
            fill_ahead: true,
            budget_aware_preloads: true,
        }
    }
}

/// What the model at `path` needs: the budget split for `budget` bytes, from the header alone.
/// Unlike loading, a budget below the minimum is not an error here: `pool` is then what is
/// left (possibly 0).
pub fn preflight(path: &Path, budget: u64, context_length: Option<usize>) -> Result<Preflight> {
    let file = GgufFile::open(path)?;
    let config = ModelConfig::from_gguf(&file.header, path)?;
    let directory = ExpertDirectory::from_gguf(&file.header, &config, path)?;
    let plan = BudgetPlan::needs(&file, &config, &directory, context_length).with_budget(budget);
    Ok(Preflight {
        plan,
        expert_bytes: directory.total_bytes(),
    })
}

/// The result of [`preflight`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    pub plan: BudgetPlan,
    pub expert_bytes: u64,
}

impl std::ops::Deref for Preflight {
    type Target = BudgetPlan;
    fn deref(&self) -> &BudgetPlan {
        &self.plan
    }
}

impl Model {
    /// Loads a GGUF file (edgemoe's layout or llama.cpp's) with every expert served from the
    /// memory-mapped file.
    pub fn load(path: &Path) -> Result<Model> {
        Self::load_with(path, LoadOptions::default())
    }

    /// Loads a GGUF file with options (memory budget, backend, progress).
    pub fn load_with(path: &Path, opts: LoadOptions<'_>) -> Result<Model> {
        let file = Arc::new(GgufFile::open(path)?);
        Self::load_file(file, crate::stream::Source::path(path), opts)
    }

    /// Loads a GGUF file that occupies `len` bytes at `offset` of an open file (an Android
    /// asset, a content URI's descriptor).
    pub fn load_region(
        file: std::fs::File,
        offset: u64,
        len: u64,
        opts: LoadOptions<'_>,
    ) -> Result<Model> {
        let source = crate::stream::Source::region(Arc::new(file), offset, len);
        let file = Arc::new(source.gguf()?);
        Self::load_file(file, source, opts)
    }

    fn load_file(
        file: Arc<GgufFile>,
        source: crate::stream::Source,
        mut opts: LoadOptions<'_>,
    ) -> Result<Model> {
        let path = file.path.clone();
        let path = path.as_path();
        let config = ModelConfig::from_gguf(&file.header, path)?;
        let directory = Arc::new(ExpertDirectory::from_gguf(&file.header, &config, path)?);
        if let Some(f) = opts.low_precision_threshold {
            if !(0.0..=1.0).contains(&f) {
                return Err(Error::InvalidArgument(format!(
                    "low-precision threshold {f} is not a share of the gate weight in [0, 1]"
                )));
            }
            if directory.low_precision_type().is_none() {
                return Err(Error::InvalidArgument(format!(
                    "{} has no low-precision expert copies (convert it with --low-expert-type)",
                    path.display()
                )));
            }
        }
        for loc in directory.iter().chain(directory.iter_low()) {
            for m in [loc.gate, loc.up, loc.down] {
                if !ops::supported(m.ty) {
                    return Err(Error::Unsupported(format!(
                        "expert weights of type {}",
                        m.ty
                    )));
                }
            }
        }
        let stream_kind = match opts.backend {
            Backend::Resident => None,
            Backend::Auto if opts.memory_budget.is_none() => None,
            kind => Some(kind),
        };
        let Some(kind) = stream_kind else {
            let experts = Box::new(ResidentExperts::new(file.clone(), directory.clone()));
            let mut model = Self::build(file, config, directory, experts, opts.progress.take())?;
            model.pool = Arc::new(ThreadPool::new(opts.threads));
            model.low_precision_threshold = opts.low_precision_threshold;
            model.set_prediction_defaults(opts.prediction)?;
            return Ok(model);
        };
        let budget = opts.memory_budget.unwrap_or(u64::MAX / 4);
        let plan = BudgetPlan::new(&file, &config, &directory, budget, opts.context_length)?;
        let cfg = crate::stream::StreamConfig {
            pool_bytes: plan.pool,
            backend: kind,
            policy: opts.policy,
            mlock: opts.mlock,
            fill_ahead: opts.fill_ahead,
            budget_aware_preloads: opts.budget_aware_preloads,
            ..Default::default()
        };
        let streamed = Arc::new(crate::stream::StreamedExperts::open_source(
            &source,
            directory.clone(),
            config.n_layers,
            &cfg,
            |b| b,
        )?);
        let mut model = Self::build(
            file,
            config,
            directory,
            Box::new(streamed.clone()),
            opts.progress.take(),
        )?;
        // The weights are copied out; let the OS drop the mapped file's pages.
        model.file.release_pages();
        model.streamed = Some(streamed);
        model.budget = Some(plan);
        model.pool = Arc::new(ThreadPool::new(opts.threads));
        model.low_precision_threshold = opts.low_precision_threshold;
        model.set_prediction_defaults(opts.prediction)?;
        Ok(model)
    }

    /// How new sessions predict and preload experts.
    pub fn prediction_defaults(&self) -> super::predictor::PredictionOptions {
        self.prediction
    }

    /// Sets how new sessions predict and preload experts. Fails when the statistics predictor
    /// is asked for and the file has no table.
    pub fn set_prediction_defaults(
        &mut self,
        p: super::predictor::PredictionOptions,
    ) -> Result<()> {
        self.check_prediction(&p)?;
        self.prediction = p;
        Ok(())
    }

    /// An error unless `p` can run on this model.
    pub(crate) fn check_prediction(&self, p: &super::predictor::PredictionOptions) -> Result<()> {
        if p.predictor == super::predictor::PredictorKind::Stats && self.expert_stats.is_none() {
            return Err(Error::InvalidArgument(format!(
                "{} has no expert statistics (edgemoe.predictor.*); write a copy with them \
                 by `edgemoe profile`",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// The expert stream, when experts are streamed from storage.
    pub fn streamed(&self) -> Option<&Arc<crate::stream::StreamedExperts>> {
        self.streamed.as_ref()
    }

    /// How the memory budget is split, when one is set.
    pub fn budget(&self) -> Option<&BudgetPlan> {
        self.budget.as_ref()
    }

    /// Changes the memory budget of a streaming model while it is loaded (an app's
    /// memory-pressure callback): lowering evicts cached experts down to the new pool before
    /// returning. Fails with [`Error::BudgetTooSmall`] below the minimum.
    pub fn set_memory_budget(&self, budget: u64) -> Result<()> {
        let (Some(streamed), Some(old)) = (&self.streamed, &self.budget) else {
            return Err(Error::InvalidArgument(
                "the model was loaded without a memory budget".into(),
            ));
        };
        let plan = old.split(budget)?;
        streamed.set_pool_bytes(plan.pool.min(streamed.max_pool_bytes()))
    }

    /// Kernel threads shared by this model's sessions.
    pub fn thread_pool(&self) -> &Arc<ThreadPool> {
        &self.pool
    }

    /// Replaces the kernel threads (0: the default count). Sessions made before keep the
    /// pool they started with.
    pub fn set_threads(&mut self, threads: usize) {
        self.pool = Arc::new(ThreadPool::new(threads));
    }

    /// Builds a model around an expert source of the caller's choosing (kernel threads: the
    /// default count).
    pub fn from_parts(
        file: Arc<GgufFile>,
        config: ModelConfig,
        directory: Arc<ExpertDirectory>,
        experts: Box<dyn ExpertSource>,
    ) -> Result<Model> {
        let mut model = Self::build(file, config, directory, experts, None)?;
        model.pool = Arc::new(ThreadPool::new(0));
        Ok(model)
    }

    fn build(
        file: Arc<GgufFile>,
        config: ModelConfig,
        directory: Arc<ExpertDirectory>,
        experts: Box<dyn ExpertSource>,
        progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Model> {
        let weights = ResidentWeights::load(&file, &config, &directory, progress)?;
        let tokenizer = Tokenizer::from_gguf(&file).map_err(|e| e.to_string());
        let expert_stats =
            super::predictor::ExpertStats::from_gguf(&file.header, &config, &file.path)?
                .map(Arc::new);
        Ok(Model {
            path: file.path.clone(),
            config,
            layers: weights.layers,
            token_embd: weights.token_embd,
            output_norm: weights.output_norm,
            output: weights.output,
            directory,
            experts,
            low_precision_threshold: None,
            file,
            resident_bytes: weights.bytes,
            tokenizer,
            streamed: None,
            budget: None,
            pool: Arc::new(ThreadPool::single()),
            expert_stats,
            prediction: Default::default(),
        })
    }

    /// The output projection (the token embeddings when tied).
    pub fn output_matrix(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// The model's tokenizer; an error when the file carries none edgemoe can use.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", self.path.display())))
    }

    /// Bytes of all expert weights.
    pub fn expert_bytes(&self) -> u64 {
        self.directory.total_bytes()
    }
}
