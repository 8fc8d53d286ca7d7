//! Qwen3-MoE: per-head q/k RMSNorm, explicit head size, `norm_topk_prob`.
use super::{Family, FfnKind, QkNorm, RopeStyle, RouterKind};

pub const FAMILY: Family = Family {
    name: "qwen3_moe",
    gguf_arch: "qwen3moe",
    hf_arch: "Qwen3MoeForCausalLM",
    rope: RopeStyle::Neox,
    qk_norm: QkNorm::PerHead,
    qkv_bias: false,
    shared_expert: false,
    router: RouterKind::SoftmaxTopK,
    ffn: FfnKind::SwiGlu,
    norm_topk_default: true,
};
