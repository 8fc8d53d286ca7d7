//! Q4_K and Q5_K.
//!
//! * Q4_K: d dmin scales[12] qs[128]   (144 bytes)
//! * Q5_K: d dmin scales[12] qh[32] qs[128]   (176 bytes)

#![forbid(unsafe_code)]

use super::kquant_search::make_qkx2_quants;
use super::*;

// ---------------------------------------------------------------------------
// Q4_K: d dmin scales[12] qs[128]   (144 bytes)
// Q5_K: d dmin scales[12] qh[32] qs[128]   (176 bytes)
// ---------------------------------------------------------------------------

/// Shared first half of the Q4_K / Q5_K quantisers: sub-block scales, packed
/// 6-bit scales/mins, super-block d/dmin, and the final levels in `l`.
fn quant_k4_common(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    head: &mut [u8],
    l: &mut [u8; QK_K],
) {
    let mut laux = [0u8; 32];
    let mut weights = [0f32; 32];
    let mut mins = [0f32; 8];
    let mut scales = [0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            &mut laux,
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    pack_scales_mins(&scales, &mins, inv_scale, inv_min, &mut head[4..16]);
    put_f16(head, 0, max_scale / 63.0);
    put_f16(head, 2, max_min / 63.0);
    let dd = f16_at(head, 0);
    let dmin = f16_at(head, 2);
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &head[4..16]);
        let d = dd * s as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for ii in 0..32 {
            let q = nearest_int((x[32 * j + ii] + dm) / d);
            l[32 * j + ii] = q.clamp(0, nmax) as u8;
        }
    }
}

/// The eight sub-block scales and mins, times `inv_scale` / `inv_min` and rounded to 6 bits,
/// packed into the 12 scale bytes `sc` of a Q4_K / Q5_K block (read back by `scale_min_k4`).
fn pack_scales_mins(
    scales: &[f32; 8],
    mins: &[f32; 8],
    inv_scale: f32,
    inv_min: f32,
    sc: &mut [u8],
) {
    sc.fill(0);
    for j in 0..8 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
}

pub(crate) fn quant_q4_k(src: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(144)) {
        quant_k4_common(x, 15, -1.0, 20, &mut y[..16], &mut l);
        let q = &mut y[16..];
        for (c, j) in (0..QK_K).step_by(64).enumerate() {
            for i in 0..32 {
                q[32 * c + i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    }
}

pub(crate) fn dequant_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(144).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let sc = &b[4..16];
        for c in 0..4 {
            let q = &b[16 + 32 * c..16 + 32 * c + 32];
            let (s1, m1) = scale_min_k4(2 * c, sc);
            let (s2, m2) = scale_min_k4(2 * c + 1, sc);
            let d1 = d * s1 as f32;
            let m1 = min * m1 as f32;
            let d2 = d * s2 as f32;
            let m2 = min * m2 as f32;
            let o = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                o[l] = d1 * (q[l] & 0xF) as f32 - m1;
                o[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
            }
        }
    }
}

pub(crate) fn quant_q5_k(src: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(176)) {
        quant_k4_common(x, 31, -0.5, 15, &mut y[..16], &mut l);
        let (qh, ql) = y[16..].split_at_mut(32);
        qh.fill(0);
        let mut m1 = 1u8;
        let mut m2 = 2u8;
        for (c, n) in (0..QK_K).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[32 * c + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

pub(crate) fn dequant_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(176).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let min = f16_at(b, 2);
        let sc = &b[4..16];
        let qh = &b[16..48];
        let mut u1 = 1u8;
        let mut u2 = 2u8;
        for c in 0..4 {
            let ql = &b[48 + 32 * c..48 + 32 * c + 32];
            let (s1, m1) = scale_min_k4(2 * c, sc);
            let (s2, m2) = scale_min_k4(2 * c + 1, sc);
            let d1 = d * s1 as f32;
            let m1 = min * m1 as f32;
            let d2 = d * s2 as f32;
            let m2 = min * m2 as f32;
            let o = &mut y[64 * c..64 * c + 64];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                o[l] = d1 * ((ql[l] & 0xF) + h1) as f32 - m1;
                o[l + 32] = d2 * ((ql[l] >> 4) + h2) as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}
