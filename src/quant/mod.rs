//! ggml block-quantised formats: quantise, dequantise and fused dot products.
//!
//! * [`quantize`] / [`dequantize`] are scalar reference implementations that
//!   produce the same bytes / floats as ggml's `quantize_row_*_ref` and
//!   `dequantize_row_*` (and gguf-py's `gguf.quants`), for every
//!   [`GgmlType`] edgemoe knows.
//! * [`Activation`] + [`vec_dot`] / [`matvec`] are the matrix-vector kernels used
//!   by the engine. As in ggml, the activation vector is quantised once per
//!   input ([`vec_dot_type`]: Q8_0 for Q4_0/Q5_0/Q8_0 weights, Q8_1 for
//!   Q4_1/Q5_1, Q8_K for the K-quants; float weights keep an f32 copy) and the
//!   dot products run on integers.
//!
//! The dot products have SIMD versions (AVX-512 with VNNI or AVX2+FMA+F16C on
//! x86_64, NEON with or without dotprod on aarch64) chosen at run time;
//! `EDGEMOE_FORCE_SCALAR=1` forces the portable scalar code, `EDGEMOE_FORCE_AVX2=1`
//! caps x86_64 at AVX2 and `EDGEMOE_FORCE_NEON=1` caps aarch64 at base NEON
//! (no dotprod). Results are deterministic: the same inputs give the same bits
//! on a given machine whatever thread computes them, and whether a row is
//! multiplied by one activation or by four at once ([`matmat`]). SIMD kernels
//! form exact integer sums per block and differ from the scalar ones only in
//! float summation order.

#![deny(unsafe_op_in_unsafe_fn)]

mod activation;
mod dispatch;
mod dot;
mod ggml_type;
mod matmat;
mod reference;

#[cfg(target_arch = "x86_64")]
mod x86;

// Needs Rust 1.89 (stable AVX-512 intrinsics), newer than the crate's minimum: build.rs sets
// `edgemoe_avx512` only for such compilers, which is what makes the lint's concern moot.
#[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
#[allow(clippy::incompatible_msrv)]
mod avx512;

#[cfg(target_arch = "aarch64")]
mod neon;

#[cfg(test)]
mod tests;

use crate::{Error, Result};

#[cfg(test)]
use activation::{q8_0_block, q8_k_block};
pub use activation::{vec_dot_type, Activation};
pub use dispatch::kernel_name;
use dispatch::level;
#[cfg(any(test, target_arch = "x86_64"))]
use dispatch::Level;
#[cfg(test)]
use dispatch::{best_level, choose, force_scalar, kernel4, level_name, supported_levels};
pub(crate) use dispatch::{kernel, Dot4Fn, DotFn};
pub use ggml_type::GgmlType;
pub use matmat::{matmat, ProductSink, VectorMajor};

pub(crate) use reference::QK_K;

// ---------------------------------------------------------------------------
// Quantise / dequantise
// ---------------------------------------------------------------------------

fn check_len(ty: GgmlType, n: usize, bytes: usize, what: &str) -> Result<()> {
    let want = ty.row_bytes(n)?;
    if bytes != want {
        return Err(Error::Shape(format!(
            "{what}: {n} {} elements take {want} bytes, got {bytes}",
            ty.name()
        )));
    }
    Ok(())
}

/// Dequantises `src` (raw bytes of type `ty`) into `dst`, whose length is the
/// number of elements. `src` must be exactly `ty.row_bytes(dst.len())` bytes,
/// otherwise [`Error::Shape`].
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_len(ty, dst.len(), src.len(), "dequantize")?;
    use reference as r;
    match ty {
        GgmlType::F32 => r::dequant_f32(src, dst),
        GgmlType::F16 => r::dequant_f16(src, dst),
        GgmlType::BF16 => r::dequant_bf16(src, dst),
        GgmlType::Q4_0 => r::dequant_q4_0(src, dst),
        GgmlType::Q4_1 => r::dequant_q4_1(src, dst),
        GgmlType::Q5_0 => r::dequant_q5_0(src, dst),
        GgmlType::Q5_1 => r::dequant_q5_1(src, dst),
        GgmlType::Q8_0 => r::dequant_q8_0(src, dst),
        GgmlType::Q8_1 => r::dequant_q8_1(src, dst),
        GgmlType::Q2K => r::dequant_q2_k(src, dst),
        GgmlType::Q3K => r::dequant_q3_k(src, dst),
        GgmlType::Q4K => r::dequant_q4_k(src, dst),
        GgmlType::Q5K => r::dequant_q5_k(src, dst),
        GgmlType::Q6K => r::dequant_q6_k(src, dst),
        GgmlType::Q8K => r::dequant_q8_k(src, dst),
    }
    Ok(())
}

/// Quantises `src` into `dst` (raw bytes of type `ty`) with ggml's reference
/// quantisers (no importance matrix). `src.len()` must be a whole number of
/// blocks and `dst` exactly `ty.row_bytes(src.len())` bytes, otherwise
/// [`Error::Shape`].
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    check_len(ty, src.len(), dst.len(), "quantize")?;
    use reference as r;
    match ty {
        GgmlType::F32 => r::quant_f32(src, dst),
        GgmlType::F16 => r::quant_f16(src, dst),
        GgmlType::BF16 => r::quant_bf16(src, dst),
        GgmlType::Q4_0 => r::quant_q4_0(src, dst),
        GgmlType::Q4_1 => r::quant_q4_1(src, dst),
        GgmlType::Q5_0 => r::quant_q5_0(src, dst),
        GgmlType::Q5_1 => r::quant_q5_1(src, dst),
        GgmlType::Q8_0 => r::quant_q8_0(src, dst),
        GgmlType::Q8_1 => r::quant_q8_1(src, dst),
        GgmlType::Q2K => r::quant_q2_k(src, dst),
        GgmlType::Q3K => r::quant_q3_k(src, dst),
        GgmlType::Q4K => r::quant_q4_k(src, dst),
        GgmlType::Q5K => r::quant_q5_k(src, dst),
        GgmlType::Q6K => r::quant_q6_k(src, dst),
        GgmlType::Q8K => r::quant_q8_k(src, dst),
    }
    Ok(())
}

/// Whether `row_len` bytes of `weight_type` match `act`.
#[inline]
fn compatible(weight_type: GgmlType, row_len: usize, act: &Activation) -> bool {
    let bl = weight_type.block_len();
    act.kind == vec_dot_type(weight_type)
        && act.n % bl == 0
        && row_len == act.n / bl * weight_type.block_bytes()
}

/// Dot product of one weight row (raw bytes of `weight_type`, `act.len()`
/// elements) with prepared activations.
///
/// The caller validates shapes; a row of the wrong length or an activation
/// prepared for an incompatible type is a bug (debug assertion), and in
/// release builds returns NaN rather than reading out of bounds.
#[inline]
pub fn vec_dot(weight_type: GgmlType, row: &[u8], act: &Activation) -> f32 {
    if !compatible(weight_type, row.len(), act) {
        debug_assert!(
            false,
            "vec_dot: {} row of {} bytes with {} activation of {} elements",
            weight_type,
            row.len(),
            act.kind,
            act.n
        );
        return f32::NAN;
    }
    let f = kernel(weight_type, level());
    // SAFETY: `compatible` checked the row length and activation kind, and
    // `kernel` only returns SIMD kernels for instruction sets `level()` detected.
    unsafe { f(row, act) }
}

/// `a · b` over the shorter length, summed in 8 lanes combined pairwise: the same bits on
/// every SIMD level of a machine (AVX2 only widens the registers the lanes live in).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: every x86_64 level above scalar was detected with AVX2.
        return unsafe { x86::f32_dot(a, b) };
    }
    dot::f32_dot(a, b)
}

/// `y += alpha * x` over the shorter length.
pub fn axpy_f32(alpha: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: as in `dot_f32`.
        return unsafe { x86::f32_axpy(alpha, x, y) };
    }
    dot::f32_axpy(alpha, x, y)
}

/// [`dot_f32`] of `a` with four vectors: the same bits as four calls, faster.
pub fn dot4_f32(a: &[f32], bs: [&[f32]; 4]) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: as in `dot_f32`.
        return unsafe { x86::f32_dot4(a, bs) };
    }
    dot::f32_dot4(a, bs)
}

/// [`axpy_f32`] of four vectors in turn: the same bits as four calls, faster.
pub fn axpy4_f32(alpha: [f32; 4], xs: [&[f32]; 4], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: as in `dot_f32`.
        return unsafe { x86::f32_axpy4(alpha, xs, y) };
    }
    dot::f32_axpy4(alpha, xs, y)
}

/// `out[r] = dot(row r, act)` for `rows` rows of `weight_type` laid out back
/// to back in `weights` (`rows * row_bytes` bytes). `out` must hold at least
/// `rows` values. Bad shapes are a caller bug (debug assertion); release
/// builds then fill `out` with NaN.
pub fn matvec(
    weight_type: GgmlType,
    weights: &[u8],
    rows: usize,
    act: &Activation,
    out: &mut [f32],
) {
    let bl = weight_type.block_len();
    let rb = act.n / bl * weight_type.block_bytes();
    let ok = act.kind == vec_dot_type(weight_type)
        && act.n % bl == 0
        && rows.checked_mul(rb) == Some(weights.len())
        && out.len() >= rows;
    if !ok {
        debug_assert!(
            false,
            "matvec: {} x {rows} rows in {} bytes, activation {} of {}, out {}",
            weight_type,
            weights.len(),
            act.kind,
            act.n,
            out.len()
        );
        out.fill(f32::NAN);
        return;
    }
    if rb == 0 {
        out[..rows].fill(0.0);
        return;
    }
    let f = kernel(weight_type, level());
    for (o, row) in out[..rows].iter_mut().zip(weights.chunks_exact(rb)) {
        // SAFETY: every row is exactly `rb` bytes, which matches `act` (checked
        // above); the kernel's instruction set was detected by `level()`.
        *o = unsafe { f(row, act) };
    }
}
