//! One matrix times several prepared vectors ([`matmat`]), each weight row read once for
//! all of them.

use super::dispatch::{kernel, kernel4, level};
use super::{vec_dot_type, Activation, GgmlType};

/// Where [`matmat`] puts its products: `dot(row r, acts[t])` for the rows and vectors of one
/// call, rows counted from the call's first row.
pub trait ProductSink {
    /// Whether `rows x vectors` products fit.
    fn holds(&self, rows: usize, vectors: usize) -> bool;
    /// Stores the product of row `row` and vector `vector`.
    fn put(&mut self, row: usize, vector: usize, value: f32);
}

/// Products stored vector-major: `out[t * rows + r]`, one output vector after another (what
/// a batch of matrix-vector products gives).
pub struct VectorMajor<'a> {
    pub out: &'a mut [f32],
    pub rows: usize,
}

impl ProductSink for VectorMajor<'_> {
    fn holds(&self, rows: usize, vectors: usize) -> bool {
        rows <= self.rows
            && self
                .rows
                .checked_mul(vectors)
                .is_some_and(|n| n <= self.out.len())
    }

    #[inline]
    fn put(&mut self, row: usize, vector: usize, value: f32) {
        self.out[vector * self.rows + row] = value;
    }
}

/// `dot(row r, acts[t])` for `rows` rows of `weight_type` laid out back to back in `weights`,
/// into `out`: one matrix times several prepared vectors, each row read once for all of them.
/// Every value is computed by the same kernel as [`super::matvec`] computes it, so the results are
/// bit-identical to one `matvec` per vector. Bad shapes are a caller bug (debug assertion);
/// release builds then store NaN.
pub fn matmat(
    weight_type: GgmlType,
    weights: &[u8],
    rows: usize,
    acts: &[Activation],
    out: &mut impl ProductSink,
) {
    let n = acts.len();
    let Some(first) = acts.first() else {
        return;
    };
    let bl = weight_type.block_len();
    let rb = first.n / bl * weight_type.block_bytes();
    if !out.holds(rows, n) {
        debug_assert!(false, "matmat: output too small for {rows} x {n}");
        return;
    }
    let ok = acts
        .iter()
        .all(|a| a.kind == vec_dot_type(weight_type) && a.n == first.n)
        && first.n % bl == 0
        && rows.checked_mul(rb) == Some(weights.len());
    if !ok {
        debug_assert!(
            false,
            "matmat: {} x {rows} rows in {} bytes, {n} activations",
            weight_type,
            weights.len(),
        );
        fill_products(out, rows, n, f32::NAN);
        return;
    }
    if rb == 0 {
        fill_products(out, rows, n, 0.0);
        return;
    }
    let f = kernel(weight_type, level());
    let f4 = kernel4(weight_type, level());
    // Blocks of rows small enough to stay in the L1 cache with four activations, so that each
    // weight row is decoded once per four vectors and each activation is read from L2 once
    // per block of rows rather than once per row.
    let block_rows = (MATMAT_ROW_BLOCK_BYTES / rb).max(1);
    for r0 in (0..rows).step_by(block_rows) {
        let r1 = (r0 + block_rows).min(rows);
        let block = &weights[r0 * rb..r1 * rb];
        let mut t0 = 0;
        if let Some(f4) = f4 {
            // Quads of vectors; a last group of two or three is padded with copies of its
            // last vector (whose extra results are dropped): cheaper than decoding each
            // weight row two or three times, and each vector's result is unchanged.
            while n - t0 >= 2 {
                let quad: [&Activation; 4] = std::array::from_fn(|i| &acts[(t0 + i).min(n - 1)]);
                let take = (n - t0).min(4);
                for (r, row) in (r0..r1).zip(block.chunks_exact(rb)) {
                    // SAFETY: every row is exactly `rb` bytes, which matches every activation
                    // (checked above); the kernel's instruction set was detected by `level()`.
                    let v = unsafe { f4(row, &quad) };
                    for (i, &v) in v[..take].iter().enumerate() {
                        out.put(r, t0 + i, v);
                    }
                }
                t0 += take;
            }
        }
        for (t, act) in acts.iter().enumerate().skip(t0) {
            for (r, row) in (r0..r1).zip(block.chunks_exact(rb)) {
                // SAFETY: as above.
                out.put(r, t, unsafe { f(row, act) });
            }
        }
    }
}

/// Stores `value` as every product of `rows` rows and `vectors` vectors.
fn fill_products(out: &mut impl ProductSink, rows: usize, vectors: usize, value: f32) {
    for t in 0..vectors {
        for r in 0..rows {
            out.put(r, t, value);
        }
    }
}

/// Bytes of weight rows [`matmat`] multiplies by each group of vectors before moving on: with
/// four prepared activations (about 4.5 KiB per 1024 columns) they fit a 32 KiB L1 cache.
const MATMAT_ROW_BLOCK_BYTES: usize = 12 << 10;
