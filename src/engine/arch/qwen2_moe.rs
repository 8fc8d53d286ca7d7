//! Qwen2-MoE: q/k/v biases, a shared expert scaled by a sigmoid gate, `norm_topk_prob`.
use super::{Family, FfnKind, QkNorm, RopeStyle, RouterKind};

pub const FAMILY: Family = Family {
    name: "qwen2_moe",
    gguf_arch: "qwen2moe",
    hf_arch: "Qwen2MoeForCausalLM",
    rope: RopeStyle::Neox,
    qk_norm: QkNorm::None,
    qkv_bias: true,
    shared_expert: true,
    router: RouterKind::SoftmaxTopK,
    ffn: FfnKind::SwiGlu,
    norm_topk_default: false,
};
