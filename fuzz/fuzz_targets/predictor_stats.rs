//! The predictor table in GGUF metadata, read against a model shape taken from the first
//! two bytes (1..=8 layers, 1..=64 experts) so the fuzzer need not build a whole model.
#![no_main]

use std::path::Path;

use edgemoe::engine::{ExpertStats, Family, ModelConfig};
use edgemoe::format::GgufHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let path = Path::new("fuzz.gguf");
    let Ok(h) = GgufHeader::parse(&data[2..], path) else {
        return;
    };
    let cfg = ModelConfig {
        family: Family::from_gguf_arch("qwen2moe").expect("family"),
        n_layers: 1 + (data[0] % 8) as usize,
        hidden: 64,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 16,
        vocab: 256,
        n_experts: 1 + (data[1] % 64) as usize,
        n_experts_used: 2,
        expert_ffn: 32,
        shared_ffn: 32,
        norm_eps: 1e-6,
        rope_theta: 10000.0,
        norm_topk: false,
        context_length: 4096,
    };
    let _ = ExpertStats::from_gguf(&h, &cfg, path);
});
