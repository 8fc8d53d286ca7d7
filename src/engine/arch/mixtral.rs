//! Mixtral (`MixtralForCausalLM`): llama attention, top-k experts renormalised.
use super::{Family, QkNorm, RopeStyle};

pub const FAMILY: Family = Family {
    name: "mixtral",
    gguf_arch: "llama",
    hf_arch: "MixtralForCausalLM",
    rope: RopeStyle::Interleaved,
    qk_norm: QkNorm::None,
    qkv_bias: false,
    shared_expert: false,
    norm_topk_default: true,
};
