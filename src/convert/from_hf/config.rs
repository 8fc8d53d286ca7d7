//! A checkpoint's `config.json` read into a [`ModelConfig`].

#![forbid(unsafe_code)]

use std::path::Path;

use serde_json::Value;

use crate::engine::arch::Family;
use crate::engine::ModelConfig;
use crate::{Error, Result};

/// Reads `config.json` into a [`ModelConfig`], accepting both the classic hub key style and
/// transformers v5's (`rope_parameters`, `num_local_experts`).
pub fn read_config(dir: &Path) -> Result<ModelConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid_file(&path, format!("not JSON: {e}")))?;
    let bad = |what: &str| Error::invalid_file(&path, what.to_string());
    let arch = v["architectures"][0]
        .as_str()
        .ok_or_else(|| bad("no `architectures` entry"))?;
    let family = Family::from_hf_arch(arch)?;
    let uint = |k: &str| v[k].as_u64().map(|x| x as usize);
    let need = |k: &str| uint(k).ok_or_else(|| bad(&format!("missing integer `{k}`")));
    let hidden = need("hidden_size")?;
    let n_heads = need("num_attention_heads")?;
    let n_kv_heads = uint("num_key_value_heads").unwrap_or(n_heads);
    let head_dim = uint("head_dim").unwrap_or(hidden / n_heads.max(1));
    let n_experts = uint("num_local_experts")
        .or_else(|| uint("num_experts"))
        .ok_or_else(|| bad("missing `num_local_experts` / `num_experts`"))?;
    let expert_ffn = uint("moe_intermediate_size")
        .or_else(|| uint("intermediate_size"))
        .ok_or_else(|| bad("missing `moe_intermediate_size` / `intermediate_size`"))?;
    let rope_theta = v["rope_theta"]
        .as_f64()
        .or_else(|| v["rope_parameters"]["rope_theta"].as_f64())
        .unwrap_or(10000.0) as f32;
    check_supported(&v)?;
    let shared_ffn = if family.shared_expert {
        need("shared_expert_intermediate_size")?
    } else {
        0
    };
    Ok(ModelConfig {
        family,
        n_layers: need("num_hidden_layers")?,
        hidden,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab: need("vocab_size")?,
        n_experts,
        n_experts_used: need("num_experts_per_tok")?,
        expert_ffn,
        shared_ffn,
        norm_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
        rope_theta,
        norm_topk: v["norm_topk_prob"]
            .as_bool()
            .unwrap_or(family.norm_topk_default),
        context_length: uint("max_position_embeddings").unwrap_or(4096),
    })
}

/// Refuses what the engine does not run: rope scaling, dense (non-MoE) layers, clipped q/k/v,
/// sliding-window attention.
fn check_supported(v: &Value) -> Result<()> {
    let rope_type = v["rope_scaling"]["rope_type"]
        .as_str()
        .or_else(|| v["rope_scaling"]["type"].as_str())
        .or_else(|| v["rope_parameters"]["rope_type"].as_str())
        .unwrap_or("default");
    if rope_type != "default" {
        return Err(Error::Unsupported(format!("rope scaling `{rope_type}`")));
    }
    if v["decoder_sparse_step"].as_u64().unwrap_or(1) != 1
        || v["mlp_only_layers"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    {
        return Err(Error::Unsupported(
            "models with dense (non-MoE) layers".into(),
        ));
    }
    if !v["clip_qkv"].is_null() {
        return Err(Error::Unsupported("clip_qkv".into()));
    }
    if v["use_sliding_window"].as_bool() == Some(true) {
        return Err(Error::Unsupported("sliding-window attention".into()));
    }
    Ok(())
}
