//! Model hyperparameters, read from GGUF metadata and checked against the tensors.

use std::path::Path;

use super::arch::Family;
use crate::format::{GgufHeader, GgufValue};
use crate::{Error, Result};

/// Current version of edgemoe's own GGUF layout (`edgemoe.format_version`).
pub const FORMAT_VERSION: u32 = 1;

/// The shape of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub n_experts: usize,
    pub n_experts_used: usize,
    /// Intermediate size of one routed expert.
    pub expert_ffn: usize,
    /// Intermediate size of the shared expert, for families that have one.
    pub shared_ffn: usize,
    pub norm_eps: f32,
    pub rope_theta: f32,
    /// Whether the top-k router weights are renormalised to sum to one.
    pub norm_topk: bool,
    pub context_length: usize,
}

fn get_u64(h: &GgufHeader, path: &Path, key: &str) -> Result<u64> {
    h.get(key).and_then(GgufValue::as_u64).ok_or_else(|| {
        Error::invalid_file(path, format!("missing or non-integer metadata `{key}`"))
    })
}

fn dims(h: &GgufHeader, path: &Path, name: &str) -> Result<Vec<u64>> {
    h.tensor(name)
        .map(|t| t.dims.clone())
        .ok_or_else(|| Error::invalid_file(path, format!("missing tensor `{name}`")))
}

/// Intermediate sizes of a routed expert and of the shared expert (0 without one), from the
/// tensors themselves: edgemoe's per-expert layout or llama.cpp's merged one.
fn ffn_sizes(h: &GgufHeader, path: &Path, family: Family) -> Result<(usize, usize)> {
    let expert_ffn = match h.tensor("blk.0.ffn_gate.0.weight") {
        Some(t) => t.dims.get(1).copied().unwrap_or(0) as usize,
        None => dims(h, path, "blk.0.ffn_gate_exps.weight")?
            .get(1)
            .copied()
            .unwrap_or(0) as usize,
    };
    let shared_ffn = if family.shared_expert {
        dims(h, path, "blk.0.ffn_gate_shexp.weight")?
            .get(1)
            .copied()
            .unwrap_or(0) as usize
    } else {
        0
    };
    Ok((expert_ffn, shared_ffn))
}

/// The metadata of one architecture (`{arch}.key`).
struct Meta<'a> {
    h: &'a GgufHeader,
    path: &'a Path,
    arch: &'a str,
}

impl Meta<'_> {
    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    /// A required integer, at most `max` (an absurd size is a corrupt file, not an
    /// allocation to attempt).
    fn count(&self, k: &str, max: u64) -> Result<usize> {
        let key = self.key(k);
        let v = get_u64(self.h, self.path, &key)?;
        if v > max {
            return Err(Error::invalid_file(
                self.path,
                format!("`{key}` = {v} is larger than {max}"),
            ));
        }
        Ok(v as usize)
    }

    fn opt_u64(&self, k: &str) -> Option<u64> {
        self.h.get(&self.key(k)).and_then(GgufValue::as_u64)
    }

    fn opt_f64(&self, k: &str) -> Option<f64> {
        self.h.get(&self.key(k)).and_then(GgufValue::as_f64)
    }
}

/// Largest layer, head, expert and context counts a file may state.
const MAX_COUNT: u64 = 1 << 20;

impl ModelConfig {
    /// Reads the configuration of a GGUF file of either layout.
    pub fn from_gguf(h: &GgufHeader, path: &Path) -> Result<Self> {
        let arch = h
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| Error::invalid_file(path, "missing `general.architecture`"))?;
        let family = Family::from_gguf_arch(arch)?;
        let m = Meta { h, path, arch };
        let n_heads = m.count("attention.head_count", MAX_COUNT)?;
        let embd = dims(h, path, "token_embd.weight")?;
        if embd.len() != 2 {
            return Err(Error::invalid_file(
                path,
                "token_embd.weight is not a matrix",
            ));
        }
        let (hidden, vocab) = (embd[0] as usize, embd[1] as usize);
        let (expert_ffn, shared_ffn) = ffn_sizes(h, path, family)?;
        let config = ModelConfig {
            family,
            n_layers: m.count("block_count", MAX_COUNT)?,
            hidden,
            n_heads,
            n_kv_heads: m
                .opt_u64("attention.head_count_kv")
                .unwrap_or(n_heads as u64) as usize,
            head_dim: match m.opt_u64("attention.key_length") {
                Some(d) => d.min(MAX_COUNT) as usize,
                None => hidden / n_heads.max(1),
            },
            vocab,
            n_experts: m.count("expert_count", MAX_COUNT)?,
            n_experts_used: m.count("expert_used_count", MAX_COUNT)?,
            expert_ffn,
            shared_ffn,
            norm_eps: m
                .opt_f64("attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-6) as f32,
            rope_theta: m.opt_f64("rope.freq_base").unwrap_or(10000.0) as f32,
            norm_topk: h
                .get("edgemoe.expert_weights_norm")
                .or_else(|| h.get(&m.key("expert_weights_norm")))
                .and_then(GgufValue::as_bool)
                .unwrap_or(family.norm_topk_default),
            context_length: m.opt_u64("context_length").unwrap_or(2048).min(MAX_COUNT) as usize,
        };
        config.check(path, m.opt_u64("rope.dimension_count"))?;
        Ok(config)
    }

    /// An error unless the shape can run: heads that group evenly, even head sizes, at least
    /// one layer and expert, no more experts used than exist, full rotary embeddings.
    fn check(&self, path: &Path, rope_dims: Option<u64>) -> Result<()> {
        let (n_heads, n_kv_heads) = (self.n_heads, self.n_kv_heads);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::invalid_file(
                path,
                format!("{n_heads} attention heads cannot share {n_kv_heads} KV heads"),
            ));
        }
        let (n_layers, n_experts, used) = (self.n_layers, self.n_experts, self.n_experts_used);
        if n_layers == 0 || n_experts == 0 || used == 0 || used > n_experts {
            return Err(Error::invalid_file(
                path,
                format!("{n_layers} layers, {n_experts} experts, {used} used per token"),
            ));
        }
        // The expert directory and the predictor table hold an entry per layer and expert.
        if n_layers.saturating_mul(n_experts) > MAX_COUNT as usize {
            return Err(Error::invalid_file(
                path,
                format!("{n_layers} layers of {n_experts} experts: more than {MAX_COUNT} experts"),
            ));
        }
        let head_dim = self.head_dim;
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::invalid_file(
                path,
                format!("head size {head_dim} must be even"),
            ));
        }
        if let Some(rot) = rope_dims {
            if rot != head_dim as u64 {
                return Err(Error::Unsupported(format!(
                    "partial rotary embeddings ({rot} of {head_dim} dims)"
                )));
            }
        }
        Ok(())
    }

    /// The GGUF metadata that describes this configuration (what `from_gguf` reads back).
    pub fn gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        let arch = self.family.gguf_arch;
        let k = |s: &str| format!("{arch}.{s}");
        let u = |v: usize| GgufValue::U32(v as u32);
        let mut m = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String(arch.into()),
            ),
            (k("block_count"), u(self.n_layers)),
            (k("context_length"), u(self.context_length)),
            (k("embedding_length"), u(self.hidden)),
            (k("feed_forward_length"), u(self.expert_ffn)),
            (k("expert_feed_forward_length"), u(self.expert_ffn)),
            (k("attention.head_count"), u(self.n_heads)),
            (k("attention.head_count_kv"), u(self.n_kv_heads)),
            (k("attention.key_length"), u(self.head_dim)),
            (k("attention.value_length"), u(self.head_dim)),
            (
                k("attention.layer_norm_rms_epsilon"),
                GgufValue::F32(self.norm_eps),
            ),
            (k("rope.freq_base"), GgufValue::F32(self.rope_theta)),
            (k("rope.dimension_count"), u(self.head_dim)),
            (k("expert_count"), u(self.n_experts)),
            (k("expert_used_count"), u(self.n_experts_used)),
            (k("vocab_size"), u(self.vocab)),
            (
                "edgemoe.expert_weights_norm".to_string(),
                GgufValue::Bool(self.norm_topk),
            ),
        ];
        if self.shared_ffn > 0 {
            m.push((k("expert_shared_feed_forward_length"), u(self.shared_ffn)));
        }
        m
    }
}

impl From<&ModelConfig> for crate::expert::ExpertShape {
    fn from(c: &ModelConfig) -> Self {
        crate::expert::ExpertShape {
            n_layers: c.n_layers,
            n_experts: c.n_experts,
            n_experts_used: c.n_experts_used,
            hidden: c.hidden,
            ffn: c.expert_ffn,
        }
    }
}
