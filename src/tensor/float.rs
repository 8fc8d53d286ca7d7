//! Float weight types (f32, f16, bf16): conversion and dot products against f32 activations.
//! Conversions of block-quantised types are passed on to [`crate::quant`].

use half::{bf16, f16};

use super::GgmlType;
use crate::{Error, Result};

/// Decodes `src` (exactly `dst.len()` elements of `ty`) into f32.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    if ty.row_bytes(dst.len())? != src.len() {
        return Err(Error::Shape(format!(
            "{} bytes of {ty} cannot hold {} elements",
            src.len(),
            dst.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => return crate::quant::dequantize(ty, src, dst),
    }
    Ok(())
}

/// Encodes f32 values as `ty` (a float type) into `dst`.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    if ty.row_bytes(src.len())? != dst.len() {
        return Err(Error::Shape(format!(
            "{} bytes of {ty} cannot hold {} elements",
            dst.len(),
            src.len()
        )));
    }
    match ty {
        GgmlType::F32 => {
            for (c, v) in dst.chunks_exact_mut(4).zip(src) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            for (c, v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
            }
        }
        _ => return crate::quant::quantize(ty, src, dst),
    }
    Ok(())
}

/// Dot product of one row of a float type with `x`, in a fixed summation order.
pub fn dot_row(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let n = x.len();
    let full = n / LANES * LANES;
    match ty {
        GgmlType::F32 => {
            for (i, c) in row[..full * 4].chunks_exact(4 * LANES).enumerate() {
                for l in 0..LANES {
                    let w =
                        f32::from_le_bytes([c[4 * l], c[4 * l + 1], c[4 * l + 2], c[4 * l + 3]]);
                    acc[l] += w * x[i * LANES + l];
                }
            }
        }
        GgmlType::F16 => {
            for (i, c) in row[..full * 2].chunks_exact(2 * LANES).enumerate() {
                for l in 0..LANES {
                    let w = f16::from_le_bytes([c[2 * l], c[2 * l + 1]]).to_f32();
                    acc[l] += w * x[i * LANES + l];
                }
            }
        }
        GgmlType::BF16 => {
            for (i, c) in row[..full * 2].chunks_exact(2 * LANES).enumerate() {
                for l in 0..LANES {
                    let w = bf16::from_le_bytes([c[2 * l], c[2 * l + 1]]).to_f32();
                    acc[l] += w * x[i * LANES + l];
                }
            }
        }
        _ => return f32::NAN,
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    let size = ty.block_bytes();
    for (i, &xv) in x.iter().enumerate().skip(full) {
        let mut tmp = [0f32; 1];
        if dequantize(ty, &row[i * size..(i + 1) * size], &mut tmp).is_ok() {
            s += tmp[0] * xv;
        }
    }
    s
}
