//! Legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.

#![forbid(unsafe_code)]

use super::*;

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

pub(crate) fn quant_q4_0(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(18)) {
        let (max, _) = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[j + QK / 2] * id;
            let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
            let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
            y[2 + j] = xi0 | (xi1 << 4);
        }
    }
}

pub(crate) fn dequant_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for j in 0..QK / 2 {
            let q = b[2 + j];
            y[j] = ((q & 0xF) as i32 - 8) as f32 * d;
            y[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(crate) fn quant_q4_1(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(20)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        put_f16(y, 2, min);
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[j + QK / 2] - min) * id;
            let xi0 = ((x0 + 0.5) as i8).min(15) as u8;
            let xi1 = ((x1 + 0.5) as i8).min(15) as u8;
            y[4 + j] = xi0 | (xi1 << 4);
        }
    }
}

pub(crate) fn dequant_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        for j in 0..QK / 2 {
            let q = b[4 + j];
            y[j] = (q & 0xF) as f32 * d + m;
            y[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

pub(crate) fn quant_q5_0(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(22)) {
        let (max, _) = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = x[j] * id;
            let x1 = x[j + QK / 2] * id;
            let xi0 = ((x0 + 16.5) as i8).min(31) as u8;
            let xi1 = ((x1 + 16.5) as i8).min(31) as u8;
            y[6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        y[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

pub(crate) fn dequant_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qh = u32_at(b, 2);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = b[6 + j];
            y[j] = (((q & 0xF) | xh0) as i32 - 16) as f32 * d;
            y[j + QK / 2] = (((q >> 4) | xh1) as i32 - 16) as f32 * d;
        }
    }
}

pub(crate) fn quant_q5_1(src: &[f32], dst: &mut [u8]) {
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(24)) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        put_f16(y, 0, d);
        put_f16(y, 2, min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let x0 = (x[j] - min) * id;
            let x1 = (x[j + QK / 2] - min) * id;
            // ggml has no clamp here (the value cannot exceed 31 for finite
            // input); gguf-py clamps to 31. Clamping keeps both in agreement.
            let xi0 = ((x0 + 0.5) as u8).min(31);
            let xi1 = ((x1 + 0.5) as u8).min(31);
            y[8 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        y[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

pub(crate) fn dequant_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32_at(b, 4);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = b[8 + j];
            y[j] = ((q & 0xF) | xh0) as f32 * d + m;
            y[j + QK / 2] = ((q >> 4) | xh1) as f32 * d + m;
        }
    }
}

/// Q8_0 of one block: (d as stored in fp16, quants).
#[inline(always)]
pub(crate) fn q8_0_block(x: &[f32], qs: &mut [i8]) -> f32 {
    let mut amax = 0.0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        // C `roundf` rounds half away from zero, as does `f32::round`.
        *q = (v * id).round() as i8;
    }
    d
}

/// [`q8_0_block`] with the magnitude search in 8 lanes, so that it vectorises: the same
/// result (the largest magnitude does not depend on the order it is searched in).
#[inline(always)]
pub(crate) fn q8_0_block_lanes(x: &[f32], qs: &mut [i8]) -> f32 {
    let mut lanes = [0f32; 8];
    for c in x.chunks_exact(8) {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = l.max(v.abs());
        }
    }
    let mut amax = lanes.iter().fold(0f32, |m, &l| m.max(l));
    for &v in x.chunks_exact(8).remainder() {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    d
}

pub(crate) fn quant_q8_0(src: &[f32], dst: &mut [u8]) {
    let mut qs = [0i8; QK];
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(34)) {
        let d = q8_0_block(x, &mut qs);
        put_f16(y, 0, d);
        for (o, q) in y[2..].iter_mut().zip(qs) {
            *o = q as u8;
        }
    }
}

pub(crate) fn dequant_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[2..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}

/// Q8_1 of one block: (d, s = d * sum(qs)), both as ggml stores them (fp16-rounded).
#[inline(always)]
pub(crate) fn q8_1_block(x: &[f32], qs: &mut [i8]) -> (f32, f32) {
    let d = q8_0_block(x, qs);
    let sum: i32 = qs.iter().map(|&q| q as i32).sum();
    (round_f16(d), round_f16(sum as f32 * d))
}

pub(crate) fn quant_q8_1(src: &[f32], dst: &mut [u8]) {
    let mut qs = [0i8; QK];
    for (x, y) in src.chunks_exact(QK).zip(dst.chunks_exact_mut(36)) {
        let (d, s) = q8_1_block(x, &mut qs);
        put_f16(y, 0, d);
        put_f16(y, 2, s);
        for (o, q) in y[4..].iter_mut().zip(qs) {
            *o = q as u8;
        }
    }
}

pub(crate) fn dequant_q8_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(36).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (o, &q) in y.iter_mut().zip(&b[4..]) {
            *o = (q as i8) as f32 * d;
        }
    }
}
