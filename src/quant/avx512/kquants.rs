//! AVX-512 VNNI kernels of the K-quants (activations Q8_K), with four-activation tiles for
//! prompts.

use std::arch::x86_64::*;

use super::*;

// ---------------------------------------------------------------------------
// K-quants (activations Q8_K)
//
// Each super-block's integer products are formed exactly in i32 lanes (`vpmaddubsw` pairs,
// then `vpdpwssd` with the sub-block scales) and scaled into float lanes; one horizontal sum
// per row. The lanes make the float summation order differ from `dot.rs` (a tolerance in the
// tests), and the `_tile` forms decode each weight block once for several activations while
// giving each activation the same operations as alone: bit-identical for any batch.
// ---------------------------------------------------------------------------

/// Sum of the 8 f32 lanes of `v`.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn hsum256_ps(v: __m256) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm512_reduce_add_ps(_mm512_zextps256_ps512(v)) }
}

/// Index vectors for `vpermw` picking a Q4_K/Q5_K chunk's two scales out of the 16 i16
/// lanes (8 scales, 8 mins): chunk `c`'s 64 products (as 32 i16 pair sums) take scale `2c`
/// in lanes 0..16 (low nibbles) and `2c + 1` in lanes 16..32 (high nibbles).
static K4_PICK: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut c = 0;
    while c < 4 {
        let mut l = 0;
        while l < 32 {
            t[c][l] = (2 * c + l / 16) as i16;
            l += 1;
        }
        c += 1;
    }
    t
};

/// `vpermw` indices duplicating the mins (lanes 8..16) pairwise, to meet the 16 bsums.
static K4_DUP_MINS: [i16; 16] = [8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15];

/// Index vectors picking Q6_K scales: in group `g` (64 values, 32 i16 pair sums) lanes
/// `8j..8j + 8` take scale `4g + j`.
static Q6K_PICK: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut g = 0;
    while g < 4 {
        let mut l = 0;
        while l < 32 {
            t[g][l] = (4 * g + l / 8) as i16;
            l += 1;
        }
        g += 1;
    }
    t
};

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot_q4_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<1, false>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot4_q4_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<4, false>(row, acts) }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot_q5_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<1, true>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot4_q5_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<4, true>(row, acts) }
}

/// Q4_K (`Q5 = false`, 144-byte blocks) or Q5_K (`Q5 = true`, 176-byte blocks with a fifth
/// bit plane) rows times `T` activations.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k4_tile<const T: usize, const Q5: bool>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (block, quants) = if Q5 { (176, 48) } else { (144, 16) };
        let m4 = _mm512_set1_epi8(0x0F);
        let sixteen = _mm512_set1_epi8(16);
        let pick = K4_PICK.map(|p| _mm512_loadu_si512(p.as_ptr() as *const _));
        let dup_mins = _mm256_loadu_si256(K4_DUP_MINS.as_ptr() as *const __m256i);
        let mut acc = [_mm512_setzero_ps(); T];
        let mut acc_min = [_mm256_setzero_ps(); T];
        for (i, blk) in row.chunks_exact(block).enumerate() {
            let b = blk.as_ptr();
            let (scales, mins) = k4_scales_mins_packed(&*(b.add(4) as *const [u8; 12]));
            // 16 i16 lanes: the 8 scales, then the 8 mins.
            let sm = _mm256_cvtepu8_epi16(_mm_set_epi64x(mins as i64, scales as i64));
            let mins = _mm256_permutexvar_epi16(dup_mins, sm);
            let sm = _mm512_castsi256_si512(sm);
            // [d, dmin] as f32.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()));
            let qh = if Q5 {
                let h = _mm256_loadu_si256(b.add(16) as *const __m256i);
                join(h, h)
            } else {
                _mm512_setzero_si512()
            };
            let mut q = [_mm512_setzero_si512(); 4];
            let mut sc = [_mm512_setzero_si512(); 4];
            for c in 0..4 {
                // 32 bytes hold 64 values: low nibbles (scale 2c) then high nibbles (2c + 1),
                // matching the 64 activations at 64c.
                let bits = _mm256_loadu_si256(b.add(quants + 32 * c) as *const __m256i);
                q[c] = _mm512_and_si512(join(bits, _mm256_srli_epi16::<4>(bits)), m4);
                if Q5 {
                    // Bit 2c of qh[l] is the fifth bit of the low-nibble value l, bit 2c + 1 of
                    // the high-nibble one.
                    let sel = join(
                        _mm256_set1_epi8((1u8 << (2 * c)) as i8),
                        _mm256_set1_epi8((2u8 << (2 * c)) as i8),
                    );
                    let high = _mm512_test_epi8_mask(qh, sel);
                    q[c] = _mm512_mask_add_epi8(q[c], high, q[c], sixteen);
                }
                sc[c] = _mm512_permutexvar_epi16(pick[c], sm);
            }
            for t in 0..T {
                let a = acts[t];
                let y = a.qs.as_ptr().add(QK_K * i);
                let mut sumi = _mm512_setzero_si512();
                for c in 0..4 {
                    // u5 x i8 pair sums fit i16 (at most 2 * 31 * 127).
                    let p =
                        _mm512_maddubs_epi16(q[c], _mm512_loadu_si512(y.add(64 * c) as *const _));
                    sumi = dpwssd(sumi, p, sc[c]);
                }
                let bsums = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i) as *const __m256i);
                let summ = _mm256_madd_epi16(bsums, mins);
                let dmy = _mm_mul_ps(dm, _mm_set1_ps(*a.d.get_unchecked(i)));
                acc[t] =
                    _mm512_fmadd_ps(_mm512_broadcastss_ps(dmy), _mm512_cvtepi32_ps(sumi), acc[t]);
                acc_min[t] = _mm256_fmadd_ps(
                    _mm256_broadcastss_ps(_mm_movehdup_ps(dmy)),
                    _mm256_cvtepi32_ps(summ),
                    acc_min[t],
                );
            }
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = _mm512_reduce_add_ps(acc[t]) - hsum256_ps(acc_min[t]);
        }
        out
    }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot_q6_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q6_k_tile::<1>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn dot4_q6_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q6_k_tile::<4>(row, acts) }
}

/// Q6_K rows times `T` activations.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0F);
        let m3 = _mm512_set1_epi8(3);
        let pick = Q6K_PICK.map(|p| _mm512_loadu_si512(p.as_ptr() as *const _));
        let mut acc = [_mm512_setzero_ps(); T];
        for (i, blk) in row.chunks_exact(210).enumerate() {
            let b = blk.as_ptr();
            let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
            let sc512 = _mm512_castsi256_si512(scales);
            let sc = pick.map(|p| _mm512_permutexvar_epi16(p, sc512));
            let d = f16_load(b.add(208));
            let mut q = [_mm512_setzero_si512(); 4];
            for c in 0..2 {
                // ql: 64 bytes whose low nibbles are values 0..64 of this half and high nibbles
                // values 64..128; qh: 2 more bits of each, in four 2-bit planes.
                let ql = _mm512_loadu_si512(b.add(64 * c) as *const _);
                let qh = _mm256_loadu_si256(b.add(128 + 32 * c) as *const __m256i);
                let qh = join(qh, _mm256_srli_epi16::<2>(qh));
                // Unsigned 6-bit values in [0, 63]; the signed value is that minus 32.
                q[2 * c] = _mm512_or_si512(
                    _mm512_and_si512(ql, m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(qh, m3)),
                );
                q[2 * c + 1] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(qh), m3)),
                );
            }
            for t in 0..T {
                let a = acts[t];
                let y = a.qs.as_ptr().add(QK_K * i);
                let mut sumi = _mm512_setzero_si512();
                for g in 0..4 {
                    // u6 x i8 pair sums fit i16 (at most 2 * 63 * 127).
                    let p =
                        _mm512_maddubs_epi16(q[g], _mm512_loadu_si512(y.add(64 * g) as *const _));
                    sumi = dpwssd(sumi, p, sc[g]);
                }
                // The -32 offset: 32 * sum of scale j times the sum of its 16 activations.
                let bsums = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i) as *const __m256i);
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, scales));
                let sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(offset));
                let dy = d * *a.d.get_unchecked(i);
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dy), _mm512_cvtepi32_ps(sumi), acc[t]);
            }
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = _mm512_reduce_add_ps(acc[t]);
        }
        out
    }
}
