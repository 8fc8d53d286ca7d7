//! AVX2 kernels of the K-quants (activations Q8_K). Q2_K and Q3_K are bit-identical to
//! `dot.rs`; Q4_K..Q6_K accumulate in float lanes, with four-activation tiles for prompts.

use std::arch::x86_64::*;

use super::*;

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q2_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0F);
        let pairs = scale_pair_shuffles();
        let mut sumf = 0f32;
        for (i, blk) in row.chunks_exact(84).enumerate() {
            let b = blk.as_ptr();
            let y = act.qs.as_ptr().add(QK_K * i);
            // 16 scale bytes: low nibble scales a sub-block, high nibble is its min.
            let sc = _mm_loadu_si128(b as *const __m128i);
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sc), m4));
            let bsums = _mm256_loadu_si256(act.bsums.as_ptr().add(16 * i) as *const __m256i);
            let summs = hsum_epi32(_mm256_madd_epi16(mins, bsums));
            let scales = _mm256_cvtepu8_epi16(_mm_and_si128(sc, m4));
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let bits = load256(b.add(16 + 32 * h));
                let sc8 = scales_of_half(scales, h);
                for (s, pair) in pairs.iter().enumerate() {
                    let q = _mm256_and_si256(
                        _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * s as i32)),
                        m3,
                    );
                    let p = _mm256_maddubs_epi16(q, load256_i8(y.add(128 * h + 32 * s)));
                    let scv = _mm256_shuffle_epi8(sc8, *pair);
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scv));
                }
            }
            let isum = hsum_epi32(sumi);
            let yd = act.d[i];
            let dall = yd * f16_load(b.add(80));
            let dmin = yd * f16_load(b.add(82));
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}

/// Byte shuffles of eight i16 scales (the same in both 128-bit lanes) that put scale `2s` in
/// every i16 of the low lane and scale `2s + 1` in every i16 of the high lane, for s in 0..4:
/// the scales of a pair of K-quant sub-blocks without leaving the vector registers.
const SCALE_PAIR_SHUFFLES: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut s = 0;
    while s < 4 {
        let mut i = 0;
        while i < 16 {
            t[s][i] = (4 * s + i % 2) as u8;
            t[s][16 + i] = (4 * s + 2 + i % 2) as u8;
            i += 1;
        }
        s += 1;
    }
    t
};

/// [`SCALE_PAIR_SHUFFLES`] in registers.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_pair_shuffles() -> [__m256i; 4] {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let t = &SCALE_PAIR_SHUFFLES;
        [
            load256(t[0].as_ptr()),
            load256(t[1].as_ptr()),
            load256(t[2].as_ptr()),
            load256(t[3].as_ptr()),
        ]
    }
}

/// The eight i16 scales of half `h` (0 or 1) of a K-quant block's sixteen (`scales`: low lane
/// scales 0..8, high lane 8..16), in both 128-bit lanes, for [`SCALE_PAIR_SHUFFLES`].
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scales_of_half(scales: __m256i, h: usize) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        if h == 0 {
            _mm256_permute4x64_epi64::<0b01_00_01_00>(scales)
        } else {
            _mm256_permute4x64_epi64::<0b11_10_11_10>(scales)
        }
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q3_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let m3 = _mm256_set1_epi8(3);
        let m1 = _mm256_set1_epi8(1);
        let pairs = scale_pair_shuffles();
        let mut sumf = 0f32;
        for (i, blk) in row.chunks_exact(110).enumerate() {
            let b = blk.as_ptr();
            let y = act.qs.as_ptr().add(QK_K * i);
            let scales = _mm256_cvtepi8_epi16(q3k_scales_vector(b.add(96)));
            // The -4 offset of every quant, applied once per sub-block: sum of scale x bsum.
            let bsums = _mm256_loadu_si256(act.bsums.as_ptr().add(16 * i) as *const __m256i);
            let corr = hsum_epi32(_mm256_madd_epi16(scales, bsums));
            let hm = load256(b);
            let mut sumi = _mm256_setzero_si256();
            for h in 0..2 {
                let bits = load256(b.add(32 + 32 * h));
                let sc8 = scales_of_half(scales, h);
                for (s, pair) in pairs.iter().enumerate() {
                    let lo = _mm256_and_si256(
                        _mm256_srl_epi16(bits, _mm_cvtsi32_si128(2 * s as i32)),
                        m3,
                    );
                    let hb = _mm256_and_si256(
                        _mm256_srl_epi16(hm, _mm_cvtsi32_si128((4 * h + s) as i32)),
                        m1,
                    );
                    // lo + 4*hbit in [0, 7]; the value is that minus 4.
                    let q = _mm256_or_si256(lo, _mm256_slli_epi16::<2>(hb));
                    let p = _mm256_maddubs_epi16(q, load256_i8(y.add(128 * h + 32 * s)));
                    let scv = _mm256_shuffle_epi8(sc8, *pair);
                    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, scv));
                }
            }
            let isum = hsum_epi32(sumi) - 4 * corr;
            let d = f16_load(b.add(108)) * act.d[i];
            sumf += d * isum as f32;
        }
        sumf
    }
}

/// The 16 signed 6-bit scales of a Q3_K block (12 bytes at `p`, already minus 32) as 16 i8,
/// assembled in four 32-bit words rather than byte by byte (the bytes then went through the
/// stack, and reading them back as a vector stalled on store forwarding).
///
/// # Safety
/// 12 bytes readable at `p`; AVX2 available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q3k_scales_vector(p: *const u8) -> __m128i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let word = |k: usize| (p.add(4 * k) as *const u32).read_unaligned();
        let (a0, a1, a2) = (word(0), word(1), word(2));
        const LOW4: u32 = 0x0F0F_0F0F;
        const LOW2: u32 = 0x0303_0303;
        let v = _mm_setr_epi32(
            ((a0 & LOW4) | ((a2 & LOW2) << 4)) as i32,
            ((a1 & LOW4) | (((a2 >> 2) & LOW2) << 4)) as i32,
            (((a0 >> 4) & LOW4) | (((a2 >> 4) & LOW2) << 4)) as i32,
            (((a1 >> 4) & LOW4) | (((a2 >> 6) & LOW2) << 4)) as i32,
        );
        _mm_sub_epi8(v, _mm_set1_epi8(32))
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<1, false>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot4_q4_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<4, false>(row, acts) }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q5_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<1, true>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot4_q5_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<4, true>(row, acts) }
}

/// `pshufb` patterns broadcasting the 16-bit value `j` (of 8, in each 128-bit lane).
const K4_BROADCAST: [[u8; 32]; 8] = {
    let mut t = [[0u8; 32]; 8];
    let mut j = 0;
    while j < 8 {
        let mut i = 0;
        while i < 32 {
            t[j][i] = (2 * j + i % 2) as u8;
            i += 1;
        }
        j += 1;
    }
    t
};

/// Q4_K (or, with `Q5`, Q5_K) rows times `T` activations, as ggml's AVX2 kernel: scales and
/// mins unpacked with word operations, each 32-value group's sum scaled by `vpmaddwd`, the
/// mins applied against the activation block sums, and accumulation in float lanes with one
/// horizontal sum per row. Each token gets the operations it would get alone.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn k4_tile<const T: usize, const Q5: bool>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (block, quants) = if Q5 { (176, 48) } else { (144, 16) };
        let m4 = _mm256_set1_epi8(0x0F);
        let m1 = _mm256_set1_epi8(1);
        let mut acc = [_mm256_setzero_ps(); T];
        let mut acc_min = [_mm_setzero_ps(); T];
        for (i, blk) in row.chunks_exact(block).enumerate() {
            let b = blk.as_ptr();
            let (scales, mins) = k4_scales_mins_packed(&*(b.add(4) as *const [u8; 12]));
            let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins as i64));
            let scales =
                _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(scales as i64)));
            let (d, dmin) = (f16_load(b), f16_load(b.add(2)));
            let qh = if Q5 {
                load256(b.add(16))
            } else {
                _mm256_setzero_si256()
            };
            let mut sumi = [_mm256_setzero_si256(); T];
            for c in 0..4 {
                // 32 bytes: low nibbles are values 64c..64c + 32 (scale 2c), high nibbles the
                // next 32 (scale 2c + 1).
                let bits = load256(b.add(quants + 32 * c));
                let mut lo = _mm256_and_si256(bits, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
                if Q5 {
                    // Bit 2c of qh[l] is the fifth bit of low-nibble value l, bit 2c + 1 of the
                    // high-nibble one.
                    let shift = _mm_cvtsi32_si128(2 * c as i32);
                    let h = _mm256_srl_epi16(qh, shift);
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(_mm256_and_si256(h, m1)));
                    let h = _mm256_srli_epi16::<1>(h);
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16::<4>(_mm256_and_si256(h, m1)));
                }
                let s_lo = _mm256_shuffle_epi8(scales, load256(K4_BROADCAST[2 * c].as_ptr()));
                let s_hi = _mm256_shuffle_epi8(scales, load256(K4_BROADCAST[2 * c + 1].as_ptr()));
                for t in 0..T {
                    let y = acts[t].qs.as_ptr().add(QK_K * i + 64 * c);
                    // u5 x i8 pair sums fit i16 (at most 2 * 31 * 128).
                    let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, load256_i8(y)), s_lo);
                    let p_hi =
                        _mm256_madd_epi16(_mm256_maddubs_epi16(hi, load256_i8(y.add(32))), s_hi);
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(p_lo, p_hi));
                }
            }
            for t in 0..T {
                let a = acts[t];
                // Block sums of 16 pairwise added: one per 32-value group, against its min.
                let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i) as *const __m256i);
                let pairs = _mm_hadd_epi16(
                    _mm256_castsi256_si128(bs),
                    _mm256_extracti128_si256::<1>(bs),
                );
                let summ = _mm_madd_epi16(mins, pairs);
                let yd = *a.d.get_unchecked(i);
                acc[t] =
                    _mm256_fmadd_ps(_mm256_set1_ps(d * yd), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
                acc_min[t] =
                    _mm_fmadd_ps(_mm_set1_ps(dmin * yd), _mm_cvtepi32_ps(summ), acc_min[t]);
            }
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = hsum_ps(acc[t]) - hsum128_ps(acc_min[t]);
        }
        out
    }
}

/// # Safety
/// [`DotFn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_q6_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q6_k_tile::<1>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX2, FMA and F16C available.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot4_q6_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q6_k_tile::<4>(row, acts) }
}

/// `pshufb` patterns for Q6_K: bytes `is` (8 times) then `is + 1` (8 times), for `is = 2k`.
const Q6K_PAIR: [[u8; 16]; 8] = {
    let mut t = [[0u8; 16]; 8];
    let mut k = 0;
    while k < 8 {
        let mut i = 0;
        while i < 16 {
            t[k][i] = (2 * k + i / 8) as u8;
            i += 1;
        }
        k += 1;
    }
    t
};

/// Q6_K rows times `T` activations, accumulated in float lanes with one horizontal sum per
/// row; the -32 offset of every value is applied once per block against the activation
/// block sums. Each token gets the operations it would get alone.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6_k_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let mut acc = [_mm256_setzero_ps(); T];
        for (i, blk) in row.chunks_exact(210).enumerate() {
            let b = blk.as_ptr();
            let sc8 = _mm_loadu_si128(b.add(192) as *const __m128i);
            let sc16 = _mm256_cvtepi8_epi16(sc8);
            let d = f16_load(b.add(208));
            let mut sumi = [_mm256_setzero_si256(); T];
            for c in 0..2 {
                let ql0 = load256(b.add(64 * c));
                let ql1 = load256(b.add(64 * c + 32));
                let qh = load256(b.add(128 + 32 * c));
                let h0 = _mm256_slli_epi16::<4>(_mm256_and_si256(qh, m3));
                let h1 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<2>(qh), m3));
                let h2 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<4>(qh), m3));
                let h3 = _mm256_slli_epi16::<4>(_mm256_and_si256(_mm256_srli_epi16::<6>(qh), m3));
                // Unsigned 6-bit values in [0, 63]; the signed value is that minus 32.
                let q = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), h0),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), h1),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4), h2),
                    _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4), h3),
                ];
                for (k, qk) in q.into_iter().enumerate() {
                    // Scale 8c + 2k for the first 16 values, 8c + 2k + 1 for the next 16.
                    let pick = _mm_loadu_si128(Q6K_PAIR[4 * c + k].as_ptr() as *const __m128i);
                    let scv = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc8, pick));
                    for t in 0..T {
                        let y = acts[t].qs.as_ptr().add(QK_K * i + 128 * c + 32 * k);
                        // u6 x i8 pair sums fit i16 (at most 2 * 63 * 128).
                        let p = _mm256_maddubs_epi16(qk, load256_i8(y));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scv));
                    }
                }
            }
            for t in 0..T {
                let a = acts[t];
                // The -32 offset: 32 * sum of scale j times the sum of its 16 activations.
                let bs = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i) as *const __m256i);
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bs, sc16));
                let s = _mm256_sub_epi32(sumi[t], offset);
                let dy = d * *a.d.get_unchecked(i);
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(dy), _mm256_cvtepi32_ps(s), acc[t]);
            }
        }
        acc.map(|a| hsum_ps(a))
    }
}
