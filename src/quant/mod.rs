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

mod dot;
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

use std::sync::OnceLock;

use crate::tensor::dtype::GgmlType;
use crate::{Error, Result};

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

// ---------------------------------------------------------------------------
// Activations
// ---------------------------------------------------------------------------

/// The type activations are converted to for dot products with rows of
/// `weight_type`: `F32` for float weights (and for `Q8_1`/`Q8_K` weights, which
/// ggml never uses as weights), `Q8_0` for Q4_0/Q5_0/Q8_0, `Q8_1` for
/// Q4_1/Q5_1 and `Q8_K` for the K-quants.
pub fn vec_dot_type(weight_type: GgmlType) -> GgmlType {
    match weight_type {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            GgmlType::Q8K
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_1 | GgmlType::Q8K => {
            GgmlType::F32
        }
    }
}

/// Activations prepared once per input vector for dot products with rows of a
/// weight type.
///
/// Holds an f32 copy for float weights; Q8_0 blocks for Q4_0/Q5_0/Q8_0;
/// Q8_1 blocks for Q4_1/Q5_1; Q8_K blocks for K-quants — quantised exactly as
/// ggml's `quantize_row_q8_*_ref` do. The data is kept as separate arrays
/// (quants, per-block scales, per-16 sums) rather than ggml's interleaved
/// blocks, which is what the kernels want; the values are the same.
#[derive(Clone, Debug)]
pub struct Activation {
    /// The [`vec_dot_type`] these activations were prepared as.
    kind: GgmlType,
    /// Number of elements.
    n: usize,
    /// F32 copy (kind F32).
    x: Vec<f32>,
    /// Quants (kinds Q8_0, Q8_1, Q8_K).
    qs: Vec<i8>,
    /// Per-block scale (Q8_0/Q8_1: the fp16 value as f32; Q8_K: f32).
    d: Vec<f32>,
    /// Q8_1: per-block `d * sum(qs)` (fp16-rounded as ggml stores it).
    s: Vec<f32>,
    /// Q8_K: sums of 16 consecutive quants.
    bsums: Vec<i16>,
    /// Q8_0: the quants plus 128, as unsigned bytes, for kernels that multiply unsigned
    /// activations by signed weights (AVX-512 VNNI's `vpdpbusd`).
    biased: Vec<u8>,
}

impl Default for Activation {
    fn default() -> Self {
        Self::new()
    }
}

impl Activation {
    /// An empty activation buffer; reuse it across calls so the hot path does
    /// not allocate after warm-up.
    pub fn new() -> Self {
        Activation {
            kind: GgmlType::F32,
            n: 0,
            x: Vec::new(),
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            bsums: Vec::new(),
            biased: Vec::new(),
        }
    }

    /// Number of elements prepared.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no elements are prepared.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The type the activations are held as (see [`vec_dot_type`]).
    pub fn kind(&self) -> GgmlType {
        self.kind
    }

    /// Prepares `x` for dot products with rows of `weight_type`, quantising it
    /// as ggml does. `x.len()` must be a multiple of the weight type's block
    /// length, otherwise [`Error::Shape`].
    pub fn prepare(&mut self, weight_type: GgmlType, x: &[f32]) -> Result<()> {
        let n = x.len();
        let bl = weight_type.block_len();
        if n % bl != 0 {
            return Err(Error::Shape(format!(
                "activation of {n} elements is not a multiple of the {} block size {bl}",
                weight_type.name()
            )));
        }
        let kind = vec_dot_type(weight_type);
        self.kind = kind;
        self.n = n;
        self.x.clear();
        self.qs.clear();
        self.d.clear();
        self.s.clear();
        self.bsums.clear();
        match kind {
            GgmlType::Q8_0 => {
                self.qs.resize(n, 0);
                self.d.reserve(n / 32);
                for (xb, qb) in x.chunks_exact(32).zip(self.qs.chunks_exact_mut(32)) {
                    let d = q8_0_block(xb, qb);
                    self.d.push(reference::round_f16(d));
                }
                self.biased.clear();
                self.biased
                    .extend(self.qs.iter().map(|&q| (q as u8) ^ 0x80));
            }
            GgmlType::Q8_1 => {
                self.qs.resize(n, 0);
                self.d.reserve(n / 32);
                self.s.reserve(n / 32);
                for (xb, qb) in x.chunks_exact(32).zip(self.qs.chunks_exact_mut(32)) {
                    let (d, s) = reference::q8_1_block(xb, qb);
                    self.d.push(d);
                    self.s.push(s);
                }
            }
            GgmlType::Q8K => {
                self.qs.resize(n, 0);
                self.bsums.resize(n / 16, 0);
                self.d.reserve(n / QK_K);
                for ((xb, qb), sb) in x
                    .chunks_exact(QK_K)
                    .zip(self.qs.chunks_exact_mut(QK_K))
                    .zip(self.bsums.chunks_exact_mut(16))
                {
                    let d = q8_k_block(xb, qb, sb);
                    self.d.push(d);
                }
            }
            _ => self.x.extend_from_slice(x),
        }
        Ok(())
    }
}

/// One activation block as Q8_0 ([`reference::q8_0_block`]'s result, vectorised where the
/// CPU allows).
fn q8_0_block(x: &[f32], qs: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: every x86_64 level above scalar was detected with AVX2 and FMA.
        return unsafe { x86::q8_0_block(x, qs) };
    }
    reference::q8_0_block_lanes(x, qs)
}

/// One activation block as Q8_K ([`reference::q8_k_block`]'s result, vectorised where the
/// CPU allows).
fn q8_k_block(x: &[f32], qs: &mut [i8], bsums: &mut [i16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: as in `q8_0_block`.
        return unsafe { x86::q8_k_block(x, qs, bsums) };
    }
    reference::q8_k_block_lanes(x, qs, bsums)
}

// ---------------------------------------------------------------------------
// Kernel selection
// ---------------------------------------------------------------------------

/// Instruction-set level of the dot-product kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (on top of AVX2): the types in `avx512.rs`, AVX2 for the rest.
    #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// NEON + dotprod (SDOT): the integer types in `neon.rs`'s `sdot`, base NEON for the rest.
    #[cfg(target_arch = "aarch64")]
    NeonDot,
}

/// Whether a value of `EDGEMOE_FORCE_SCALAR` (or `_AVX2`, `_NEON`) asks for it:
/// anything but unset, empty or `0`.
fn force_scalar(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// The level to use: the best one detected, unless `EDGEMOE_FORCE_SCALAR` asks for the
/// portable code, `EDGEMOE_FORCE_AVX2` caps x86_64 at AVX2 or `EDGEMOE_FORCE_NEON` caps
/// aarch64 at base NEON (so every SIMD path can be exercised on one machine).
fn detect() -> Level {
    let env = |k: &str| std::env::var(k).ok();
    choose(
        best_level(),
        force_scalar(env("EDGEMOE_FORCE_SCALAR").as_deref()),
        force_scalar(env("EDGEMOE_FORCE_AVX2").as_deref()),
        force_scalar(env("EDGEMOE_FORCE_NEON").as_deref()),
    )
}

fn choose(best: Level, scalar: bool, avx2: bool, neon: bool) -> Level {
    if scalar {
        return Level::Scalar;
    }
    #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
    if avx2 && best == Level::Avx512 {
        return Level::Avx2;
    }
    #[cfg(target_arch = "aarch64")]
    if neon && best == Level::NeonDot {
        return Level::Neon;
    }
    let _ = (avx2, neon);
    best
}

/// The best level this CPU supports, ignoring the environment.
pub(crate) fn best_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            #[cfg(edgemoe_avx512)]
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Level::Avx512;
            }
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return Level::NeonDot;
            }
            return Level::Neon;
        }
    }
    Level::Scalar
}

/// Every SIMD level this CPU supports (for tests: each is checked against the scalar code).
#[cfg(test)]
pub(crate) fn supported_levels() -> Vec<Level> {
    let best = best_level();
    let mut levels = vec![best];
    #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
    if best == Level::Avx512 {
        levels.push(Level::Avx2);
    }
    #[cfg(target_arch = "aarch64")]
    if best == Level::NeonDot {
        levels.push(Level::Neon);
    }
    levels.retain(|&l| l != Level::Scalar);
    levels
}

fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

/// Name of the dot-product kernels in use: `"avx512"`, `"avx2"`, `"neon-dotprod"`, `"neon"`
/// or `"scalar"`.
pub fn kernel_name() -> &'static str {
    level_name(level())
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => "avx2",
        #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
        Level::Avx512 => "avx512",
        #[cfg(target_arch = "aarch64")]
        Level::Neon => "neon",
        #[cfg(target_arch = "aarch64")]
        Level::NeonDot => "neon-dotprod",
    }
}

/// A dot-product kernel.
///
/// # Safety
/// The caller guarantees that `row` holds exactly `act.n` elements of the
/// kernel's weight type, that `act` was prepared as that type's
/// [`vec_dot_type`], and that the CPU supports the kernel's instruction set.
pub(crate) type DotFn = unsafe fn(&[u8], &Activation) -> f32;

/// A dot-product kernel taking one weight row and four activations: the four results are
/// bit-identical to four calls of the type's [`DotFn`] at the same level (each activation
/// gets the same operations; only the weight decoding is shared).
///
/// # Safety
/// The [`DotFn`] contract for each of the four activations.
pub(crate) type Dot4Fn = unsafe fn(&[u8], &[&Activation; 4]) -> [f32; 4];

/// The four-activation kernel for `weight_type` at `level`, where one exists.
pub(crate) fn kernel4(weight_type: GgmlType, level: Level) -> Option<Dot4Fn> {
    match level {
        #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
        Level::Avx512 => avx512::kernel4(weight_type),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86::kernel4(weight_type),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => neon::kernel4(weight_type),
        #[cfg(target_arch = "aarch64")]
        Level::NeonDot => neon::kernel4_dotprod(weight_type),
        _ => {
            let _ = weight_type;
            None
        }
    }
}

/// The kernel for `weight_type` at `level`.
pub(crate) fn kernel(weight_type: GgmlType, level: Level) -> DotFn {
    match level {
        #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
        Level::Avx512 => {
            if let Some(f) = avx512::kernel(weight_type).or_else(|| x86::kernel(weight_type)) {
                return f;
            }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            if let Some(f) = x86::kernel(weight_type) {
                return f;
            }
        }
        #[cfg(target_arch = "aarch64")]
        Level::Neon => {
            if let Some(f) = neon::kernel(weight_type) {
                return f;
            }
        }
        #[cfg(target_arch = "aarch64")]
        Level::NeonDot => {
            if let Some(f) = neon::kernel_dotprod(weight_type) {
                return f;
            }
        }
        Level::Scalar => {}
    }
    dot::kernel(weight_type)
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
/// Every value is computed by the same kernel as [`matvec`] computes it, so the results are
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
