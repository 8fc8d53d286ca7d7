//! The model families edgemoe runs. Each family is a small description of how it differs
//! from the shared transformer block: which variant of each block in `engine::blocks` it
//! uses; the blocks are written once.

mod mixtral;
mod olmoe;
mod qwen2_moe;
mod qwen3_moe;

use crate::{Error, Result};

/// How rotary position embedding pairs up the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(2i, 2i+1)`: llama.cpp's `llama` arch, whose converter permutes q/k rows
    /// so that this equals Hugging Face's rotate-half on the original weights.
    Interleaved,
    /// Halves `(i, i + d/2)`: GPT-NeoX / Hugging Face rotate-half.
    Neox,
}

/// Where q/k RMS normalisation happens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QkNorm {
    None,
    /// One RMSNorm of `head_dim` applied to every head (Qwen3-MoE).
    PerHead,
    /// One RMSNorm over the whole q (and k) projection (OLMoE).
    Full,
}

/// How a family turns router logits into chosen experts and their weights
/// (`engine::blocks::router`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterKind {
    /// Softmax over every expert, then the top k (Mixtral, Qwen-MoE, OLMoE); the weights are
    /// renormalised to sum to one when the config says so (`norm_topk`).
    SoftmaxTopK,
}

/// The activation between an FFN's gate and up projections (`engine::blocks::ffn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnKind {
    /// `down(silu(gate x) * up x)` (every family so far).
    SwiGlu,
}

/// What distinguishes one family's forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// Short name used in messages (`mixtral`, `qwen2_moe`, ...).
    pub name: &'static str,
    /// llama.cpp's `general.architecture` for this family.
    pub gguf_arch: &'static str,
    /// Hugging Face `architectures[0]`.
    pub hf_arch: &'static str,
    pub rope: RopeStyle,
    pub qk_norm: QkNorm,
    /// Whether q/k/v projections carry biases.
    pub qkv_bias: bool,
    /// Whether a shared expert with a sigmoid gate runs beside the routed ones.
    pub shared_expert: bool,
    /// How router logits become chosen experts and weights.
    pub router: RouterKind,
    /// The experts' (and shared expert's) activation.
    pub ffn: FfnKind,
    /// Default for renormalising the top-k router weights to sum to one.
    pub norm_topk_default: bool,
}

/// Every family, for lookups.
pub const FAMILIES: [Family; 4] = [
    mixtral::FAMILY,
    qwen2_moe::FAMILY,
    qwen3_moe::FAMILY,
    olmoe::FAMILY,
];

impl Family {
    /// The family of a GGUF `general.architecture`.
    pub fn from_gguf_arch(arch: &str) -> Result<Family> {
        FAMILIES
            .iter()
            .copied()
            .find(|f| f.gguf_arch == arch)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "architecture `{arch}` (supported: llama (Mixtral), qwen2moe, qwen3moe, olmoe)"
                ))
            })
    }

    /// The family of a Hugging Face `architectures[0]`.
    pub fn from_hf_arch(arch: &str) -> Result<Family> {
        FAMILIES
            .iter()
            .copied()
            .find(|f| f.hf_arch == arch)
            .ok_or_else(|| Error::Unsupported(format!("Hugging Face architecture `{arch}`")))
    }
}
