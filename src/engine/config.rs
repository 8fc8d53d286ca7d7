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

impl ModelConfig {
    /// Reads the configuration of a GGUF file of either layout.
    pub fn from_gguf(h: &GgufHeader, path: &Path) -> Result<Self> {
        let arch = h
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .ok_or_else(|| Error::invalid_file(path, "missing `general.architecture`"))?;
        let family = Family::from_gguf_arch(arch)?;
        let key = |k: &str| format!("{arch}.{k}");
        let n_layers = get_u64(h, path, &key("block_count"))? as usize;
        let n_heads = get_u64(h, path, &key("attention.head_count"))? as usize;
        let n_kv_heads = h
            .get(&key("attention.head_count_kv"))
            .and_then(GgufValue::as_u64)
            .unwrap_or(n_heads as u64) as usize;
        let n_experts = get_u64(h, path, &key("expert_count"))? as usize;
        let n_experts_used = get_u64(h, path, &key("expert_used_count"))? as usize;
        let embd = dims(h, path, "token_embd.weight")?;
        if embd.len() != 2 {
            return Err(Error::invalid_file(
                path,
                "token_embd.weight is not a matrix",
            ));
        }
        let (hidden, vocab) = (embd[0] as usize, embd[1] as usize);
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::invalid_file(
                path,
                format!("{n_heads} attention heads cannot share {n_kv_heads} KV heads"),
            ));
        }
        let head_dim = match h
            .get(&key("attention.key_length"))
            .and_then(GgufValue::as_u64)
        {
            Some(d) => d as usize,
            None => hidden / n_heads,
        };
        if n_layers == 0 || n_experts == 0 || n_experts_used == 0 || n_experts_used > n_experts {
            return Err(Error::invalid_file(
                path,
                format!("{n_layers} layers, {n_experts} experts, {n_experts_used} used per token"),
            ));
        }
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::invalid_file(
                path,
                format!("head size {head_dim} must be even"),
            ));
        }
        // Expert size from the tensors themselves: ours per expert, llama.cpp's merged.
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
        let norm_eps = h
            .get(&key("attention.layer_norm_rms_epsilon"))
            .and_then(GgufValue::as_f64)
            .unwrap_or(1e-6) as f32;
        let rope_theta = h
            .get(&key("rope.freq_base"))
            .and_then(GgufValue::as_f64)
            .unwrap_or(10000.0) as f32;
        let norm_topk = h
            .get("edgemoe.expert_weights_norm")
            .or_else(|| h.get(&key("expert_weights_norm")))
            .and_then(GgufValue::as_bool)
            .unwrap_or(family.norm_topk_default);
        let context_length = h
            .get(&key("context_length"))
            .and_then(GgufValue::as_u64)
            .unwrap_or(2048) as usize;
        if let Some(rot) = h
            .get(&key("rope.dimension_count"))
            .and_then(GgufValue::as_u64)
        {
            if rot as usize != head_dim {
                return Err(Error::Unsupported(format!(
                    "partial rotary embeddings ({rot} of {head_dim} dims)"
                )));
            }
        }
        Ok(ModelConfig {
            family,
            n_layers,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            n_experts,
            n_experts_used,
            expert_ffn,
            shared_ffn,
            norm_eps,
            rope_theta,
            norm_topk,
            context_length,
        })
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
