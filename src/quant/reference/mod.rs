//! Scalar reference quantisers and dequantisers, byte-compatible with ggml.
//!
//! Every function here works on whole blocks: the caller (`quant::quantize`,
//! `quant::dequantize`) has already checked that the slices hold exactly the
//! right number of blocks. The arithmetic follows ggml's `quantize_row_*_ref`
//! and `dequantize_row_*` step by step, in the same order of `f32` operations,
//! so that results are identical bit for bit (ggml built without FMA
//! contraction; gguf-py's numpy implementation never contracts).
//!
//! This file holds the shared helpers and the float formats; the block formats are in
//! [`legacy`] (32-element blocks) and the `q*_k` files (256-element super-blocks), which
//! share the scale searches of [`kquant_search`].

#![forbid(unsafe_code)]

mod kquant_search;
mod legacy;
mod q2_q3_k;
mod q4_q5_k;
mod q6_q8_k;

pub(crate) use legacy::*;
pub(crate) use q2_q3_k::*;
pub(crate) use q4_q5_k::*;
pub(crate) use q6_q8_k::*;

use half::f16;

/// Elements per K-quant super-block.
pub(crate) const QK_K: usize = 256;
/// Elements per block of the legacy formats.
pub(crate) const QK: usize = 32;

/// Threshold under which ggml treats a group as all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Reads a little-endian fp16 at `off` as `f32`.
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

/// Writes `v` rounded to fp16 (round to nearest even, as ggml) at `off`.
#[inline(always)]
fn put_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

/// `v` rounded through fp16 and back.
#[inline(always)]
pub(crate) fn round_f16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

#[inline(always)]
pub(crate) fn f32_at(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the float
/// adder. Valid for |x| <= 4194303; outside that range it returns the same
/// (meaningless but deterministic) value as ggml.
#[inline(always)]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    let i = val.to_bits() as i32;
    (i & 0x007f_ffff).wrapping_sub(0x0040_0000)
}

/// BF16 from f32 as `ggml_compute_fp32_to_bf16`: round to nearest even, NaN kept quiet.
#[inline(always)]
pub(crate) fn f32_to_bf16(v: f32) -> u16 {
    let u = v.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

#[inline(always)]
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// (value with the largest magnitude, its magnitude); the first one wins ties.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// 6-bit scale and min `j` (0..8) of a Q4_K / Q5_K block's 12 packed scale bytes.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 16 signed 6-bit scales of a Q3_K block (already minus 32).
#[inline(always)]
pub(crate) fn q3k_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i8).wrapping_sub(32);
    }
    out
}

// ---------------------------------------------------------------------------
// Float formats
// ---------------------------------------------------------------------------

pub(crate) fn dequant_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
    }
}

pub(crate) fn quant_f32(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

pub(crate) fn dequant_f16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = f16::from_bits(u16::from_le_bytes([s[0], s[1]])).to_f32();
    }
}

pub(crate) fn quant_f16(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f16::from_f32(*s).to_bits().to_le_bytes());
    }
}

pub(crate) fn dequant_bf16(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *d = bf16_to_f32(u16::from_le_bytes([s[0], s[1]]));
    }
}

pub(crate) fn quant_bf16(src: &[f32], dst: &mut [u8]) {
    for (s, d) in src.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&f32_to_bf16(*s).to_le_bytes());
    }
}
