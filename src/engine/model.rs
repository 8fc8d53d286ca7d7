//! A loaded model: configuration, resident (non-expert) weights, the expert directory and the
//! source experts are served from. Immutable after load; shared by sessions through `Arc`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::arch::QkNorm;
use super::config::ModelConfig;
use super::experts::{ExpertDirectory, ExpertSource, ResidentExperts};
use crate::format::{GgufFile, TensorInfo};
use crate::tensor::{float, ops, Matrix};
use crate::{Error, Result};

/// The shared expert of families that have one (Qwen2-MoE).
pub struct SharedExpert {
    pub gate: Matrix,
    pub up: Matrix,
    pub down: Matrix,
    /// One row: `sigmoid(gate_inp · x)` scales the shared expert's output.
    pub gate_inp: Matrix,
}

/// Resident weights of one transformer block.
pub struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    /// Router: one row per expert.
    pub router: Matrix,
    pub shared: Option<SharedExpert>,
}

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
    pub file: Arc<GgufFile>,
    /// Bytes of weights held in memory outside the expert source.
    pub resident_bytes: u64,
}

/// Where experts are served from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// Streamed with the best backend available when a memory budget is set, else resident.
    #[default]
    Auto,
    /// Every expert in memory (the mapped file).
    Resident,
    /// Streamed through io_uring (Linux).
    IoUring,
    /// Streamed through a pool of positioned reads.
    Pread,
    /// Streamed by copying from a memory map.
    Mmap,
}

/// How to load a model.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Bytes the model may use in all; `None` for no limit.
    pub memory_budget: Option<u64>,
    pub backend: Backend,
    /// Kernel threads; 0 for the default.
    pub threads: usize,
    /// Lock the expert pool in memory where the OS allows.
    pub mlock: bool,
    /// Called with the fraction loaded; returning false cancels the load.
    pub progress: Option<&'a mut dyn FnMut(f32) -> bool>,
}

/// Reads tensors out of a GGUF file with shape checks.
struct TensorLoader<'a, 'p> {
    file: &'a GgufFile,
    bytes: u64,
    progress: Option<&'p mut dyn FnMut(f32) -> bool>,
    loaded: u64,
    total: u64,
}

impl<'a> TensorLoader<'a, '_> {
    /// Reports progress after `bytes` more were loaded; errors when the host cancels.
    fn advance(&mut self, bytes: u64) -> Result<()> {
        self.loaded += bytes;
        if let Some(p) = self.progress.as_mut() {
            if !p(self.loaded as f32 / self.total.max(1) as f32) {
                return Err(Error::Cancelled);
            }
        }
        Ok(())
    }

    fn info(&self, name: &str) -> Result<&'a TensorInfo> {
        let file: &'a GgufFile = self.file;
        file.tensor(name)
            .ok_or_else(|| Error::invalid_file(&file.path, format!("missing tensor `{name}`")))
    }

    fn check_dims(&self, t: &TensorInfo, want: &[u64]) -> Result<()> {
        if t.dims != want {
            return Err(Error::invalid_file(
                &self.file.path,
                format!(
                    "tensor `{}` has dims {:?}, expected {want:?}",
                    t.name, t.dims
                ),
            ));
        }
        Ok(())
    }

    /// A `rows x cols` matrix (ggml dims `[cols, rows]`), copied into memory.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let t = self.info(name)?;
        self.check_dims(t, &[cols as u64, rows as u64])?;
        if !ops::supported(t.ty) {
            return Err(Error::Unsupported(format!(
                "tensor `{name}` has type {}",
                t.ty
            )));
        }
        self.bytes += t.size;
        self.advance(t.size)?;
        Ok(Matrix {
            ty: t.ty,
            rows,
            cols,
            data: self.file.data(t).to_vec(),
        })
    }

    /// A vector of `len` values, as f32.
    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        self.check_dims(t, &[len as u64])?;
        let mut out = vec![0f32; len];
        float::dequantize(t.ty, self.file.data(t), &mut out)?;
        self.bytes += (len * 4) as u64;
        self.advance(t.size)?;
        Ok(out)
    }

    fn optional_vector(&mut self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        if self.file.tensor(name).is_none() {
            return Ok(None);
        }
        self.vector(name, len).map(Some)
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
        Self::load_file(file, opts)
    }

    /// Loads a GGUF file that occupies `len` bytes at `offset` of an open file (an Android
    /// asset, a content URI's descriptor).
    pub fn load_region(
        file: std::fs::File,
        offset: u64,
        len: u64,
        opts: LoadOptions<'_>,
    ) -> Result<Model> {
        let file = Arc::new(GgufFile::from_region(file, offset, len)?);
        Self::load_file(file, opts)
    }

    fn load_file(file: Arc<GgufFile>, mut opts: LoadOptions<'_>) -> Result<Model> {
        let path = file.path.clone();
        let path = path.as_path();
        let config = ModelConfig::from_gguf(&file.header, path)?;
        let directory = Arc::new(ExpertDirectory::from_gguf(&file.header, &config, path)?);
        for loc in directory.iter() {
            for m in [loc.gate, loc.up, loc.down] {
                if !ops::supported(m.ty) {
                    return Err(Error::Unsupported(format!(
                        "expert weights of type {}",
                        m.ty
                    )));
                }
            }
        }
        let experts = Box::new(ResidentExperts::new(file.clone(), directory.clone()));
        Self::build(file, config, directory, experts, opts.progress.take())
    }

    /// Builds a model around an expert source of the caller's choosing.
    pub fn from_parts(
        file: Arc<GgufFile>,
        config: ModelConfig,
        directory: Arc<ExpertDirectory>,
        experts: Box<dyn ExpertSource>,
    ) -> Result<Model> {
        Self::build(file, config, directory, experts, None)
    }

    fn build(
        file: Arc<GgufFile>,
        config: ModelConfig,
        directory: Arc<ExpertDirectory>,
        experts: Box<dyn ExpertSource>,
        progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Model> {
        let c = &config;
        let total = file
            .header
            .tensors
            .iter()
            .map(|t| t.size)
            .sum::<u64>()
            .saturating_sub(directory.total_bytes());
        let mut ld = TensorLoader {
            file: &file,
            bytes: 0,
            progress,
            loaded: 0,
            total,
        };
        let (h, hd) = (c.hidden, c.head_dim);
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let (q_norm, k_norm) = match c.family.qk_norm {
                QkNorm::None => (None, None),
                QkNorm::PerHead => (
                    Some(ld.vector(&n("attn_q_norm.weight"), hd)?),
                    Some(ld.vector(&n("attn_k_norm.weight"), hd)?),
                ),
                QkNorm::Full => (
                    Some(ld.vector(&n("attn_q_norm.weight"), q_dim)?),
                    Some(ld.vector(&n("attn_k_norm.weight"), kv_dim)?),
                ),
            };
            let shared = if c.family.shared_expert {
                Some(SharedExpert {
                    gate: ld.matrix(&n("ffn_gate_shexp.weight"), c.shared_ffn, h)?,
                    up: ld.matrix(&n("ffn_up_shexp.weight"), c.shared_ffn, h)?,
                    down: ld.matrix(&n("ffn_down_shexp.weight"), h, c.shared_ffn)?,
                    gate_inp: ld.matrix(&n("ffn_gate_inp_shexp.weight"), 1, h)?,
                })
            } else {
                None
            };
            layers.push(LayerWeights {
                attn_norm: ld.vector(&n("attn_norm.weight"), h)?,
                wq: ld.matrix(&n("attn_q.weight"), q_dim, h)?,
                wk: ld.matrix(&n("attn_k.weight"), kv_dim, h)?,
                wv: ld.matrix(&n("attn_v.weight"), kv_dim, h)?,
                wo: ld.matrix(&n("attn_output.weight"), h, q_dim)?,
                bq: ld.optional_vector(&n("attn_q.bias"), q_dim)?,
                bk: ld.optional_vector(&n("attn_k.bias"), kv_dim)?,
                bv: ld.optional_vector(&n("attn_v.bias"), kv_dim)?,
                q_norm,
                k_norm,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), h)?,
                router: ld.matrix(&n("ffn_gate_inp.weight"), c.n_experts, h)?,
                shared,
            });
        }
        let token_embd = ld.matrix("token_embd.weight", c.vocab, h)?;
        let output_norm = ld.vector("output_norm.weight", h)?;
        let output = if file.tensor("output.weight").is_some() {
            Some(ld.matrix("output.weight", c.vocab, h)?)
        } else {
            None
        };
        let resident_bytes = ld.bytes;
        Ok(Model {
            path: file.path.clone(),
            config,
            layers,
            token_embd,
            output_norm,
            output,
            directory,
            experts,
            file,
            resident_bytes,
        })
    }

    /// The output projection (the token embeddings when tied).
    pub fn output_matrix(&self) -> &Matrix {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Bytes of all expert weights.
    pub fn expert_bytes(&self) -> u64 {
        self.directory.total_bytes()
    }
}
