//! Per-batch working memory of a session, grown on demand and then reused, so a decode step
//! allocates nothing once the session has run its first batch.

use super::router::Routing;
use crate::tensor::ops::MatvecScratch;

/// Per-batch working memory, grown on demand and then reused.
#[derive(Default)]
pub(crate) struct Scratch {
    pub x: Vec<f32>,
    pub h: Vec<f32>,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub attn: Vec<f32>,
    pub proj: Vec<f32>,
    pub expert_out: Vec<f32>,
    /// Inputs of the tokens routed to one expert, gathered for a batched product.
    pub gathered: Vec<f32>,
    pub ffn_a: Vec<f32>,
    pub ffn_b: Vec<f32>,
    pub router: Vec<f32>,
    pub router_logits: Vec<f32>,
    pub routes: Vec<Routing>,
    pub used: Vec<usize>,
    /// Per expert of the running layer: computed from its low-precision copy.
    pub low: Vec<bool>,
    /// The used experts to read at high and at low precision.
    pub used_high: Vec<usize>,
    pub used_low: Vec<usize>,
    /// `(token, slot)` pairs routed to the expert being computed.
    pub assigned: Vec<(usize, usize)>,
    pub predicted_set: Vec<usize>,
    /// Attention scores of each kernel thread (index as the pool numbers them; 0 when
    /// attention runs on the calling thread alone).
    pub scores: Vec<parking_lot::Mutex<Vec<f32>>>,
    pub matvec: MatvecScratch,
}

/// The first `n` values of `v`, growing it (with zeros) when it is shorter.
pub(crate) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}
