//! Hugging Face checkpoint directory (config.json + safetensors shards + tokenizer files) to
//! edgemoe's layout.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::{write, ConvertOptions, ConvertReport, Payload, Planned, Role};
use crate::engine::arch::{Family, QkNorm, RopeStyle};
use crate::engine::ModelConfig;
use crate::format::GgufValue;
use crate::tensor::GgmlType;
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

/// The safetensors shards of a checkpoint, memory-mapped.
struct Shards {
    paths: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
}

impl Shards {
    fn open(dir: &Path) -> Result<Shards> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::invalid_file(dir, "no *.safetensors files"));
        }
        let mut maps = Vec::new();
        for p in &paths {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            // SAFETY: read-only private map of a checkpoint that the converter never writes.
            maps.push(unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(p, e))?);
        }
        Ok(Shards { paths, maps })
    }
}

/// Parsed shards with an index from tensor name to shard.
struct Checkpoint<'a> {
    paths: &'a [PathBuf],
    files: Vec<SafeTensors<'a>>,
    index: HashMap<String, usize>,
}

impl<'a> Checkpoint<'a> {
    fn new(shards: &'a Shards) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, (map, path)) in shards.maps.iter().zip(&shards.paths).enumerate() {
            let st = SafeTensors::deserialize(map)
                .map_err(|e| Error::invalid_file(path, format!("bad safetensors: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            files.push(st);
        }
        Ok(Checkpoint {
            paths: &shards.paths,
            files,
            index,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A tensor as f32, checked to have `shape` (torch order).
    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self.index.get(name).ok_or_else(|| {
            Error::invalid_file(&self.paths[0], format!("missing tensor `{name}`"))
        })?;
        let path = &self.paths[i];
        let t = self.files[i]
            .tensor(name)
            .map_err(|e| Error::invalid_file(path, format!("tensor `{name}`: {e}")))?;
        if t.shape() != shape {
            return Err(Error::invalid_file(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.shape()
                ),
            ));
        }
        let data = t.data();
        let out: Vec<f32> = match t.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Unsupported(format!(
                    "tensor `{name}` has dtype {other:?} (need f32, f16 or bf16)"
                )))
            }
        };
        Ok(out)
    }

    /// Rows `[start, start + rows)` of a 3-D fused expert tensor `[E, R, C]`, expert `e`.
    fn read_fused(
        &self,
        name: &str,
        shape: &[usize],
        e: usize,
        start: usize,
        rows: usize,
    ) -> Result<Vec<f32>> {
        let all = self.read(name, shape)?;
        let (r, c) = (shape[1], shape[2]);
        let base = e * r * c + start * c;
        Ok(all[base..base + rows * c].to_vec())
    }
}

/// Hugging Face rotate-half q/k rows reordered into llama.cpp's interleaved-pair order, as its
/// converter does for the `llama` architecture.
fn permute_qk(w: Vec<f32>, n_heads: usize, cols: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let hd = rows / n_heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..n_heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let dst = h * hd + i * 2 + j;
                let src = h * hd + j * (hd / 2) + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// A torch tensor `src` of `shape` written as `out` (ggml dims reversed), q/k rows permuted
/// for `permute` heads when non-zero.
fn planned<'a>(
    ck: &'a Checkpoint<'a>,
    out: String,
    src: String,
    shape: Vec<usize>,
    role: Role,
    permute: usize,
) -> Planned<'a> {
    let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
    Planned {
        name: out,
        dims,
        role,
        source_type: GgmlType::F32,
        produce: Box::new(move || {
            let w = ck.read(&src, &shape)?;
            Ok(Payload::F32(if permute > 0 {
                permute_qk(w, permute, shape[1])
            } else {
                w
            }))
        }),
    }
}

/// GGUF tokenizer metadata for the checkpoint's tokenizer files.
fn tokenizer_metadata(dir: &Path) -> Result<Vec<(String, GgufValue)>> {
    Ok(crate::tokenizer::Tokenizer::from_hf_files(dir)?.gguf_metadata())
}

pub(super) fn convert(
    dir: &Path,
    output: &Path,
    opts: &ConvertOptions,
    extra: Vec<(String, GgufValue)>,
) -> Result<ConvertReport> {
    let cfg = read_config(dir)?;
    let shards = Shards::open(dir)?;
    let ck = Checkpoint::new(&shards)?;
    let ck = &ck;
    let (h, hd, ffn) = (cfg.hidden, cfg.head_dim, cfg.expert_ffn);
    let q_dim = cfg.n_heads * hd;
    let kv_dim = cfg.n_kv_heads * hd;
    let mixtral = cfg.family.rope == RopeStyle::Interleaved;
    let mut plan: Vec<Planned<'_>> = Vec::new();
    // `rows x cols` torch matrix `name` stored as ggml dims [cols, rows].
    let add = |plan: &mut Vec<_>,
               out: String,
               src: String,
               shape: Vec<usize>,
               role: Role,
               permute: usize| {
        plan.push(planned(ck, out, src, shape, role, permute));
    };
    add(
        &mut plan,
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vec![cfg.vocab, h],
        Role::Matrix,
        0,
    );
    add(
        &mut plan,
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        vec![h],
        Role::Small,
        0,
    );
    if ck.has("lm_head.weight") {
        add(
            &mut plan,
            "output.weight".into(),
            "lm_head.weight".into(),
            vec![cfg.vocab, h],
            Role::Matrix,
            0,
        );
    }
    let moe = if cfg.family.name == "mixtral" {
        "block_sparse_moe"
    } else {
        "mlp"
    };
    for l in 0..cfg.n_layers {
        let src = |s: &str| format!("model.layers.{l}.{s}");
        let dst = |s: &str| format!("blk.{l}.{s}");
        add(
            &mut plan,
            dst("attn_norm.weight"),
            src("input_layernorm.weight"),
            vec![h],
            Role::Small,
            0,
        );
        let (pq, pk) = if mixtral {
            (cfg.n_heads, cfg.n_kv_heads)
        } else {
            (0, 0)
        };
        add(
            &mut plan,
            dst("attn_q.weight"),
            src("self_attn.q_proj.weight"),
            vec![q_dim, h],
            Role::Matrix,
            pq,
        );
        add(
            &mut plan,
            dst("attn_k.weight"),
            src("self_attn.k_proj.weight"),
            vec![kv_dim, h],
            Role::Matrix,
            pk,
        );
        add(
            &mut plan,
            dst("attn_v.weight"),
            src("self_attn.v_proj.weight"),
            vec![kv_dim, h],
            Role::Matrix,
            0,
        );
        add(
            &mut plan,
            dst("attn_output.weight"),
            src("self_attn.o_proj.weight"),
            vec![h, q_dim],
            Role::Matrix,
            0,
        );
        if cfg.family.qkv_bias {
            add(
                &mut plan,
                dst("attn_q.bias"),
                src("self_attn.q_proj.bias"),
                vec![q_dim],
                Role::Small,
                0,
            );
            add(
                &mut plan,
                dst("attn_k.bias"),
                src("self_attn.k_proj.bias"),
                vec![kv_dim],
                Role::Small,
                0,
            );
            add(
                &mut plan,
                dst("attn_v.bias"),
                src("self_attn.v_proj.bias"),
                vec![kv_dim],
                Role::Small,
                0,
            );
        }
        match cfg.family.qk_norm {
            QkNorm::None => {}
            QkNorm::PerHead => {
                add(
                    &mut plan,
                    dst("attn_q_norm.weight"),
                    src("self_attn.q_norm.weight"),
                    vec![hd],
                    Role::Small,
                    0,
                );
                add(
                    &mut plan,
                    dst("attn_k_norm.weight"),
                    src("self_attn.k_norm.weight"),
                    vec![hd],
                    Role::Small,
                    0,
                );
            }
            QkNorm::Full => {
                add(
                    &mut plan,
                    dst("attn_q_norm.weight"),
                    src("self_attn.q_norm.weight"),
                    vec![q_dim],
                    Role::Small,
                    0,
                );
                add(
                    &mut plan,
                    dst("attn_k_norm.weight"),
                    src("self_attn.k_norm.weight"),
                    vec![kv_dim],
                    Role::Small,
                    0,
                );
            }
        }
        add(
            &mut plan,
            dst("ffn_norm.weight"),
            src("post_attention_layernorm.weight"),
            vec![h],
            Role::Small,
            0,
        );
        let router = if ck.has(&src(&format!("{moe}.gate.weight"))) {
            src(&format!("{moe}.gate.weight"))
        } else {
            src("mlp.gate.weight")
        };
        add(
            &mut plan,
            dst("ffn_gate_inp.weight"),
            router,
            vec![cfg.n_experts, h],
            Role::Small,
            0,
        );
        if cfg.family.shared_expert {
            let s = cfg.shared_ffn;
            add(
                &mut plan,
                dst("ffn_gate_shexp.weight"),
                src("mlp.shared_expert.gate_proj.weight"),
                vec![s, h],
                Role::Matrix,
                0,
            );
            add(
                &mut plan,
                dst("ffn_up_shexp.weight"),
                src("mlp.shared_expert.up_proj.weight"),
                vec![s, h],
                Role::Matrix,
                0,
            );
            add(
                &mut plan,
                dst("ffn_down_shexp.weight"),
                src("mlp.shared_expert.down_proj.weight"),
                vec![h, s],
                Role::Matrix,
                0,
            );
            add(
                &mut plan,
                dst("ffn_gate_inp_shexp.weight"),
                src("mlp.shared_expert_gate.weight"),
                vec![1, h],
                Role::Small,
                0,
            );
        }
    }
    // Experts last, each expert's three matrices back to back.
    for l in 0..cfg.n_layers {
        let per_expert = |e: usize, kind: &str| -> String {
            let name = match (moe, kind) {
                ("block_sparse_moe", "gate") => "w1",
                ("block_sparse_moe", "up") => "w3",
                ("block_sparse_moe", _) => "w2",
                (_, "gate") => "gate_proj",
                (_, "up") => "up_proj",
                _ => "down_proj",
            };
            format!("model.layers.{l}.{moe}.experts.{e}.{name}.weight")
        };
        let fused = !ck.has(&per_expert(0, "gate"));
        let fused_gate_up = format!("model.layers.{l}.mlp.experts.gate_up_proj");
        let fused_down = format!("model.layers.{l}.mlp.experts.down_proj");
        let n_e = cfg.n_experts;
        for e in 0..n_e {
            for (kind, rows, cols) in [("gate", ffn, h), ("up", ffn, h), ("down", h, ffn)] {
                let name = format!("blk.{l}.ffn_{kind}.{e}.weight");
                let dims = vec![cols as u64, rows as u64];
                let role = Role::Expert(l, e);
                let produce: Box<dyn Fn() -> Result<Payload>> = if fused {
                    let (src, shape, start) = match kind {
                        "gate" => (fused_gate_up.clone(), vec![n_e, 2 * ffn, h], 0),
                        "up" => (fused_gate_up.clone(), vec![n_e, 2 * ffn, h], ffn),
                        _ => (fused_down.clone(), vec![n_e, h, ffn], 0),
                    };
                    Box::new(move || Ok(Payload::F32(ck.read_fused(&src, &shape, e, start, rows)?)))
                } else {
                    let src = per_expert(e, kind);
                    Box::new(move || Ok(Payload::F32(ck.read(&src, &[rows, cols])?)))
                };
                plan.push(Planned {
                    name,
                    dims,
                    role,
                    source_type: GgmlType::F32,
                    produce,
                });
            }
        }
    }
    let mut metadata = vec![(
        "general.name".to_string(),
        GgufValue::String(
            dir.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    )];
    metadata.extend(tokenizer_metadata(dir)?);
    metadata.extend(extra);
    write(output, &cfg, metadata, plan, opts, false)
}
