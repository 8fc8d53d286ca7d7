//! Attention: grouped-query attention with rotary positions, optional q/k/v biases and q/k
//! RMS norms, over a KV cache the session owns. Three named steps: project (q, k, v of every
//! token, positions applied, k and v stored), attend (causal softmax attention of each token
//! and head over the cache), and the output projection added to the residual stream.

use super::scratch::{grow, Scratch};
use crate::engine::arch::{QkNorm, RopeStyle};
use crate::engine::config::ModelConfig;
use crate::engine::weights::LayerWeights;
use crate::tensor::ops::{self, matmat};

/// Multiply-adds of attention (over all heads and positions) from which it is spread over the
/// kernel threads: about a tenth of a millisecond of work, well above the cost of waking one.
const PARALLEL_ATTENTION_WORK: usize = 1 << 18;

/// The keys and values of one layer, for every position of a session's context.
pub(crate) struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl KvCache {
    /// Room for `capacity` positions of `kv_dim` values each; an error, not an abort, when the
    /// size overflows or the memory cannot be had.
    pub fn new(capacity: usize, kv_dim: usize) -> crate::Result<KvCache> {
        let n = capacity
            .checked_mul(kv_dim)
            .filter(|n| n.checked_mul(2 * std::mem::size_of::<f32>()).is_some())
            .ok_or_else(|| {
                crate::Error::InvalidArgument(format!(
                    "a KV cache of {capacity} positions does not fit in the address space"
                ))
            })?;
        Ok(KvCache {
            k: zeroed(n)?,
            v: zeroed(n)?,
        })
    }
}

/// `n` zeros; an error when the allocator refuses them. The zeros come from a zeroed
/// allocation, so pages are touched only when used.
fn zeroed(n: usize) -> crate::Result<Vec<f32>> {
    // Ask first, fallibly: `vec!` aborts the process when the allocation fails.
    let mut probe: Vec<f32> = Vec::new();
    probe.try_reserve_exact(n).map_err(|e| {
        crate::Error::InvalidArgument(format!(
            "cannot allocate {} bytes of KV cache: {e}",
            n as u128 * 4
        ))
    })?;
    drop(probe);
    Ok(vec![0.0; n])
}

/// Rotary position embedding: the frequency of each pair of a head's dimensions.
pub(crate) struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(c: &ModelConfig) -> Rope {
        let hd = c.head_dim;
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / c.rope_theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        Rope { inv_freq }
    }

    /// Rotates one head `v` to position `pos`.
    fn apply(&self, v: &mut [f32], pos: usize, style: RopeStyle) {
        let half = self.inv_freq.len();
        for (i, &f) in self.inv_freq.iter().enumerate() {
            let angle = pos as f32 * f;
            let (sin, cos) = angle.sin_cos();
            let (a, b) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (v[a], v[b]);
            v[a] = x0 * cos - x1 * sin;
            v[b] = x1 * cos + x0 * sin;
        }
    }
}

/// Where a batch of `n` tokens sits in a session: the tokens before it are in the cache.
pub(crate) struct Batch {
    pub position: usize,
    pub n: usize,
    /// Positions the cache holds (sizes the per-thread score buffers once).
    pub capacity: usize,
}

/// Adds attention of the batch's tokens (`x`, `n x hidden`) to `x`, storing their keys and
/// values in `cache`.
pub(crate) fn attention(
    c: &ModelConfig,
    w: &LayerWeights,
    cache: &mut KvCache,
    rope: &Rope,
    b: &Batch,
    x: &mut [f32],
    s: &mut Scratch,
) {
    project(c, w, cache, rope, b, x, s);
    attend(c, cache, b, s);
    let (h, q_dim) = (c.hidden, c.n_heads * c.head_dim);
    let proj = grow(&mut s.proj, b.n * h);
    matmat(
        w.wo.as_ref(),
        &s.attn[..b.n * q_dim],
        b.n,
        proj,
        &mut s.matvec,
    );
    for (xv, pv) in x.iter_mut().zip(proj.iter()) {
        *xv += pv;
    }
}

/// q (into `s.q`), k and v of every token, biases, q/k norms and positions applied; k and v
/// stored in the cache. Projections of every token at once: each weight row is read once per
/// batch.
fn project(
    c: &ModelConfig,
    w: &LayerWeights,
    cache: &mut KvCache,
    rope: &Rope,
    b: &Batch,
    x: &[f32],
    s: &mut Scratch,
) {
    let (h, hd, n) = (c.hidden, c.head_dim, b.n);
    let (q_dim, kv_dim) = (c.n_heads * hd, c.n_kv_heads * hd);
    let hbuf = grow(&mut s.h, n * h);
    for (xt, ht) in x.chunks_exact(h).zip(hbuf.chunks_exact_mut(h)) {
        ops::rms_norm(xt, &w.attn_norm, c.norm_eps, ht);
    }
    let q = grow(&mut s.q, n * q_dim);
    let k = grow(&mut s.k, n * kv_dim);
    let v = grow(&mut s.v, n * kv_dim);
    matmat(w.wq.as_ref(), hbuf, n, q, &mut s.matvec);
    matmat(w.wk.as_ref(), hbuf, n, k, &mut s.matvec);
    matmat(w.wv.as_ref(), hbuf, n, v, &mut s.matvec);
    for t in 0..n {
        let pos = b.position + t;
        let q = &mut q[t * q_dim..(t + 1) * q_dim];
        let k = &mut k[t * kv_dim..(t + 1) * kv_dim];
        let v = &mut v[t * kv_dim..(t + 1) * kv_dim];
        for (dst, b) in [(&mut *q, &w.bq), (&mut *k, &w.bk), (&mut *v, &w.bv)] {
            if let Some(b) = b {
                for (d, bv) in dst.iter_mut().zip(b) {
                    *d += bv;
                }
            }
        }
        qk_norm(c, w, q, k);
        for head in q.chunks_exact_mut(hd) {
            rope.apply(head, pos, c.family.rope);
        }
        for head in k.chunks_exact_mut(hd) {
            rope.apply(head, pos, c.family.rope);
        }
        cache.k[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(k);
        cache.v[pos * kv_dim..(pos + 1) * kv_dim].copy_from_slice(v);
    }
}

/// The family's q/k RMS normalisation of one token's `q` and `k`.
fn qk_norm(c: &ModelConfig, w: &LayerWeights, q: &mut [f32], k: &mut [f32]) {
    let (qn, kn) = (
        w.q_norm.as_deref().unwrap_or(&[]),
        w.k_norm.as_deref().unwrap_or(&[]),
    );
    match c.family.qk_norm {
        QkNorm::None => {}
        QkNorm::Full => {
            ops::rms_norm_in_place(q, qn, c.norm_eps);
            ops::rms_norm_in_place(k, kn, c.norm_eps);
        }
        QkNorm::PerHead => {
            q.chunks_exact_mut(c.head_dim)
                .for_each(|hq| ops::rms_norm_in_place(hq, qn, c.norm_eps));
            k.chunks_exact_mut(c.head_dim)
                .for_each(|hk| ops::rms_norm_in_place(hk, kn, c.norm_eps));
        }
    }
}

/// Causal attention of each (token, head) over positions 0..=pos, into `s.attn`: the batch's
/// later tokens are in the cache already but not looked at, so each result is what decoding
/// the tokens one by one computes. Heads are independent: spread over the kernel threads when
/// there is enough work, each thread with its own scores buffer.
fn attend(c: &ModelConfig, cache: &KvCache, b: &Batch, s: &mut Scratch) {
    let hd = c.head_dim;
    let q_dim = c.n_heads * hd;
    let n = b.n;
    let q = &s.q[..n * q_dim];
    let head = |scores: &mut Vec<f32>, item: usize, out: &mut [f32]| {
        head_attention(c, cache, q, b.position, scores, item, out)
    };
    let attn = grow(&mut s.attn, n * q_dim);
    // Multiply-adds of the scores and the weighted sum.
    let work = n * (b.position + n) * q_dim;
    let threads = s.matvec.threads();
    if s.scores.len() < threads {
        // Room for a score per position of the whole context up front, so that decoding
        // never grows (reallocates) these buffers as the position advances.
        let capacity = b.capacity;
        s.scores.resize_with(threads, || {
            parking_lot::Mutex::new(Vec::with_capacity(capacity))
        });
    }
    let scores = &s.scores;
    match s.matvec.pool() {
        Some(pool) if threads > 1 && work >= PARALLEL_ATTENTION_WORK => {
            pool.for_each_chunk_on_thread(attn, hd, &|thread, offset, out| {
                head(&mut scores[thread].lock(), offset / hd, out)
            });
        }
        _ => {
            let mut scores = scores[0].lock();
            for (item, out) in attn.chunks_exact_mut(hd).enumerate() {
                head(&mut scores, item, out);
            }
        }
    }
}

/// Attention of one (token, head) `item` of the batch (queries `q`), into `out`.
fn head_attention(
    c: &ModelConfig,
    cache: &KvCache,
    q: &[f32],
    position: usize,
    scores: &mut Vec<f32>,
    item: usize,
    out: &mut [f32],
) {
    let hd = c.head_dim;
    let (q_dim, kv_dim) = (c.n_heads * hd, c.n_kv_heads * hd);
    let group = c.n_heads / c.n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let (t, head) = (item / c.n_heads, item % c.n_heads);
    let pos = position + t;
    let kvh = head / group;
    let qh = &q[t * q_dim + head * hd..t * q_dim + (head + 1) * hd];
    let scores = grow(scores, pos + 1);
    let key = |j: usize| &cache.k[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
    let value = |j: usize| &cache.v[j * kv_dim + kvh * hd..j * kv_dim + (kvh + 1) * hd];
    // Four positions per call: the same bits as one at a time, with the four accumulation
    // chains overlapping.
    let done = scores.len() / 4 * 4;
    for (i, sc) in scores[..done].chunks_exact_mut(4).enumerate() {
        let j = 4 * i;
        let d = ops::dot4(qh, [key(j), key(j + 1), key(j + 2), key(j + 3)]);
        for (s, d) in sc.iter_mut().zip(d) {
            *s = d * scale;
        }
    }
    for (j, sc) in scores.iter_mut().enumerate().skip(done) {
        *sc = ops::dot(qh, key(j)) * scale;
    }
    ops::softmax(scores);
    out.fill(0.0);
    for (i, p) in scores[..done].chunks_exact(4).enumerate() {
        let j = 4 * i;
        let vs = [value(j), value(j + 1), value(j + 2), value(j + 3)];
        ops::axpy4([p[0], p[1], p[2], p[3]], vs, out);
    }
    for (j, &p) in scores.iter().enumerate().skip(done) {
        ops::axpy(p, value(j), out);
    }
}
