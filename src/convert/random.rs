//! Random-weight Mixtral-style models in edgemoe's packed layout, for measuring speed and
//! memory on shapes larger than the bundled demo model (`examples/random_model.rs`, the
//! peak-memory test). The tokenizer is copied from a donor model so the CLI can run them.

#![forbid(unsafe_code)]

use std::path::Path;

use crate::engine::{Family, ModelConfig};
use crate::format::{GgufFile, GgufValue, GgufWriter, TensorSpec};
use crate::tensor::GgmlType;
use crate::Result;

/// The shape of a random model.
#[derive(Clone, Debug)]
pub struct RandomModel {
    pub hidden: usize,
    pub expert_ffn: usize,
    pub layers: usize,
    pub experts: usize,
    pub ty: GgmlType,
}

/// Writes a random model of `shape` to `out`, with the tokenizer (and vocabulary size, 2048
/// for the demo model) of `donor`.
pub fn write_random_model(out: &Path, shape: &RandomModel, donor: &GgufFile) -> Result<()> {
    let cfg = config(shape, donor)?;
    let specs = tensor_specs(&cfg, shape.ty);
    let mut w = GgufWriter::create(out, &metadata(&cfg, donor), specs.clone())?;
    let mut gauss = Gauss::new();
    for s in &specs {
        w.write_tensor(&tensor_bytes(s, &mut gauss)?)?;
    }
    w.finish()?;
    Ok(())
}

/// A Mixtral-style (`llama` family) config of `shape`: heads of 64, a quarter as many
/// key/value heads, two experts per token.
fn config(shape: &RandomModel, donor: &GgufFile) -> Result<ModelConfig> {
    let head_dim = 64;
    Ok(ModelConfig {
        family: Family::from_gguf_arch("llama")?,
        n_layers: shape.layers,
        hidden: shape.hidden,
        n_heads: shape.hidden / head_dim,
        n_kv_heads: (shape.hidden / head_dim / 4).max(1),
        head_dim,
        vocab: vocab_size(donor),
        n_experts: shape.experts,
        n_experts_used: 2,
        expert_ffn: shape.expert_ffn,
        shared_ffn: 0,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        norm_topk: true,
        context_length: 4096,
    })
}

/// The config's keys, the packed layout's, and the donor's tokenizer.
fn metadata(cfg: &ModelConfig, donor: &GgufFile) -> Vec<(String, GgufValue)> {
    let mut meta = cfg.gguf_metadata();
    meta.push(("general.alignment".into(), GgufValue::U32(4096)));
    meta.push(("edgemoe.format_version".into(), GgufValue::U32(1)));
    meta.extend(
        donor
            .header
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer."))
            .cloned(),
    );
    meta
}

/// Every tensor in the packed layout's order: the resident ones, then each expert's three
/// matrices. Matrices are of type `ty`; norms and routers f32.
fn tensor_specs(cfg: &ModelConfig, ty: GgmlType) -> Vec<TensorSpec> {
    let (hidden, ffn) = (cfg.hidden, cfg.expert_ffn);
    let (q_dim, kv_dim) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let mat = |name: String, rows: usize, cols: usize, t: GgmlType| TensorSpec {
        name,
        dims: vec![cols as u64, rows as u64],
        ty: t,
    };
    let vec1 = |name: String, n: usize| TensorSpec {
        name,
        dims: vec![n as u64],
        ty: GgmlType::F32,
    };
    let mut specs = vec![mat("token_embd.weight".into(), cfg.vocab, hidden, ty)];
    for l in 0..cfg.n_layers {
        let n = |s: &str| format!("blk.{l}.{s}");
        specs.push(vec1(n("attn_norm.weight"), hidden));
        specs.push(mat(n("attn_q.weight"), q_dim, hidden, ty));
        specs.push(mat(n("attn_k.weight"), kv_dim, hidden, ty));
        specs.push(mat(n("attn_v.weight"), kv_dim, hidden, ty));
        specs.push(mat(n("attn_output.weight"), hidden, q_dim, ty));
        specs.push(vec1(n("ffn_norm.weight"), hidden));
        specs.push(mat(
            n("ffn_gate_inp.weight"),
            cfg.n_experts,
            hidden,
            GgmlType::F32,
        ));
    }
    specs.push(vec1("output_norm.weight".into(), hidden));
    specs.push(mat("output.weight".into(), cfg.vocab, hidden, ty));
    for l in 0..cfg.n_layers {
        for e in 0..cfg.n_experts {
            specs.push(mat(format!("blk.{l}.ffn_gate.{e}.weight"), ffn, hidden, ty));
            specs.push(mat(format!("blk.{l}.ffn_up.{e}.weight"), ffn, hidden, ty));
            specs.push(mat(format!("blk.{l}.ffn_down.{e}.weight"), hidden, ffn, ty));
        }
    }
    specs
}

/// The bytes of tensor `s`: vectors of ones; matrices of normal values scaled by
/// 1/sqrt(cols).
fn tensor_bytes(s: &TensorSpec, gauss: &mut Gauss) -> Result<Vec<u8>> {
    let cols = s.dims[0] as usize;
    let rows = s.dims.get(1).copied().unwrap_or(1) as usize;
    if s.dims.len() == 1 {
        return Ok((0..cols).flat_map(|_| 1f32.to_le_bytes()).collect());
    }
    // 64 distinct random rows, repeated: quantising every row would take minutes.
    let distinct = rows.min(64);
    let scale = 1.0 / (cols as f32).sqrt();
    let values: Vec<f32> = (0..distinct * cols)
        .map(|_| gauss.sample() * scale)
        .collect();
    let rb = s.ty.row_bytes(cols)?;
    let mut q = vec![0u8; rb * distinct];
    for (src, dst) in values.chunks_exact(cols).zip(q.chunks_exact_mut(rb)) {
        crate::quant::quantize(s.ty, src, dst)?;
    }
    Ok(q.iter().copied().cycle().take(rb * rows).collect())
}

/// Standard normal values: splitmix64 and Box-Muller, from a fixed seed (the same model
/// every time).
struct Gauss {
    seed: u64,
}

impl Gauss {
    fn new() -> Self {
        Gauss {
            seed: 0x1234_5678_9abc_def0,
        }
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One standard normal value.
    fn sample(&mut self) -> f32 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// The donor's vocabulary size (2048 when it has no token list).
fn vocab_size(donor: &GgufFile) -> usize {
    donor
        .header
        .get("tokenizer.ggml.tokens")
        .and_then(GgufValue::as_array)
        .map_or(2048, <[GgufValue]>::len)
}
