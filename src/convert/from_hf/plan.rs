//! The tensors of a checkpoint, named and shaped for the packed layout: the resident tensors
//! (embeddings, final norm, output, then each layer's attention and router), then every
//! layer's experts, each expert's three matrices back to back.

#![forbid(unsafe_code)]

use super::super::{Payload, Planned, Role};
use super::checkpoint::Checkpoint;
use crate::engine::arch::{QkNorm, RopeStyle};
use crate::engine::ModelConfig;
use crate::tensor::GgmlType;
use crate::Result;

/// A checkpoint tensor to write: its name in the output and in the checkpoint (for a layer's
/// tensors, after `blk.L.` and `model.layers.L.`), its torch shape, its role, and the heads
/// whose q/k rows are permuted (0: none).
struct Mapping {
    out: &'static str,
    src: &'static str,
    shape: Vec<usize>,
    role: Role,
    permute: usize,
}

/// A norm weight, bias or router of `shape`: stays f32.
fn small(out: &'static str, src: &'static str, shape: Vec<usize>) -> Mapping {
    Mapping {
        out,
        src,
        shape,
        role: Role::Small,
        permute: 0,
    }
}

/// A `rows x cols` weight matrix.
fn matrix(out: &'static str, src: &'static str, rows: usize, cols: usize) -> Mapping {
    Mapping {
        out,
        src,
        shape: vec![rows, cols],
        role: Role::Matrix,
        permute: 0,
    }
}

impl Mapping {
    /// With its rows permuted for `heads` q/k heads (0: none).
    fn permuted(self, heads: usize) -> Self {
        Mapping {
            permute: heads,
            ..self
        }
    }
}

/// The shared expert's tensors in the checkpoint (after `model.layers.L.`).
const SHEXP_GATE: &str = "mlp.shared_expert.gate_proj.weight";
const SHEXP_UP: &str = "mlp.shared_expert.up_proj.weight";
const SHEXP_DOWN: &str = "mlp.shared_expert.down_proj.weight";
const SHEXP_ROUTER: &str = "mlp.shared_expert_gate.weight";

/// Every tensor of the checkpoint to write, in the order of the output file.
pub(super) fn plan<'a>(ck: &'a Checkpoint<'a>, cfg: &ModelConfig) -> Vec<Planned<'a>> {
    let mut p = Planner {
        ck,
        cfg,
        plan: Vec::new(),
    };
    p.globals();
    for l in 0..cfg.n_layers {
        for t in p.attention().into_iter().chain(p.ffn(l)) {
            let out = format!("blk.{l}.{}", t.out);
            let src = format!("model.layers.{l}.{}", t.src);
            p.add(out, src, t);
        }
    }
    // Experts last, each expert's three matrices back to back.
    for l in 0..cfg.n_layers {
        p.experts(l);
    }
    p.plan
}

struct Planner<'a, 'c> {
    ck: &'a Checkpoint<'a>,
    cfg: &'c ModelConfig,
    plan: Vec<Planned<'a>>,
}

impl<'a> Planner<'a, '_> {
    /// `t` stored as `out`, read from `src` (ggml dims are the torch shape reversed).
    fn add(&mut self, out: String, src: String, t: Mapping) {
        let planned = planned(self.ck, out, src, t.shape, t.role, t.permute);
        self.plan.push(planned);
    }

    /// Embeddings, final norm, and the output matrix unless tied to the embeddings.
    fn globals(&mut self) {
        let (vocab, h) = (self.cfg.vocab, self.cfg.hidden);
        let mut all = vec![
            matrix("token_embd.weight", "model.embed_tokens.weight", vocab, h),
            small("output_norm.weight", "model.norm.weight", vec![h]),
        ];
        if self.ck.has("lm_head.weight") {
            all.push(matrix("output.weight", "lm_head.weight", vocab, h));
        }
        for t in all {
            self.add(t.out.into(), t.src.into(), t);
        }
    }

    /// A layer's attention tensors: norm, projections, biases, q/k norms.
    fn attention(&self) -> Vec<Mapping> {
        let c = self.cfg;
        let (h, hd) = (c.hidden, c.head_dim);
        let (q, kv) = (c.n_heads * hd, c.n_kv_heads * hd);
        // llama.cpp's `llama` architecture (Mixtral) keeps q/k rows in interleaved pairs.
        let (pq, pk) = if c.family.rope == RopeStyle::Interleaved {
            (c.n_heads, c.n_kv_heads)
        } else {
            (0, 0)
        };
        let mut t = vec![
            small("attn_norm.weight", "input_layernorm.weight", vec![h]),
            matrix("attn_q.weight", "self_attn.q_proj.weight", q, h).permuted(pq),
            matrix("attn_k.weight", "self_attn.k_proj.weight", kv, h).permuted(pk),
            matrix("attn_v.weight", "self_attn.v_proj.weight", kv, h),
            matrix("attn_output.weight", "self_attn.o_proj.weight", h, q),
        ];
        if c.family.qkv_bias {
            t.extend([
                small("attn_q.bias", "self_attn.q_proj.bias", vec![q]),
                small("attn_k.bias", "self_attn.k_proj.bias", vec![kv]),
                small("attn_v.bias", "self_attn.v_proj.bias", vec![kv]),
            ]);
        }
        let norms = match c.family.qk_norm {
            QkNorm::None => None,
            QkNorm::PerHead => Some((hd, hd)),
            QkNorm::Full => Some((q, kv)),
        };
        if let Some((qn, kn)) = norms {
            t.extend([
                small("attn_q_norm.weight", "self_attn.q_norm.weight", vec![qn]),
                small("attn_k_norm.weight", "self_attn.k_norm.weight", vec![kn]),
            ]);
        }
        t
    }

    /// Layer `l`'s resident feed-forward tensors: norm, router, shared expert.
    fn ffn(&self, l: usize) -> Vec<Mapping> {
        let c = self.cfg;
        let (h, s) = (c.hidden, c.shared_ffn);
        let mut t = vec![
            small(
                "ffn_norm.weight",
                "post_attention_layernorm.weight",
                vec![h],
            ),
            small("ffn_gate_inp.weight", self.router(l), vec![c.n_experts, h]),
        ];
        if c.family.shared_expert {
            t.extend([
                matrix("ffn_gate_shexp.weight", SHEXP_GATE, s, h),
                matrix("ffn_up_shexp.weight", SHEXP_UP, s, h),
                matrix("ffn_down_shexp.weight", SHEXP_DOWN, h, s),
                small("ffn_gate_inp_shexp.weight", SHEXP_ROUTER, vec![1, h]),
            ]);
        }
        t
    }

    /// The module holding the experts: Mixtral's `block_sparse_moe`, else `mlp`.
    fn moe(&self) -> &'static str {
        if self.cfg.family.name == "mixtral" {
            "block_sparse_moe"
        } else {
            "mlp"
        }
    }

    /// Layer `l`'s router weight in the checkpoint (after `model.layers.L.`).
    fn router(&self, l: usize) -> &'static str {
        let moe = self.moe();
        if moe == "block_sparse_moe"
            && self
                .ck
                .has(&format!("model.layers.{l}.block_sparse_moe.gate.weight"))
        {
            "block_sparse_moe.gate.weight"
        } else {
            "mlp.gate.weight"
        }
    }

    /// Layer `l`'s experts, from per-expert matrices or from transformers v5's fused
    /// `gate_up_proj` / `down_proj` tensors.
    fn experts(&mut self, l: usize) {
        let (h, ffn) = (self.cfg.hidden, self.cfg.expert_ffn);
        let fused = !self.ck.has(&self.expert_tensor(l, 0, "gate"));
        for e in 0..self.cfg.n_experts {
            for (kind, rows, cols) in [("gate", ffn, h), ("up", ffn, h), ("down", h, ffn)] {
                let produce = if fused {
                    self.fused_expert(l, e, kind, rows)
                } else {
                    let ck = self.ck;
                    let src = self.expert_tensor(l, e, kind);
                    Box::new(move || Ok(Payload::F32(ck.read(&src, &[rows, cols])?)))
                };
                self.plan.push(Planned {
                    name: format!("blk.{l}.ffn_{kind}.{e}.weight"),
                    dims: vec![cols as u64, rows as u64],
                    role: Role::Expert(l, e),
                    source_type: GgmlType::F32,
                    produce,
                });
            }
        }
    }

    /// The per-expert checkpoint name of expert `e`'s `kind` (gate, up, down) matrix.
    fn expert_tensor(&self, l: usize, e: usize, kind: &str) -> String {
        let moe = self.moe();
        let name = match (moe, kind) {
            ("block_sparse_moe", "gate") => "w1",
            ("block_sparse_moe", "up") => "w3",
            ("block_sparse_moe", _) => "w2",
            (_, "gate") => "gate_proj",
            (_, "up") => "up_proj",
            _ => "down_proj",
        };
        format!("model.layers.{l}.{moe}.experts.{e}.{name}.weight")
    }

    /// Reads expert `e`'s `kind` matrix (`rows` rows) out of the fused tensors: gate and up
    /// stacked in `gate_up_proj` `[E, 2F, H]`, down in `down_proj` `[E, H, F]`.
    fn fused_expert(
        &self,
        l: usize,
        e: usize,
        kind: &str,
        rows: usize,
    ) -> Box<dyn Fn() -> Result<Payload> + 'a> {
        let c = self.cfg;
        let (n_e, h, ffn) = (c.n_experts, c.hidden, c.expert_ffn);
        let gate_up = format!("model.layers.{l}.mlp.experts.gate_up_proj");
        let (src, shape, start) = match kind {
            "gate" => (gate_up, vec![n_e, 2 * ffn, h], 0),
            "up" => (gate_up, vec![n_e, 2 * ffn, h], ffn),
            _ => (
                format!("model.layers.{l}.mlp.experts.down_proj"),
                vec![n_e, h, ffn],
                0,
            ),
        };
        let ck = self.ck;
        Box::new(move || Ok(Payload::F32(ck.read_fused(&src, &shape, e, start, rows)?)))
    }
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
