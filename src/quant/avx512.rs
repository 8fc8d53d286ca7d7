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
//! products times the sub-block scales, accumulated in i32) for the K-quants. The K-quant kernels form the exact integer sum of each
//! super-block and apply the scales in the same order as `dot.rs`, so they are bit-identical
//! to the scalar kernels; the float and legacy kernels differ from them by summation order.

use std::arch::x86_64::*;

use super::dot::{k4_min_sum, k4_scales_mins};
use super::reference::QK_K;
use super::{Activation, DotFn};
use crate::tensor::dtype::GgmlType;

/// The AVX-512 kernel for `t`, if there is one.
pub(crate) fn kernel(t: GgmlType) -> Option<DotFn> {
    Some(match t {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::Q4_0 => dot_q4_0,
        GgmlType::Q8_0 => dot_q8_0,
        GgmlType::Q4K => dot_q4_k,
        GgmlType::Q6K => dot_q6_k,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Helpers. Callers guarantee the target features and pointer validity.
// ---------------------------------------------------------------------------

/// The fp16 at `p` (2 readable bytes) as f32; exact.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f16_load(p: *const u8) -> f32 {
    let h = (p as *const u16).read_unaligned();
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// Sums of four products of `|x|` and `y * sign(x)`: the signed byte dot product of `x` and
/// `y` in 16 i32 lanes. Exact for every `x` (|-128| is 128 as an unsigned byte) and for `y`
/// without -128 (activations are in [-127, 127]).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_i8(x: __m512i, y: __m512i) -> __m512i {
    let zero = _mm512_setzero_si512();
    let negative = _mm512_movepi8_mask(x);
    let sy = _mm512_mask_sub_epi8(y, negative, zero, y);
    _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(x), sy)
}

/// The 256-bit form of [`dot_i8`], for a single 32-element block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_i8_256(x: __m256i, y: __m256i) -> __m256i {
    let sy = _mm256_sign_epi8(y, x);
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), sy)
}

/// Two 256-bit halves as one 512-bit vector (`lo` in the low half).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// 16 f32 lanes: `a` in the low 8, `b` in the high 8.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn halves_ps(a: f32, b: f32) -> __m512 {
    _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b))
}

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
    let w = row.as_ptr() as *const f32;
    float_dot!(act.n, act.x.as_ptr(), |i, m| _mm512_maskz_loadu_ps(
        m,
        w.add(i)
    ))
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_f16(row: &[u8], act: &Activation) -> f32 {
    let w = row.as_ptr() as *const i16;
    float_dot!(act.n, act.x.as_ptr(), |i, m| _mm512_cvtph_ps(
        _mm256_maskz_loadu_epi16(m, w.add(i))
    ))
}

// ---------------------------------------------------------------------------
// Legacy 32-element formats: two blocks per 512-bit step
// ---------------------------------------------------------------------------

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q8_0(row: &[u8], act: &Activation) -> f32 {
    let (w, y, d) = (row.as_ptr(), act.qs.as_ptr(), act.d.as_ptr());
    let nb = act.n / 32;
    let mut acc = _mm512_setzero_ps();
    let mut ib = 0;
    while ib + 2 <= nb {
        let (b0, b1) = (w.add(34 * ib), w.add(34 * ib + 34));
        let x = join(
            _mm256_loadu_si256(b0.add(2) as *const __m256i),
            _mm256_loadu_si256(b1.add(2) as *const __m256i),
        );
        let p = dot_i8(x, _mm512_loadu_si512(y.add(32 * ib) as *const _));
        let dd = halves_ps(f16_load(b0) * *d.add(ib), f16_load(b1) * *d.add(ib + 1));
        acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(p), acc);
        ib += 2;
    }
    let mut sum = _mm512_reduce_add_ps(acc);
    if ib < nb {
        let b = w.add(34 * ib);
        let p = dot_i8_256(
            _mm256_loadu_si256(b.add(2) as *const __m256i),
            _mm256_loadu_si256(y.add(32 * ib) as *const __m256i),
        );
        let s = _mm512_reduce_add_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(p)));
        sum += s * (f16_load(b) * *d.add(ib));
    }
    sum
}

/// 32 nibbles of the 16 bytes at `p`: low nibbles then high nibbles, as 32 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let lo = _mm_loadu_si128(p as *const __m128i);
    let hi = _mm_srli_epi16::<4>(lo);
    _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q4_0(row: &[u8], act: &Activation) -> f32 {
    let (w, y, d) = (row.as_ptr(), act.qs.as_ptr(), act.d.as_ptr());
    let nb = act.n / 32;
    let eight = _mm512_set1_epi8(8);
    let mut acc = _mm512_setzero_ps();
    let mut ib = 0;
    while ib + 2 <= nb {
        let (b0, b1) = (w.add(18 * ib), w.add(18 * ib + 18));
        let x = _mm512_sub_epi8(join(nibbles32(b0.add(2)), nibbles32(b1.add(2))), eight);
        let p = dot_i8(x, _mm512_loadu_si512(y.add(32 * ib) as *const _));
        let dd = halves_ps(f16_load(b0) * *d.add(ib), f16_load(b1) * *d.add(ib + 1));
        acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(p), acc);
        ib += 2;
    }
    let mut sum = _mm512_reduce_add_ps(acc);
    if ib < nb {
        let b = w.add(18 * ib);
        let x = _mm256_sub_epi8(nibbles32(b.add(2)), _mm256_set1_epi8(8));
        let p = dot_i8_256(x, _mm256_loadu_si256(y.add(32 * ib) as *const __m256i));
        let s = _mm512_reduce_add_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(p)));
        sum += s * (f16_load(b) * *d.add(ib));
    }
    sum
}

// ---------------------------------------------------------------------------
// K-quants (activations Q8_K); bit-identical to dot.rs
// ---------------------------------------------------------------------------

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q4_k(row: &[u8], act: &Activation) -> f32 {
    let m4 = _mm512_set1_epi8(0x0F);
    let mut sumf = 0f32;
    for (i, blk) in row.chunks_exact(144).enumerate() {
        let b = blk.as_ptr();
        let y = act.qs.as_ptr().add(QK_K * i);
        let (scales, mins) = k4_scales_mins(&blk[4..16]);
        let summ = k4_min_sum(&act.bsums[16 * i..16 * i + 16], &mins);
        let mut sumi = _mm512_setzero_si512();
        for c in 0..4 {
            // 32 bytes hold 64 values: low nibbles (scale 2c) then high nibbles (2c + 1),
            // matching the 64 activations at 64c.
            let bits = _mm256_loadu_si256(b.add(16 + 32 * c) as *const __m256i);
            let q = _mm512_and_si512(join(bits, _mm256_srli_epi16::<4>(bits)), m4);
            // u4 x i8 pair sums fit i16 (at most 2 * 15 * 127); vpdpwssd scales and adds them.
            let p = _mm512_maddubs_epi16(q, _mm512_loadu_si512(y.add(64 * c) as *const _));
            let sc = _mm512_mask_blend_epi16(
                0xFFFF_0000,
                _mm512_set1_epi16(scales[2 * c] as i16),
                _mm512_set1_epi16(scales[2 * c + 1] as i16),
            );
            sumi = _mm512_dpwssd_epi32(sumi, p, sc);
        }
        let isum = _mm512_reduce_add_epi32(sumi);
        let yd = act.d[i];
        sumf += (f16_load(b) * yd) * isum as f32;
        sumf -= (f16_load(b.add(2)) * yd) * summ as f32;
    }
    sumf
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q6_k(row: &[u8], act: &Activation) -> f32 {
    let m4 = _mm512_set1_epi8(0x0F);
    let m3 = _mm512_set1_epi8(3);
    let mut sumf = 0f32;
    for (i, blk) in row.chunks_exact(210).enumerate() {
        let b = blk.as_ptr();
        let y = act.qs.as_ptr().add(QK_K * i);
        let sc = &blk[192..208];
        let bsums = &act.bsums[16 * i..16 * i + 16];
        let mut corr = 0i32;
        for j in 0..16 {
            corr += (sc[j] as i8) as i32 * bsums[j] as i32;
        }
        let scales = _mm_loadu_si128(sc.as_ptr() as *const __m128i);
        let mut sumi = _mm512_setzero_si512();
        for c in 0..2 {
            // ql: 64 bytes whose low nibbles are values 0..64 of this half and high nibbles
            // values 64..128; qh: 2 more bits of each, in four 2-bit planes.
            let ql = _mm512_loadu_si512(b.add(64 * c) as *const _);
            let qh = _mm256_loadu_si256(b.add(128 + 32 * c) as *const __m256i);
            let qh = join(qh, _mm256_srli_epi16::<2>(qh));
            // Unsigned 6-bit values in [0, 63]; the signed value is that minus 32.
            let q = [
                _mm512_or_si512(
                    _mm512_and_si512(ql, m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(qh, m3)),
                ),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(qh), m3)),
                ),
            ];
            for (k, qk) in q.into_iter().enumerate() {
                let g = 2 * c + k;
                // u6 x i8 pair sums fit i16 (at most 2 * 63 * 127); vpdpwssd scales them.
                let p = _mm512_maddubs_epi16(qk, _mm512_loadu_si512(y.add(64 * g) as *const _));
                // 16-bit lanes 8j..8j+8 hold 16 values that share scale 4g + j.
                let pick = |j: i8| _mm_set1_epi8(4 * g as i8 + j);
                let lo = _mm_shuffle_epi8(scales, _mm_unpacklo_epi64(pick(0), pick(1)));
                let hi = _mm_shuffle_epi8(scales, _mm_unpacklo_epi64(pick(2), pick(3)));
                let scv = _mm512_cvtepi8_epi16(_mm256_set_m128i(hi, lo));
                sumi = _mm512_dpwssd_epi32(sumi, p, scv);
            }
        }
        let isum = _mm512_reduce_add_epi32(sumi) - 32 * corr;
        let d = f16_load(b.add(208)) * act.d[i];
        sumf += d * isum as f32;
    }
    sumf
}
