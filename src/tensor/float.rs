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
