//! AVX-512 VNNI kernels of the legacy 32-element formats (activations Q8_0): two blocks per
//! 512-bit step, with a four-activation Q8_0 tile for prompts.

use std::arch::x86_64::*;

use super::*;

// ---------------------------------------------------------------------------
// Legacy 32-element formats: two blocks per 512-bit step
// ---------------------------------------------------------------------------

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot_q8_0(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q8_0_tile::<1>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot4_q8_0(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q8_0_tile::<4>(row, acts) }
}

/// `row · acts[t]` for `T` activations: each pair of weight blocks is loaded and its signs
/// split off once for all of them. Every activation gets exactly the operations it would get
/// alone, so the results do not depend on `T`.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        let nb = acts[0].n / 32;
        let zero = _mm512_setzero_si512();
        let bias = _mm512_set1_epi8(-128);
        let halves = _mm512_loadu_si512(HALVES.as_ptr() as *const _);
        let mut acc = [_mm512_setzero_ps(); T];
        let mut ib = 0;
        while ib + 2 <= nb {
            let (b0, b1) = (w.add(34 * ib), w.add(34 * ib + 34));
            let x = join(
                _mm256_loadu_si256(b0.add(2) as *const __m256i),
                _mm256_loadu_si256(b1.add(2) as *const __m256i),
            );
            // vpdpbusd multiplies unsigned by signed bytes: the activations come biased by 128,
            // so each group of four starts from -128 times the sum of its weights (exact in i32).
            let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias, x));
            let wd = halves_ps(f16_load(b0), f16_load(b1));
            for (a, acc) in acts.iter().zip(acc.iter_mut()) {
                let y = _mm512_loadu_si512(a.biased.as_ptr().add(32 * ib) as *const _);
                let p = _mm512_dpbusd_epi32(start, y, x);
                // The two blocks' activation scales, each in 8 lanes.
                let yd = _mm_castsi128_ps(_mm_loadl_epi64(a.d.as_ptr().add(ib) as *const __m128i));
                let yd = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(yd));
                *acc = _mm512_fmadd_ps(_mm512_mul_ps(wd, yd), _mm512_cvtepi32_ps(p), *acc);
            }
            ib += 2;
        }
        let mut out = [0f32; T];
        for (o, (a, acc)) in out.iter_mut().zip(acts.iter().zip(acc)) {
            *o = _mm512_reduce_add_ps(acc);
            if ib < nb {
                let b = w.add(34 * ib);
                let p = dot_i8_256(
                    _mm256_loadu_si256(b.add(2) as *const __m256i),
                    _mm256_loadu_si256(a.qs.as_ptr().add(32 * ib) as *const __m256i),
                );
                let s = _mm512_reduce_add_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(p)));
                *o += s * (f16_load(b) * a.d[ib]);
            }
        }
        out
    }
}

/// 32 nibbles of the 16 bytes at `p`: low nibbles then high nibbles, as 32 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let lo = _mm_loadu_si128(p as *const __m128i);
        let hi = _mm_srli_epi16::<4>(lo);
        _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
    }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_0(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
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
}
