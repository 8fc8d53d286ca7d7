//! AVX-512 (F, BW, VL) + VNNI dot-product kernels for x86_64.
//!
//! Selected by `quant::kernel` only when those features (and AVX2, FMA, F16C) were detected
//! at run time; types without a kernel here use the AVX2 ones. Every kernel is an `unsafe fn`
//! with the [`DotFn`] contract: `row` holds exactly `act.n` elements of the weight type and
//! `act` was prepared as its `vec_dot_type`, so every pointer offset below stays inside `row`,
//! `act.qs`, `act.d`, `act.bsums` or `act.x`. All loads are unaligned (or masked) loads.
//!
//! Integer products use VNNI: `vpdpbusd` (unsigned bytes times signed bytes, summed in fours
//! into i32 without saturation) for the 32-element formats, `vpmaddubsw` + `vpdpwssd` (16-bit
//! products times the sub-block scales, accumulated in i32) for the K-quants. Each block's
//! integer sums are exact; they are scaled into float lanes and summed horizontally once per
//! row, so results differ from the scalar kernels by float summation order only. The `_tile`
//! forms take several activations per weight row (prompts) and give each the same operations
//! as a single call: bit-identical whatever the batch.

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

/// The AVX-512 kernel for `t`, if there is one.
pub(crate) fn kernel(t: GgmlType) -> Option<DotFn> {
    Some(match t {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::Q4_0 => dot_q4_0,
        GgmlType::Q8_0 => dot_q8_0,
        GgmlType::Q4K => dot_q4_k,
        GgmlType::Q5K => dot_q5_k,
        GgmlType::Q6K => dot_q6_k,
        _ => return None,
    })
}

/// The AVX-512 kernel taking four activations at once for `t`, if there is one.
pub(crate) fn kernel4(t: GgmlType) -> Option<Dot4Fn> {
    Some(match t {
        GgmlType::Q8_0 => dot4_q8_0,
        GgmlType::Q4K => dot4_q4_k,
        GgmlType::Q5K => dot4_q5_k,
        GgmlType::Q6K => dot4_q6_k,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Helpers. Callers guarantee the target features and pointer validity.
// ---------------------------------------------------------------------------

/// `acc + pairwise(a * b)` as one `vpdpwssd`. LLVM, tuning for a generic x86-64, splits the
/// intrinsic into `vpmaddwd` + `vpaddd`: two vector-port instructions instead of one, in the
/// K-quant kernels' busiest loop: Q4_K four-token tiles ran 4% faster with the single
/// instruction, in-process A/B on Cascade Lake.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let mut acc = acc;
        // SAFETY: register-only instruction; callers run with AVX-512 VNNI enabled.
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}

/// The fp16 at `p` (2 readable bytes) as f32; exact.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
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

/// Sums of four products of `|x|` and `y * sign(x)`: the signed byte dot product of `x` and
/// `y` in 16 i32 lanes. Exact for every `x` (|-128| is 128 as an unsigned byte) and for `y`
/// without -128 (activations are in [-127, 127]).
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_i8(x: __m512i, y: __m512i) -> __m512i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let zero = _mm512_setzero_si512();
        let negative = _mm512_movepi8_mask(x);
        let sy = _mm512_mask_sub_epi8(y, negative, zero, y);
        _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(x), sy)
    }
}

/// The 256-bit form of [`dot_i8`], for a single 32-element block.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_i8_256(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let sy = _mm256_sign_epi8(y, x);
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), sy)
    }
}

/// Two 256-bit halves as one 512-bit vector (`lo` in the low half).
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi) }
}

/// 16 f32 lanes: `a` in the low 8, `b` in the high 8.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn halves_ps(a: f32, b: f32) -> __m512 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b)) }
}

/// `vpermps` indices putting element 0 in lanes 0..8 and element 1 in lanes 8..16.
static HALVES: [i32; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

// ---------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------

/// Sum over `0..$n` of `$load(i, mask) * x[i]`, 16 lanes at a time with four accumulators;
/// the tail is one masked step. A macro so that the loads compile with the kernel's features.
macro_rules! float_dot {
    ($n:expr, $x:expr, |$i:ident, $m:ident| $load:expr) => {{
        let n: usize = $n;
        let x: *const f32 = $x;
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut base = 0usize;
        let $m: __mmask16 = 0xFFFF;
        while base + 64 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let $i = base + 16 * k;
                *a = _mm512_fmadd_ps($load, _mm512_loadu_ps(x.add($i)), *a);
            }
            base += 64;
        }
        while base + 16 <= n {
            let $i = base;
            acc[0] = _mm512_fmadd_ps($load, _mm512_loadu_ps(x.add($i)), acc[0]);
            base += 16;
        }
        if base < n {
            let $i = base;
            let $m: __mmask16 = (1u32 << (n - base)) as u16 - 1;
            acc[1] = _mm512_fmadd_ps($load, _mm512_maskz_loadu_ps($m, x.add($i)), acc[1]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ))
    }};
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_f32(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr() as *const f32;
        float_dot!(act.n, act.x.as_ptr(), |i, m| _mm512_maskz_loadu_ps(
            m,
            w.add(i)
        ))
    }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_f16(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr() as *const i16;
        float_dot!(act.n, act.x.as_ptr(), |i, m| _mm512_cvtph_ps(
            _mm256_maskz_loadu_epi16(m, w.add(i))
        ))
    }
}
