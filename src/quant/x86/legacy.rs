//! AVX2 kernels of the legacy 32-element formats (activations Q8_0 / Q8_1). They
//! accumulate in vector lanes and differ from `dot.rs` only by summation order.

use std::arch::x86_64::*;

use super::*;

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q8_0(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q8_0_tile::<1>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot4_q8_0(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q8_0_tile::<4>(row, acts) }
}

/// Q8_0 rows times `T` activations: each token gets the operations it would get alone.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        let mut acc = [_mm256_setzero_ps(); T];
        for ib in 0..row.len() / 34 {
            let b = w.add(34 * ib);
            let x = load256(b.add(2));
            let d = f16_load(b);
            for t in 0..T {
                let a = acts[t];
                let p = mul_sum_i8(x, load256_i8(a.qs.as_ptr().add(32 * ib)));
                let dd = _mm256_set1_ps(d * *a.d.get_unchecked(ib));
                acc[t] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc[t]);
            }
        }
        acc.map(|a| hsum_ps(a))
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_0(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (w, y, d) = (row.as_ptr(), act.qs.as_ptr(), act.d.as_ptr());
        let eight = _mm256_set1_epi8(8);
        let mut acc = _mm256_setzero_ps();
        for ib in 0..act.n / 32 {
            let b = w.add(18 * ib);
            let qx = _mm256_sub_epi8(nibbles32(b.add(2)), eight);
            let p = mul_sum_i8(qx, load256_i8(y.add(32 * ib)));
            let dd = _mm256_set1_ps(f16_load(b) * *d.add(ib));
            acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc);
        }
        hsum_ps(acc)
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_1(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (w, y, d, s) = (
            row.as_ptr(),
            act.qs.as_ptr(),
            act.d.as_ptr(),
            act.s.as_ptr(),
        );
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for ib in 0..act.n / 32 {
            let b = w.add(20 * ib);
            let p = mul_sum_u8_i8(nibbles32(b.add(4)), load256_i8(y.add(32 * ib)));
            let dd = _mm256_set1_ps(f16_load(b) * *d.add(ib));
            acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc);
            summs += f16_load(b.add(2)) * *s.add(ib);
        }
        hsum_ps(acc) + summs
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q5_0(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (w, y, d) = (row.as_ptr(), act.qs.as_ptr(), act.d.as_ptr());
        let m16 = _mm256_set1_epi8(16);
        let mut acc = _mm256_setzero_ps();
        for ib in 0..act.n / 32 {
            let b = w.add(22 * ib);
            let hb = _mm256_and_si256(bits32(b.add(2)), m16);
            let qx = _mm256_sub_epi8(_mm256_or_si256(nibbles32(b.add(6)), hb), m16);
            let p = mul_sum_i8(qx, load256_i8(y.add(32 * ib)));
            let dd = _mm256_set1_ps(f16_load(b) * *d.add(ib));
            acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc);
        }
        hsum_ps(acc)
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q5_1(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (w, y, d, s) = (
            row.as_ptr(),
            act.qs.as_ptr(),
            act.d.as_ptr(),
            act.s.as_ptr(),
        );
        let m16 = _mm256_set1_epi8(16);
        let mut acc = _mm256_setzero_ps();
        let mut summs = 0f32;
        for ib in 0..act.n / 32 {
            let b = w.add(24 * ib);
            let hb = _mm256_and_si256(bits32(b.add(4)), m16);
            let qx = _mm256_or_si256(nibbles32(b.add(8)), hb);
            let p = mul_sum_u8_i8(qx, load256_i8(y.add(32 * ib)));
            let dd = _mm256_set1_ps(f16_load(b) * *d.add(ib));
            acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(p), acc);
            summs += f16_load(b.add(2)) * *s.add(ib);
        }
        hsum_ps(acc) + summs
    }
}
