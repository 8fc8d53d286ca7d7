//! AVX2 + FMA + F16C dot-product kernels for x86_64.
//!
//! Selected by `quant::kernel` only when all three features were detected at
//! run time. Every kernel is an `unsafe fn` with the [`DotFn`] contract: `row`
//! holds exactly `act.n` elements of the weight type and `act` was prepared as
//! its `vec_dot_type`, so every pointer offset below stays inside `row`,
//! `act.qs`, `act.d`, `act.s`, `act.bsums` or `act.x`. All loads are unaligned
//! loads (`loadu`), so GGUF rows at any address are fine.
//!
//! Q2_K and Q3_K form the exact integer sum of each super-block and then apply
//! the scales in the same order as the scalar kernels in `dot.rs`, so their
//! results are bit-identical to the scalar ones. Q4_K, Q5_K, Q6_K, the float
//! and the legacy kernels accumulate in vector lanes (as ggml does) and differ
//! from the scalar kernels only by summation order. Q8_0 and Q4_K..Q6_K also
//! come as four-activation tiles for prompts, bit-identical to four single
//! calls.

use std::arch::asm;
use std::arch::x86_64::*;

mod kquants;
mod legacy;

use super::dot::k4_scales_mins_packed;
use super::reference::QK_K;
use super::GgmlType;
use super::{Activation, Dot4Fn, DotFn};
use kquants::*;
use legacy::*;

/// The AVX2 kernel for `t`, if there is one.
pub(crate) fn kernel(t: GgmlType) -> Option<DotFn> {
    Some(match t {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::BF16 => dot_bf16,
        GgmlType::Q4_0 => dot_q4_0,
        GgmlType::Q4_1 => dot_q4_1,
        GgmlType::Q5_0 => dot_q5_0,
        GgmlType::Q5_1 => dot_q5_1,
        GgmlType::Q8_0 => dot_q8_0,
        GgmlType::Q2K => dot_q2_k,
        GgmlType::Q3K => dot_q3_k,
        GgmlType::Q4K => dot_q4_k,
        GgmlType::Q5K => dot_q5_k,
        GgmlType::Q6K => dot_q6_k,
        GgmlType::Q8_1 | GgmlType::Q8K => return None,
    })
}

/// The AVX2 four-activation kernel for `t`, where one exists (see [`super::Dot4Fn`]).
pub(crate) fn kernel4(t: GgmlType) -> Option<Dot4Fn> {
    Some(match t {
        GgmlType::Q8_0 => dot4_q8_0,
        GgmlType::Q4K => dot4_q4_k,
        GgmlType::Q5K => dot4_q5_k,
        GgmlType::Q6K => dot4_q6_k,
        _ => return None,
    })
}

/// [`super::dot::f32_dot`] in ymm registers: the same operations in the same order, so the
/// same bits (LLVM does not vectorise the portable loop by itself).
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let n = a.len().min(b.len());
        let full = n / 8 * 8;
        let mut acc = _mm256_setzero_ps();
        for i in (0..full).step_by(8) {
            let p = _mm256_mul_ps(
                _mm256_loadu_ps(b.as_ptr().add(i)),
                _mm256_loadu_ps(a.as_ptr().add(i)),
            );
            acc = _mm256_add_ps(acc, p);
        }
        let mut tail = 0f32;
        for j in full..n {
            tail += b[j] * a[j];
        }
        lanes_sum(acc) + tail
    }
}

/// The 8 lanes summed as [`super::dot`]'s `lanes_dot` combines its accumulators:
/// `((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7))`.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn lanes_sum(v: __m256) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        // [a0 + a4, a1 + a5, a2 + a6, a3 + a7]
        let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        // Lane 0: v0 + v1; lane 2: v2 + v3.
        let s = _mm_add_ps(v, _mm_movehdup_ps(v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehl_ps(s, s)))
    }
}

/// [`super::dot::f32_axpy`] compiled for AVX2.
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn f32_axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    super::dot::f32_axpy(alpha, x, y)
}

/// [`super::dot::f32_dot4`] in ymm registers (the same bits; LLVM vectorised the portable
/// loop across the four vectors instead, with spills).
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn f32_dot4(a: &[f32], bs: [&[f32]; 4]) -> [f32; 4] {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let n = a.len();
        if bs.iter().any(|b| b.len() != n) {
            return bs.map(|b| f32_dot(a, b));
        }
        let full = n / 8 * 8;
        let mut acc = [_mm256_setzero_ps(); 4];
        for i in (0..full).step_by(8) {
            let x = _mm256_loadu_ps(a.as_ptr().add(i));
            for (acc, b) in acc.iter_mut().zip(bs) {
                *acc = _mm256_add_ps(*acc, _mm256_mul_ps(_mm256_loadu_ps(b.as_ptr().add(i)), x));
            }
        }
        let mut out = [0f32; 4];
        for ((o, acc), b) in out.iter_mut().zip(acc).zip(bs) {
            let mut tail = 0f32;
            for j in full..n {
                tail += b[j] * a[j];
            }
            *o = lanes_sum(acc) + tail;
        }
        out
    }
}

/// [`super::dot::f32_axpy4`] compiled for AVX2.
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn f32_axpy4(alpha: [f32; 4], xs: [&[f32]; 4], y: &mut [f32]) {
    super::dot::f32_axpy4(alpha, xs, y)
}

/// [`super::reference::q8_0_block_lanes`] compiled for AVX2 (the same result).
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn q8_0_block(x: &[f32], qs: &mut [i8]) -> f32 {
    super::reference::q8_0_block_lanes(x, qs)
}

/// [`super::reference::q8_k_block_lanes`] compiled for AVX2 (the same result).
///
/// # Safety
/// AVX2 available.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn q8_k_block(x: &[f32], qs: &mut [i8], bsums: &mut [i16]) -> f32 {
    super::reference::q8_k_block_lanes(x, qs, bsums)
}

// ---------------------------------------------------------------------------
// Helpers. Callers guarantee the target features and pointer validity.
// ---------------------------------------------------------------------------

// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_ps(v: __m256) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum128_ps(s: __m128) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }
}

// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// The fp16 at `p` (2 readable bytes) as f32; exact, like `half`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_load(p: *const u8) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let h = (p as *const u16).read_unaligned();
        // Moved in with `vmovd`, which writes the whole register. From the intrinsics alone LLVM
        // emits a `vpinsrw` from memory that merges into whatever register it picks, often a
        // loop's accumulator, so every block waited for the previous block's FMA (q8_0 matvec ran
        // at a third of its speed).
        let v: __m128i;
        // SAFETY: `vmovd` only moves a general register into a vector register (AVX is enabled);
        // it touches no memory and no flags.
        asm!("vmovd {v}, {h:e}", h = in(reg) u32::from(h), v = out(xmm_reg) v,
            options(pure, nomem, nostack, preserves_flags));
        _mm_cvtss_f32(_mm_cvtph_ps(v))
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load256(p: *const u8) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load256_i8(p: *const i8) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm256_loadu_si256(p as *const __m256i) }
}

/// 16 bytes at `p` as 32 nibbles: low nibbles in bytes 0..16, high in 16..32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let lo = _mm_loadu_si128(p as *const __m128i);
        let hi = _mm_srli_epi16::<4>(lo);
        _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
    }
}

/// The 32 bits at `p` as 32 bytes, 0xFF where the bit is set.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits32(p: *const u8) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let x = (p as *const u32).read_unaligned();
        let shuf = _mm256_set_epi64x(
            0x0303_0303_0303_0303,
            0x0202_0202_0202_0202,
            0x0101_0101_0101_0101,
            0,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }
}

/// Sums of adjacent products of signed bytes `x` and `y`, as 8 i32. Exact as
/// long as `y` has no -128 (activations are in [-127, 127]).
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_i8(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), _mm256_set1_epi16(1))
    }
}

/// Same with unsigned `x` (small enough that pairs do not saturate i16).
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn mul_sum_u8_i8(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1)) }
}

// ---------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------

/// Sum over `0..$n` of `$load(i) * x[i]` (8 lanes at a time, four
/// accumulators), `$scalar(i) * x[i]` for the tail. A macro rather than a
/// function taking closures so that everything is compiled with the kernel's
/// target features.
macro_rules! float_dot {
    ($n:expr, $x:expr, |$i:ident| $load:expr, |$j:ident| $scalar:expr) => {{
        let n: usize = $n;
        let x: *const f32 = $x;
        let mut a0 = _mm256_setzero_ps();
        let mut a1 = _mm256_setzero_ps();
        let mut a2 = _mm256_setzero_ps();
        let mut a3 = _mm256_setzero_ps();
        let mut base = 0usize;
        while base + 32 <= n {
            let $i = base;
            a0 = _mm256_fmadd_ps($load, _mm256_loadu_ps(x.add(base)), a0);
            let $i = base + 8;
            a1 = _mm256_fmadd_ps($load, _mm256_loadu_ps(x.add(base + 8)), a1);
            let $i = base + 16;
            a2 = _mm256_fmadd_ps($load, _mm256_loadu_ps(x.add(base + 16)), a2);
            let $i = base + 24;
            a3 = _mm256_fmadd_ps($load, _mm256_loadu_ps(x.add(base + 24)), a3);
            base += 32;
        }
        while base + 8 <= n {
            let $i = base;
            a0 = _mm256_fmadd_ps($load, _mm256_loadu_ps(x.add(base)), a0);
            base += 8;
        }
        let mut s = hsum_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        while base < n {
            let $j = base;
            s += $scalar * *x.add(base);
            base += 1;
        }
        s
    }};
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f32(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr() as *const f32;
        float_dot!(act.n, act.x.as_ptr(), |i| _mm256_loadu_ps(w.add(i)), |i| w
            .add(i)
            .read_unaligned())
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        float_dot!(
            act.n,
            act.x.as_ptr(),
            |i| _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * i) as *const __m128i)),
            |i| f16_load(w.add(2 * i))
        )
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_bf16(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        float_dot!(
            act.n,
            act.x.as_ptr(),
            |i| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(
                _mm_loadu_si128(w.add(2 * i) as *const __m128i)
            ))),
            |i| f32::from_bits(((w.add(2 * i) as *const u16).read_unaligned() as u32) << 16)
        )
    }
}
