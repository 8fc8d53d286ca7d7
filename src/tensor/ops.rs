//! Numeric building blocks of the forward pass. Every function is deterministic: the same
//! inputs give the same bits, whether a row is computed alone (decode) or in a batch (prompt).

#![forbid(unsafe_code)]

use std::sync::Arc;

use super::{GgmlType, ThreadPool};
use crate::{Error, Result};

/// A borrowed weight matrix: `rows` rows of `cols` elements of type `ty`, back to back.
#[derive(Clone, Copy, Debug)]
pub struct MatrixRef<'a> {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
}

impl<'a> MatrixRef<'a> {
    /// Checks that `data` holds exactly `rows` rows of `cols` elements.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: &'a [u8]) -> Result<Self> {
        let need = ty.row_bytes(cols)?.checked_mul(rows);
        if need != Some(data.len()) {
            return Err(Error::Shape(format!(
                "{rows}x{cols} {ty} matrix needs {need:?} bytes, has {}",
                data.len()
            )));
        }
        Ok(MatrixRef {
            ty,
            rows,
            cols,
            data,
        })
    }

    /// The raw bytes of row `r`.
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.data.len() / self.rows.max(1);
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Row `r` as f32 values.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) -> Result<()> {
        crate::quant::dequantize(self.ty, self.row(r), &mut out[..self.cols])
    }
}

/// An owned weight matrix.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<u8>,
}

impl Matrix {
    pub fn as_ref(&self) -> MatrixRef<'_> {
        MatrixRef {
            ty: self.ty,
            rows: self.rows,
            cols: self.cols,
            data: &self.data,
        }
    }
}

/// Whether [`matvec`] can multiply weights of type `ty`.
pub fn supported(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8K)
}

/// Below this much work (bytes of weights times vectors) a product runs on one thread. Waking
/// a worker and sharing out chunks costs microseconds, and a worker kept spinning between
/// small products takes a core from everything else. Measured on the hidden-1024 random models
/// at 2 threads: 1 MiB left the 0.3-0.7 MiB attention matrices on one thread; 256 KiB decodes
/// 5-15% faster (q8_0, q4_k_m), while the demo model (largest matrix 512 KiB) is within noise.
pub const PARALLEL_MIN_BYTES: usize = 256 << 10;

/// Bytes of weights per unit of work handed to a thread: big enough that taking a chunk from
/// the shared counter is noise, small enough that threads finish close together.
const CHUNK_BYTES: usize = 32 << 10;

/// [`matmat`]: the least bytes of weight rows per chunk, so that each chunk's rows are
/// multiplied by several vectors in cache-sized blocks.
const MATMAT_MIN_CHUNK_BYTES: usize = 12 << 10;

/// [`matmat`] prepares its vectors on several threads from this many values (vectors times
/// columns): below it, handing out the work costs more than it saves.
const PARALLEL_PREPARE_VALUES: usize = 16 << 10;

/// [`matmat`]: vectors prepared per unit of work handed to a thread.
const PREPARE_CHUNK_VECTORS: usize = 8;

/// Scratch space and threads for [`matvec`], reused across calls so decoding does not
/// allocate.
#[derive(Default)]
pub struct MatvecScratch {
    /// `x` quantised as the weight type's activation type (ggml's vec_dot_type).
    activation: crate::quant::Activation,
    /// Kernel threads; `None` runs on the calling thread.
    pool: Option<Arc<ThreadPool>>,
    /// [`matmat`]: each vector prepared as the weight type's activation type.
    batch: Vec<crate::quant::Activation>,
}

impl MatvecScratch {
    /// Scratch whose products are split over `pool`'s threads when large enough.
    pub fn with_pool(pool: Arc<ThreadPool>) -> Self {
        MatvecScratch {
            pool: Some(pool),
            ..Default::default()
        }
    }

    /// The kernel threads, if any.
    pub fn pool(&self) -> Option<&Arc<ThreadPool>> {
        self.pool.as_ref()
    }

    /// Threads products may use.
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.threads())
    }
}

/// Rows per chunk for a matrix with `row_bytes`-byte rows: a multiple of 16 rows of about
/// [`CHUNK_BYTES`]. Depends only on the matrix, so the split is the same for any thread count.
fn chunk_rows(row_bytes: usize) -> usize {
    (CHUNK_BYTES / row_bytes.max(1)).div_ceil(16).max(1) * 16
}

/// `out[r] = row r · x` for every row of `m`, with the SIMD kernels of [`crate::quant`]. Float
/// weights use an f32 dot product; block-quantised weights quantise `x` to 8 bits first and use
/// integer dot products, as ggml does. Each row's result depends only on that row and `x`, so
/// results do not depend on batching, on threads, or on how rows are split.
pub fn matvec(m: MatrixRef<'_>, x: &[f32], out: &mut [f32], scratch: &mut MatvecScratch) {
    debug_assert_eq!(x.len(), m.cols);
    debug_assert_eq!(out.len(), m.rows);
    // Shapes were checked at load (rows are whole blocks), so preparing cannot fail.
    if scratch.activation.prepare(m.ty, x).is_err() {
        out.fill(f32::NAN);
        return;
    }
    let act = &scratch.activation;
    match &scratch.pool {
        Some(pool) if pool.threads() > 1 && m.data.len() >= PARALLEL_MIN_BYTES => {
            let rb = m.data.len() / m.rows.max(1);
            let rows = chunk_rows(rb);
            let out = &mut out[..m.rows];
            pool.for_each_chunk(out, rows, &|r0, o| {
                let w = &m.data[r0 * rb..(r0 + o.len()) * rb];
                crate::quant::matvec(m.ty, w, o.len(), act, o);
            });
        }
        _ => crate::quant::matvec(m.ty, m.data, m.rows, act, out),
    }
}

/// `out[t] = m · xs[t]` for `n` vectors: `xs` is `n x m.cols` and `out` is `n x m.rows`, both
/// row-major. Quantises each vector once and reads each weight row once for all of them
/// (a prompt's tokens), instead of once per vector; every value is computed exactly as
/// [`matvec`] computes it, so the results are bit-identical to `n` calls of [`matvec`].
pub fn matmat(
    m: MatrixRef<'_>,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
    scratch: &mut MatvecScratch,
) {
    debug_assert_eq!(xs.len(), n * m.cols);
    debug_assert_eq!(out.len(), n * m.rows);
    if n == 1 {
        return matvec(m, xs, out, scratch);
    }
    if n == 0 {
        return;
    }
    if scratch.batch.len() < n {
        scratch.batch.resize_with(n, Default::default);
    }
    let cols = m.cols.max(1);
    let acts = &mut scratch.batch[..n];
    let prepare = |first: usize, acts: &mut [crate::quant::Activation]| {
        let xs = xs.chunks_exact(cols).skip(first);
        acts.iter_mut()
            .zip(xs)
            .all(|(a, x)| a.prepare(m.ty, x).is_ok())
    };
    let prepared = match &scratch.pool {
        Some(pool) if pool.threads() > 1 && n * m.cols >= PARALLEL_PREPARE_VALUES => {
            let failed = std::sync::atomic::AtomicBool::new(false);
            pool.for_each_chunk(acts, PREPARE_CHUNK_VECTORS, &|first, part| {
                if !prepare(first, part) {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            });
            !failed.into_inner()
        }
        _ => prepare(0, acts),
    };
    let out = &mut out[..n * m.rows];
    if !prepared {
        out.fill(f32::NAN);
        return;
    }
    let acts = &scratch.batch[..n];
    let rb = m.data.len() / m.rows.max(1);
    match &scratch.pool {
        Some(pool) if pool.threads() > 1 && m.data.len() * n >= PARALLEL_MIN_BYTES => {
            // Rows are the unit of work: a slab of rows is multiplied by every vector, in
            // blocks of rows that stay in L1 (see `quant::matmat`), and stored in place. With
            // many vectors the slab is still plenty of work to amortise taking it.
            let rows = (CHUNK_BYTES / (rb * n).max(1))
                .max(MATMAT_MIN_CHUNK_BYTES / rb.max(1))
                .max(4);
            pool.for_each_row_slab(out, m.rows, rows, &|mut slab| {
                let r = slab.rows();
                let w = &m.data[r.start * rb..r.end * rb];
                crate::quant::matmat(m.ty, w, r.len(), acts, &mut slab);
            });
        }
        _ => {
            let mut sink = crate::quant::VectorMajor { out, rows: m.rows };
            crate::quant::matmat(m.ty, m.data, m.rows, acts, &mut sink)
        }
    }
}

/// RMS normalisation as Hugging Face computes it: `x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * scale);
    }
}

/// RMS normalisation in place.
pub fn rms_norm_in_place(x: &mut [f32], w: &[f32], eps: f32) {
    let mean_sq = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean_sq + eps).sqrt();
    for (v, &g) in x.iter_mut().zip(w) {
        *v = g * (*v * scale);
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Below this many values [`swiglu`] runs on the calling thread.
const PARALLEL_SWIGLU_VALUES: usize = 8 << 10;

/// `a = silu(a) * b`, element by element (the gated FFN's activation), spread over the
/// kernel threads for a prompt's many tokens: every value is computed the same way wherever
/// it runs.
pub fn swiglu(a: &mut [f32], b: &[f32], scratch: &MatvecScratch) {
    let apply = |offset: usize, a: &mut [f32]| {
        for (av, bv) in a.iter_mut().zip(&b[offset..]) {
            *av = silu(*av) * bv;
        }
    };
    match &scratch.pool {
        Some(pool) if pool.threads() > 1 && a.len() >= PARALLEL_SWIGLU_VALUES => {
            pool.for_each_chunk(a, PARALLEL_SWIGLU_VALUES / 2, &apply)
        }
        _ => apply(0, a),
    }
}

/// SiLU (x · sigmoid(x)).
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Logistic sigmoid.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Dot product of two f32 slices with a fixed summation order (see [`crate::quant::dot_f32`]:
/// the same bits whichever SIMD level computes it).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    crate::quant::dot_f32(a, b)
}

/// [`dot`] of `a` with four vectors (the same bits as four calls).
pub fn dot4(a: &[f32], bs: [&[f32]; 4]) -> [f32; 4] {
    crate::quant::dot4_f32(a, bs)
}

/// [`axpy`] of four vectors in turn (the same bits as four calls).
pub fn axpy4(a: [f32; 4], xs: [&[f32]; 4], y: &mut [f32]) {
    crate::quant::axpy4_f32(a, xs, y)
}

/// `y += a * x`.
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    crate::quant::axpy_f32(a, x, y)
}
