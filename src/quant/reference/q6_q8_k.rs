//! Q6_K and Q8_K.
//!
//! * Q6_K: ql[128] qh[64] scales[16] (i8) d   (210 bytes)
//! * Q8_K: d (f32) qs[256] bsums[16] (i16)   (292 bytes)

#![forbid(unsafe_code)]

use super::kquant_search::make_qx_quants;
use super::*;

// ---------------------------------------------------------------------------
// Q6_K: ql[128] qh[64] scales[16] (i8) d   (210 bytes)
// ---------------------------------------------------------------------------

pub(crate) fn quant_q6_k(src: &[f32], dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(210)) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..16 {
            let s = make_qx_quants(
                32,
                &x[16 * ib..16 * ib + 16],
                &mut l[16 * ib..16 * ib + 16],
                1,
            );
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            y.fill(0);
            continue;
        }
        let iscale = -128.0 / max_scale;
        put_f16(y, 208, 1.0 / iscale);
        for ib in 0..16 {
            y[192 + ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        let dd = f16_at(y, 208);
        for j in 0..16 {
            let d = dd * (y[192 + j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        let (ql, rest) = y.split_at_mut(128);
        let qh = &mut rest[..64];
        for (c, j) in (0..QK_K).step_by(128).enumerate() {
            for i in 0..32 {
                let q1 = l[j + i] as u8;
                let q2 = l[j + i + 32] as u8;
                let q3 = l[j + i + 64] as u8;
                let q4 = l[j + i + 96] as u8;
                ql[64 * c + i] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                ql[64 * c + i + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                qh[32 * c + i] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
    }
}

pub(crate) fn dequant_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(210).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 208);
        for c in 0..2 {
            let ql = &b[64 * c..64 * c + 64];
            let qh = &b[128 + 32 * c..128 + 32 * c + 32];
            let sc = &b[192 + 8 * c..192 + 8 * c + 8];
            let o = &mut y[128 * c..128 * c + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                o[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                o[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                o[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                o[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Q8_K: d (f32) qs[256] bsums[16] (i16)   (292 bytes)
// ---------------------------------------------------------------------------

/// Q8_K of one super-block; returns d, fills quants and 16-element sums.
#[inline(always)]
pub(crate) fn q8_k_block(x: &[f32], qs: &mut [i8], bsums: &mut [i16]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax == 0.0 {
        qs[..QK_K].fill(0);
        bsums[..16].fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (j, s) in bsums.iter_mut().enumerate().take(16) {
        *s = qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
    }
    1.0 / iscale
}

/// [`q8_k_block`] with the magnitude search in 8 lanes, so that it vectorises: the same
/// result. The reference keeps the first element of the largest magnitude (with its sign),
/// which is found again after the search.
#[inline(always)]
pub(crate) fn q8_k_block_lanes(x: &[f32], qs: &mut [i8], bsums: &mut [i16]) -> f32 {
    let x = &x[..QK_K];
    let mut lanes = [0f32; 8];
    for c in x.chunks_exact(8) {
        for (l, &v) in lanes.iter_mut().zip(c) {
            let a = v.abs();
            *l = if a > *l { a } else { *l };
        }
    }
    let amax = lanes.iter().fold(0f32, |m, &l| if l > m { l } else { m });
    if amax == 0.0 {
        qs[..QK_K].fill(0);
        bsums[..16].fill(0);
        return 0.0;
    }
    let max = x.iter().copied().find(|v| v.abs() == amax).unwrap_or(amax);
    let iscale = -127.0 / max;
    for (q, &v) in qs[..QK_K].iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    for (j, s) in bsums.iter_mut().enumerate().take(16) {
        *s = qs[16 * j..16 * j + 16].iter().map(|&q| q as i16).sum();
    }
    1.0 / iscale
}

pub(crate) fn quant_q8_k(src: &[f32], dst: &mut [u8]) {
    let mut qs = [0i8; QK_K];
    let mut bsums = [0i16; 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(292)) {
        let d = q8_k_block(x, &mut qs, &mut bsums);
        y[..4].copy_from_slice(&d.to_le_bytes());
        for (o, q) in y[4..260].iter_mut().zip(qs) {
            *o = q as u8;
        }
        for (o, s) in y[260..].chunks_exact_mut(2).zip(bsums) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }
}

pub(crate) fn dequant_q8_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(292).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f32_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[4..260]) {
            *o = d * (q as i8) as f32;
        }
    }
}
