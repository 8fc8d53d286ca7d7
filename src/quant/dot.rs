//! Portable scalar dot products, following ggml's `ggml_vec_dot_*_generic`.
//!
//! Integer sums are exact; the K-quant kernels form one exact integer sum per
//! super-block and then apply the float scales in a fixed order, which the
//! SIMD kernels reproduce exactly.

#![forbid(unsafe_code)]

use half::f16;

use super::reference::{bf16_to_f32, f16_at, q3k_scales, scale_min_k4, QK_K};
use super::GgmlType;
use super::{Activation, DotFn};

/// The scalar kernel for `weight_type`.
pub(crate) fn kernel(weight_type: GgmlType) -> DotFn {
    match weight_type {
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
        GgmlType::Q8_1 => dot_q8_1,
        GgmlType::Q8K => dot_q8_k,
    }
}

// ---------------------------------------------------------------------------
// f32 vectors (attention)
// ---------------------------------------------------------------------------

/// `a · b` in [`lanes_dot`]'s order (8 per-lane accumulators combined pairwise, then the
/// tail), which maps onto 8-wide vectors without reassociation, so a copy compiled for AVX2
/// gives the same bits.
#[inline(always)]
pub(crate) fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let b = &b[..n];
    lanes_dot(n, &a[..n], |i| b[i])
}

/// `a · b[i]` for four vectors, each summed exactly as [`f32_dot`] sums it (the same bits),
/// interleaved so that the four accumulation chains overlap instead of waiting on each other.
#[inline(always)]
pub(crate) fn f32_dot4(a: &[f32], bs: [&[f32]; 4]) -> [f32; 4] {
    let n = a.len();
    if bs.iter().any(|b| b.len() != n) {
        return bs.map(|b| f32_dot(a, b));
    }
    let full = n / LANES * LANES;
    let mut acc = [[0f32; LANES]; 4];
    for (i, x) in a[..full].chunks_exact(LANES).enumerate() {
        for (acc, b) in acc.iter_mut().zip(bs) {
            let w = &b[i * LANES..(i + 1) * LANES];
            for k in 0..LANES {
                acc[k] += w[k] * x[k];
            }
        }
    }
    let mut out = [0f32; 4];
    for ((o, acc), b) in out.iter_mut().zip(&acc).zip(bs) {
        let mut tail = 0f32;
        for j in full..n {
            tail += b[j] * a[j];
        }
        let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        *o = s + tail;
    }
    out
}

/// `y += alpha[i] * x[i]` for i = 0..4 in turn, element by element: the same bits as four
/// [`f32_axpy`] calls, with `y` loaded and stored once instead of four times.
#[inline(always)]
pub(crate) fn f32_axpy4(alpha: [f32; 4], xs: [&[f32]; 4], y: &mut [f32]) {
    let n = y.len();
    if xs.iter().any(|x| x.len() < n) {
        for (a, x) in alpha.into_iter().zip(xs) {
            f32_axpy(a, x, y);
        }
        return;
    }
    let (x0, x1, x2, x3) = (&xs[0][..n], &xs[1][..n], &xs[2][..n], &xs[3][..n]);
    for i in 0..n {
        let mut v = y[i];
        v += alpha[0] * x0[i];
        v += alpha[1] * x1[i];
        v += alpha[2] * x2[i];
        v += alpha[3] * x3[i];
        y[i] = v;
    }
}

/// `y += alpha * x`, element by element.
#[inline(always)]
pub(crate) fn f32_axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yv, &xv) in y.iter_mut().zip(x) {
        *yv += alpha * xv;
    }
}

// ---------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------

const LANES: usize = 8;

/// Sum of `w(i) * x[i]` with 8 independent accumulators, combined pairwise.
#[inline(always)]
fn lanes_dot(n: usize, x: &[f32], w: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let full = n / LANES * LANES;
    let mut i = 0;
    while i < full {
        for (k, a) in acc.iter_mut().enumerate() {
            *a += w(i + k) * x[i + k];
        }
        i += LANES;
    }
    let mut tail = 0f32;
    for (j, &xj) in x.iter().enumerate().take(n).skip(full) {
        tail += w(j) * xj;
    }
    let s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    s + tail
}

pub(crate) fn dot_f32(row: &[u8], act: &Activation) -> f32 {
    let x = &act.x[..act.n];
    lanes_dot(act.n, x, |i| {
        f32::from_le_bytes([row[4 * i], row[4 * i + 1], row[4 * i + 2], row[4 * i + 3]])
    })
}

pub(crate) fn dot_f16(row: &[u8], act: &Activation) -> f32 {
    let x = &act.x[..act.n];
    lanes_dot(act.n, x, |i| {
        f16::from_bits(u16::from_le_bytes([row[2 * i], row[2 * i + 1]])).to_f32()
    })
}

pub(crate) fn dot_bf16(row: &[u8], act: &Activation) -> f32 {
    let x = &act.x[..act.n];
    lanes_dot(act.n, x, |i| {
        bf16_to_f32(u16::from_le_bytes([row[2 * i], row[2 * i + 1]]))
    })
}

/// Weights ggml never uses as weights (Q8_1, Q8_K): dequantise block by block
/// and dot with the f32 activation.
fn dot_dequant(ty: GgmlType, row: &[u8], act: &Activation) -> f32 {
    let bl = ty.block_len();
    let bb = ty.block_bytes();
    let mut buf = [0f32; QK_K];
    let mut sum = 0f32;
    for (b, x) in row.chunks_exact(bb).zip(act.x.chunks_exact(bl)) {
        let y = &mut buf[..bl];
        if super::dequantize(ty, b, y).is_err() {
            return f32::NAN;
        }
        sum += lanes_dot(bl, x, |i| y[i]);
    }
    sum
}

pub(crate) fn dot_q8_1(row: &[u8], act: &Activation) -> f32 {
    dot_dequant(GgmlType::Q8_1, row, act)
}

pub(crate) fn dot_q8_k(row: &[u8], act: &Activation) -> f32 {
    dot_dequant(GgmlType::Q8K, row, act)
}

// ---------------------------------------------------------------------------
// Legacy 32-element formats
// ---------------------------------------------------------------------------

pub(crate) fn dot_q4_0(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in row.chunks_exact(18).enumerate() {
        let y = &act.qs[32 * ib..32 * ib + 32];
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (b[2 + j] & 0xF) as i32 - 8;
            let v1 = (b[2 + j] >> 4) as i32 - 8;
            sumi += v0 * y[j] as i32 + v1 * y[j + 16] as i32;
        }
        sumf += sumi as f32 * f16_at(b, 0) * act.d[ib];
    }
    sumf
}

pub(crate) fn dot_q4_1(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in row.chunks_exact(20).enumerate() {
        let y = &act.qs[32 * ib..32 * ib + 32];
        let mut sumi = 0i32;
        for j in 0..16 {
            let v0 = (b[4 + j] & 0xF) as i32;
            let v1 = (b[4 + j] >> 4) as i32;
            sumi += v0 * y[j] as i32 + v1 * y[j + 16] as i32;
        }
        sumf += (f16_at(b, 0) * act.d[ib]) * sumi as f32 + f16_at(b, 2) * act.s[ib];
    }
    sumf
}

pub(crate) fn dot_q5_0(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in row.chunks_exact(22).enumerate() {
        let y = &act.qs[32 * ib..32 * ib + 32];
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((b[6 + j] & 0xF) | h0) as i32 - 16;
            let x1 = ((b[6 + j] >> 4) | h1) as i32 - 16;
            sumi += x0 * y[j] as i32 + x1 * y[j + 16] as i32;
        }
        sumf += (f16_at(b, 0) * act.d[ib]) * sumi as f32;
    }
    sumf
}

pub(crate) fn dot_q5_1(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in row.chunks_exact(24).enumerate() {
        let y = &act.qs[32 * ib..32 * ib + 32];
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let mut sumi = 0i32;
        for j in 0..16 {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            let x0 = ((b[8 + j] & 0xF) | h0) as i32;
            let x1 = ((b[8 + j] >> 4) | h1) as i32;
            sumi += x0 * y[j] as i32 + x1 * y[j + 16] as i32;
        }
        sumf += (f16_at(b, 0) * act.d[ib]) * sumi as f32 + f16_at(b, 2) * act.s[ib];
    }
    sumf
}

pub(crate) fn dot_q8_0(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (ib, b) in row.chunks_exact(34).enumerate() {
        let y = &act.qs[32 * ib..32 * ib + 32];
        let mut sumi = 0i32;
        for j in 0..32 {
            sumi += (b[2 + j] as i8) as i32 * y[j] as i32;
        }
        sumf += sumi as f32 * (f16_at(b, 0) * act.d[ib]);
    }
    sumf
}

// ---------------------------------------------------------------------------
// K-quants (activations Q8_K)
// ---------------------------------------------------------------------------

#[inline(always)]
fn idot(a: &[i8], y: &[i8]) -> i32 {
    a.iter().zip(y).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// The 8 scales and 8 mins of a Q4_K / Q5_K block.
#[inline(always)]
pub(crate) fn k4_scales_mins(sc: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut s = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        (s[j], m[j]) = scale_min_k4(j, sc);
    }
    (s, m)
}

/// The 8 scales and the 8 mins of a Q4_K / Q5_K block (the 12 bytes at `sc`), byte `j` of
/// each `u64` holding value `j`: the same values as [`k4_scales_mins`], unpacked with a few
/// word operations instead of 16 byte-wise ones (the SIMD kernels widen them in one step).
// Only the x86 kernels use it (and the tests, everywhere).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[inline(always)]
pub(crate) fn k4_scales_mins_packed(sc: &[u8; 12]) -> (u64, u64) {
    const LOW6: u64 = 0x3f3f_3f3f;
    const LOW4: u64 = 0x0f0f_0f0f;
    const LOW2: u64 = 0x0303_0303;
    let word = |k: usize| {
        u32::from_le_bytes([sc[4 * k], sc[4 * k + 1], sc[4 * k + 2], sc[4 * k + 3]]) as u64
    };
    let (a0, a1, a2) = (word(0), word(1), word(2));
    // Values 0..4 are the low 6 bits of bytes 0..4 (scales) and 4..8 (mins); values 4..8 take
    // their low 4 bits from bytes 8..12 and their top 2 bits from the top of bytes 0..8.
    let scales = (a0 & LOW6) | (((a2 & LOW4) | (((a0 >> 6) & LOW2) << 4)) << 32);
    let mins = (a1 & LOW6) | ((((a2 >> 4) & LOW4) | (((a1 >> 6) & LOW2) << 4)) << 32);
    (scales, mins)
}

/// `sum_g bsums[g] * mins[g / 2]` over a super-block.
#[inline(always)]
pub(crate) fn k4_min_sum(bsums: &[i16], mins: &[u8; 8]) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        s += bsums[j] as i32 * mins[j / 2] as i32;
    }
    s
}

pub(crate) fn dot_q2_k(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (i, b) in row.chunks_exact(84).enumerate() {
        let q8 = &act.qs[QK_K * i..QK_K * (i + 1)];
        let bsums = &act.bsums[16 * i..16 * i + 16];
        let sc = &b[..16];
        let mut summs = 0i32;
        for j in 0..16 {
            summs += bsums[j] as i32 * (sc[j] >> 4) as i32;
        }
        let yd = act.d[i];
        let dall = yd * f16_at(b, 80);
        let dmin = yd * f16_at(b, 82);
        let mut isum = 0i32;
        let mut is = 0;
        for half in 0..2 {
            let q2 = &b[16 + 32 * half..16 + 32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                let y = &q8[128 * half + 16 * (is % 8)..];
                for part in 0..2 {
                    let d = (sc[is] & 0xF) as i32;
                    is += 1;
                    let mut s = 0i32;
                    for l in 0..16 {
                        s += y[16 * part + l] as i32 * ((q2[16 * part + l] >> shift) & 3) as i32;
                    }
                    isum += d * s;
                }
            }
        }
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

pub(crate) fn dot_q3_k(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    let mut a = [0i8; QK_K];
    for (i, b) in row.chunks_exact(110).enumerate() {
        let q8 = &act.qs[QK_K * i..QK_K * (i + 1)];
        let hm = &b[..32];
        let mut m = 1u8;
        let mut k = 0;
        for half in 0..2 {
            let q3 = &b[32 + 32 * half..32 + 32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for l in 0..32 {
                    let lo = ((q3[l] >> shift) & 3) as i8;
                    a[k + l] = lo - if hm[l] & m != 0 { 0 } else { 4 };
                }
                k += 32;
                m <<= 1;
            }
        }
        let sc = q3k_scales(&b[96..108]);
        let mut isum = 0i32;
        for j in 0..16 {
            isum += sc[j] as i32 * idot(&a[16 * j..16 * j + 16], &q8[16 * j..16 * j + 16]);
        }
        let d = f16_at(b, 108) * act.d[i];
        sumf += d * isum as f32;
    }
    sumf
}

pub(crate) fn dot_q4_k(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (i, b) in row.chunks_exact(144).enumerate() {
        let q8 = &act.qs[QK_K * i..QK_K * (i + 1)];
        let (scales, mins) = k4_scales_mins(&b[4..16]);
        let summ = k4_min_sum(&act.bsums[16 * i..16 * i + 16], &mins);
        let mut isum = 0i32;
        for c in 0..4 {
            let q = &b[16 + 32 * c..16 + 32 * c + 32];
            let y = &q8[64 * c..64 * c + 64];
            let mut s_lo = 0i32;
            let mut s_hi = 0i32;
            for l in 0..32 {
                s_lo += (q[l] & 0xF) as i32 * y[l] as i32;
                s_hi += (q[l] >> 4) as i32 * y[l + 32] as i32;
            }
            isum += scales[2 * c] as i32 * s_lo + scales[2 * c + 1] as i32 * s_hi;
        }
        let yd = act.d[i];
        sumf += (f16_at(b, 0) * yd) * isum as f32;
        sumf -= (f16_at(b, 2) * yd) * summ as f32;
    }
    sumf
}

pub(crate) fn dot_q5_k(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    for (i, b) in row.chunks_exact(176).enumerate() {
        let q8 = &act.qs[QK_K * i..QK_K * (i + 1)];
        let (scales, mins) = k4_scales_mins(&b[4..16]);
        let summ = k4_min_sum(&act.bsums[16 * i..16 * i + 16], &mins);
        let qh = &b[16..48];
        let mut isum = 0i32;
        for c in 0..4 {
            let q = &b[48 + 32 * c..48 + 32 * c + 32];
            let y = &q8[64 * c..64 * c + 64];
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let mut s_lo = 0i32;
            let mut s_hi = 0i32;
            for l in 0..32 {
                let lo = (q[l] & 0xF) as i32 + if qh[l] & u1 != 0 { 16 } else { 0 };
                let hi = (q[l] >> 4) as i32 + if qh[l] & u2 != 0 { 16 } else { 0 };
                s_lo += lo * y[l] as i32;
                s_hi += hi * y[l + 32] as i32;
            }
            isum += scales[2 * c] as i32 * s_lo + scales[2 * c + 1] as i32 * s_hi;
        }
        let yd = act.d[i];
        sumf += (f16_at(b, 0) * yd) * isum as f32;
        sumf -= (f16_at(b, 2) * yd) * summ as f32;
    }
    sumf
}

pub(crate) fn dot_q6_k(row: &[u8], act: &Activation) -> f32 {
    let mut sumf = 0f32;
    let mut a = [0i8; QK_K];
    for (i, b) in row.chunks_exact(210).enumerate() {
        let q8 = &act.qs[QK_K * i..QK_K * (i + 1)];
        for c in 0..2 {
            let ql = &b[64 * c..64 * c + 64];
            let qh = &b[128 + 32 * c..128 + 32 * c + 32];
            let o = &mut a[128 * c..128 * c + 128];
            for l in 0..32 {
                o[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                o[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                o[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                o[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let sc = &b[192..208];
        let mut isum = 0i32;
        for j in 0..16 {
            isum += (sc[j] as i8) as i32 * idot(&a[16 * j..16 * j + 16], &q8[16 * j..16 * j + 16]);
        }
        let d = f16_at(b, 208) * act.d[i];
        sumf += d * isum as f32;
    }
    sumf
}
