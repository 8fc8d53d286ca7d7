//! Mixtral (`MixtralForCausalLM`): llama attention, top-k experts renormalised.
use super::{Family, FfnKind, QkNorm, RopeStyle, RouterKind};

pub const FAMILY: Family = Family {
    name: "mixtral",
    gguf_arch: "llama",
    hf_arch: "MixtralForCausalLM",
    rope: RopeStyle::Interleaved,
    qk_norm: QkNorm::None,
    qkv_bias: false,
    shared_expert: false,
    router: RouterKind::SoftmaxTopK,
    ffn: FfnKind::SwiGlu,
    norm_topk_default: true,
};
