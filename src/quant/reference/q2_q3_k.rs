//! Q2_K and Q3_K.
//!
//! * Q2_K: scales[16] qs[64] d dmin   (84 bytes)
//! * Q3_K: hmask[32] qs[64] scales[12] d   (110 bytes)

#![forbid(unsafe_code)]

use super::kquant_search::{make_q3_quants, make_qkx2_quants, pack_2bit};
use super::*;

// ---------------------------------------------------------------------------
// Q2_K: scales[16] qs[64] d dmin   (84 bytes)
// ---------------------------------------------------------------------------

pub(crate) fn quant_q2_k(src: &[f32], dst: &mut [u8]) {
    let mut l = [0u8; QK_K];
    let mut laux = [0u8; 16];
    let mut weights = [0f32; 16];
    let mut mins = [0f32; 16];
    let mut scales = [0f32; 16];
    const Q4SCALE: f32 = 15.0;
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(84)) {
        let mut max_scale = 0.0f32;
        let mut max_min = 0.0f32;
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            for (w, v) in weights.iter_mut().zip(xs) {
                *w = v.abs();
            }
            let (s, m) = make_qkx2_quants(
                3,
                xs,
                &weights,
                &mut l[16 * j..16 * j + 16],
                &mut laux,
                -0.5,
                0.1,
                15,
                true,
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
        let (sc, rest) = y.split_at_mut(16);
        if max_scale > 0.0 {
            let iscale = Q4SCALE / max_scale;
            for j in 0..16 {
                sc[j] = nearest_int(iscale * scales[j]) as u8;
            }
            put_f16(rest, 64, max_scale / Q4SCALE);
        } else {
            sc.fill(0);
            put_f16(rest, 64, 0.0);
        }
        if max_min > 0.0 {
            let iscale = Q4SCALE / max_min;
            for j in 0..16 {
                let lm = nearest_int(iscale * mins[j]);
                sc[j] |= (lm << 4) as u8;
            }
            put_f16(rest, 66, max_min / Q4SCALE);
        } else {
            put_f16(rest, 66, 0.0);
        }
        let dd = f16_at(rest, 64);
        let dmin = f16_at(rest, 66);
        for j in 0..16 {
            let d = dd * (sc[j] & 0xF) as f32;
            if d == 0.0 {
                continue;
            }
            let dm = dmin * (sc[j] >> 4) as f32;
            for ii in 0..16 {
                let q = nearest_int((x[16 * j + ii] + dm) / d);
                l[16 * j + ii] = q.clamp(0, 3) as u8;
            }
        }
        pack_2bit(&l, &mut rest[..64]);
    }
}

pub(crate) fn dequant_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(84).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 80);
        let min = f16_at(b, 82);
        let sc = &b[..16];
        let mut out = 0;
        let mut is = 0;
        for half in 0..2 {
            let q = &b[16 + 32 * half..16 + 32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let s = sc[is];
                    is += 1;
                    let dl = d * (s & 0xF) as f32;
                    let ml = min * (s >> 4) as f32;
                    for l in 0..16 {
                        y[out] = dl * ((q[16 * part + l] >> shift) & 3) as f32 - ml;
                        out += 1;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Q3_K: hmask[32] qs[64] scales[12] d   (110 bytes)
// ---------------------------------------------------------------------------

pub(crate) fn quant_q3_k(src: &[f32], dst: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; 16];
    for (x, y) in src.chunks_exact(QK_K).zip(dst.chunks_exact_mut(110)) {
        let mut max_scale = 0.0f32;
        let mut amax = 0.0f32;
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let s = scales[j].abs();
            if s > amax {
                amax = s;
                max_scale = scales[j];
            }
        }
        y.fill(0);
        {
            let ys = &mut y[96..108];
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for j in 0..16 {
                    let li = nearest_int(iscale * scales[j]) as i8;
                    let lv = (li.clamp(-32, 31) + 32) as u8;
                    if j < 8 {
                        ys[j] = lv & 0xF;
                    } else {
                        ys[j - 8] |= (lv & 0xF) << 4;
                    }
                    let hi = lv >> 4;
                    ys[j % 4 + 8] |= hi << (2 * (j / 4));
                }
                put_f16(y, 108, 1.0 / iscale);
            } else {
                put_f16(y, 108, 0.0);
            }
        }
        let dall = f16_at(y, 108);
        let sc = q3k_scales(&y[96..108]);
        for j in 0..16 {
            let d = dall * sc[j] as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                l[16 * j + ii] = (q + 4) as i8;
            }
        }
        let mut lu = [0u8; QK_K];
        for j in 0..QK_K {
            let mut v = l[j] as u8;
            if v > 3 {
                y[j % 32] |= 1 << (j / 32);
                v -= 4;
            }
            lu[j] = v;
        }
        pack_2bit(&lu, &mut y[32..96]);
    }
}

pub(crate) fn dequant_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(110).zip(dst.chunks_exact_mut(QK_K)) {
        let dall = f16_at(b, 108);
        let sc = q3k_scales(&b[96..108]);
        let hm = &b[..32];
        let mut out = 0;
        let mut is = 0;
        let mut m = 1u8;
        for half in 0..2 {
            let q = &b[32 + 32 * half..32 + 32 * half + 32];
            for shift in [0u32, 2, 4, 6] {
                for part in 0..2 {
                    let dl = dall * sc[is] as f32;
                    is += 1;
                    for l in 0..16 {
                        let idx = 16 * part + l;
                        let lo = ((q[idx] >> shift) & 3) as i32;
                        let h = if hm[idx] & m != 0 { 0 } else { 4 };
                        y[out] = dl * (lo - h) as f32;
                        out += 1;
                    }
                }
                m <<= 1;
            }
        }
    }
}
