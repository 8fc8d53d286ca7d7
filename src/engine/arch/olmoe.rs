//! OLMoE: q/k RMSNorm over the whole projection, top-k weights not renormalised.
use super::{Family, FfnKind, QkNorm, RopeStyle, RouterKind};

pub const FAMILY: Family = Family {
    name: "olmoe",
    gguf_arch: "olmoe",
    hf_arch: "OlmoeForCausalLM",
    rope: RopeStyle::Neox,
    qk_norm: QkNorm::Full,
    qkv_bias: false,
    shared_expert: false,
    router: RouterKind::SoftmaxTopK,
    ffn: FfnKind::SwiGlu,
    norm_topk_default: false,
};
