//! OLMoE: q/k RMSNorm over the whole projection, top-k weights not renormalised.
use super::{Family, QkNorm, RopeStyle};

pub const FAMILY: Family = Family {
    name: "olmoe",
    gguf_arch: "olmoe",
    hf_arch: "OlmoeForCausalLM",
    rope: RopeStyle::Neox,
    qk_norm: QkNorm::Full,
    qkv_bias: false,
    shared_expert: false,
    norm_topk_default: false,
};
