//! The resident (non-expert) weights of a model, read out of its GGUF file with shape checks:
//! each layer's attention, norms and router, the shared expert where the family has one, the
//! embeddings and the output projection.

use super::arch::QkNorm;
use super::config::ModelConfig;
use crate::expert::ExpertDirectory;
use crate::format::{GgufFile, TensorInfo};
use crate::tensor::{ops, Matrix};
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

/// Every resident weight of a model.
pub struct ResidentWeights {
    pub layers: Vec<LayerWeights>,
    pub token_embd: Matrix,
    pub output_norm: Vec<f32>,
    /// `None` when the output projection is tied to the token embeddings.
    pub output: Option<Matrix>,
    /// Bytes held in memory.
    pub bytes: u64,
}

impl ResidentWeights {
    /// Reads every resident weight of `file` (the experts in `directory` stay where they
    /// are), reporting the fraction loaded to `progress`; returning false there cancels.
    pub fn load(
        file: &GgufFile,
        config: &ModelConfig,
        directory: &ExpertDirectory,
        progress: Option<&mut dyn FnMut(f32) -> bool>,
    ) -> Result<Self> {
        let c = config;
        let total = file
            .header
            .tensors
            .iter()
            .map(|t| t.size)
            .sum::<u64>()
            .saturating_sub(directory.total_bytes() + directory.low_precision_bytes());
        let mut ld = TensorLoader {
            file,
            bytes: 0,
            progress,
            loaded: 0,
            total,
        };
        let layers = (0..c.n_layers)
            .map(|l| ld.layer(c, l))
            .collect::<Result<Vec<_>>>()?;
        let h = c.hidden;
        let token_embd = ld.matrix("token_embd.weight", c.vocab, h)?;
        let output_norm = ld.vector("output_norm.weight", h)?;
        let output = if file.tensor("output.weight").is_some() {
            Some(ld.matrix("output.weight", c.vocab, h)?)
        } else {
            None
        };
        Ok(ResidentWeights {
            layers,
            token_embd,
            output_norm,
            output,
            bytes: ld.bytes,
        })
    }
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
    /// The resident weights of layer `l`.
    fn layer(&mut self, c: &ModelConfig, l: usize) -> Result<LayerWeights> {
        let ld = self;
        let (h, hd) = (c.hidden, c.head_dim);
        let q_dim = c.n_heads * hd;
        let kv_dim = c.n_kv_heads * hd;
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
        Ok(LayerWeights {
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
        })
    }

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
        // ggml drops trailing 1-dims on some writers (llama-quantize stores a `[64, 1]`
        // vector as `[64]`): compare shapes without them.
        fn trimmed(d: &[u64]) -> &[u64] {
            let n = d.iter().rposition(|&x| x != 1).map_or(0, |i| i + 1);
            &d[..n]
        }
        if trimmed(&t.dims) != trimmed(want) {
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
        let data = self.file.copy_tensor_data(t);
        Ok(Matrix {
            ty: t.ty,
            rows,
            cols,
            data,
        })
    }

    /// A vector of `len` values, as f32.
    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self.info(name)?;
        self.check_dims(t, &[len as u64])?;
        let mut out = vec![0f32; len];
        crate::quant::dequantize(t.ty, self.file.data(t), &mut out)?;
        self.file.release_range(t.offset as usize, t.size as usize);
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
