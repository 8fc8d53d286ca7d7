//! Activations: the input vector quantised once as the weights' [`vec_dot_type`], in the
//! layout the dot-product kernels read.

#[cfg(target_arch = "x86_64")]
use super::dispatch::{level, Level};
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{reference, GgmlType, QK_K};
use crate::{Error, Result};

/// The type activations are converted to for dot products with rows of
/// `weight_type`: `F32` for float weights (and for `Q8_1`/`Q8_K` weights, which
/// ggml never uses as weights), `Q8_0` for Q4_0/Q5_0/Q8_0, `Q8_1` for
/// Q4_1/Q5_1 and `Q8_K` for the K-quants.
pub fn vec_dot_type(weight_type: GgmlType) -> GgmlType {
    match weight_type {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 => GgmlType::Q8_1,
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            GgmlType::Q8K
        }
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_1 | GgmlType::Q8K => {
            GgmlType::F32
        }
    }
}

/// Activations prepared once per input vector for dot products with rows of a
/// weight type.
///
/// Holds an f32 copy for float weights; Q8_0 blocks for Q4_0/Q5_0/Q8_0;
/// Q8_1 blocks for Q4_1/Q5_1; Q8_K blocks for K-quants — quantised exactly as
/// ggml's `quantize_row_q8_*_ref` do. The data is kept as separate arrays
/// (quants, per-block scales, per-16 sums) rather than ggml's interleaved
/// blocks, which is what the kernels want; the values are the same.
#[derive(Clone, Debug)]
pub struct Activation {
    /// The [`vec_dot_type`] these activations were prepared as.
    pub(super) kind: GgmlType,
    /// Number of elements.
    pub(super) n: usize,
    /// F32 copy (kind F32).
    pub(super) x: Vec<f32>,
    /// Quants (kinds Q8_0, Q8_1, Q8_K).
    pub(super) qs: Vec<i8>,
    /// Per-block scale (Q8_0/Q8_1: the fp16 value as f32; Q8_K: f32).
    pub(super) d: Vec<f32>,
    /// Q8_1: per-block `d * sum(qs)` (fp16-rounded as ggml stores it).
    pub(super) s: Vec<f32>,
    /// Q8_K: sums of 16 consecutive quants.
    pub(super) bsums: Vec<i16>,
    /// Q8_0: the quants plus 128, as unsigned bytes, for kernels that multiply unsigned
    /// activations by signed weights (AVX-512 VNNI's `vpdpbusd`).
    pub(super) biased: Vec<u8>,
}

impl Default for Activation {
    fn default() -> Self {
        Self::new()
    }
}

impl Activation {
    /// An empty activation buffer; reuse it across calls so the hot path does
    /// not allocate after warm-up.
    pub fn new() -> Self {
        Activation {
            kind: GgmlType::F32,
            n: 0,
            x: Vec::new(),
            qs: Vec::new(),
            d: Vec::new(),
            s: Vec::new(),
            bsums: Vec::new(),
            biased: Vec::new(),
        }
    }

    /// Number of elements prepared.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether no elements are prepared.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The type the activations are held as (see [`vec_dot_type`]).
    pub fn kind(&self) -> GgmlType {
        self.kind
    }

    /// Prepares `x` for dot products with rows of `weight_type`, quantising it
    /// as ggml does. `x.len()` must be a multiple of the weight type's block
    /// length, otherwise [`Error::Shape`].
    pub fn prepare(&mut self, weight_type: GgmlType, x: &[f32]) -> Result<()> {
        let n = x.len();
        let bl = weight_type.block_len();
        if n % bl != 0 {
            return Err(Error::Shape(format!(
                "activation of {n} elements is not a multiple of the {} block size {bl}",
                weight_type.name()
            )));
        }
        let kind = vec_dot_type(weight_type);
        self.kind = kind;
        self.n = n;
        self.x.clear();
        self.qs.clear();
        self.d.clear();
        self.s.clear();
        self.bsums.clear();
        match kind {
            GgmlType::Q8_0 => {
                self.qs.resize(n, 0);
                self.d.reserve(n / 32);
                for (xb, qb) in x.chunks_exact(32).zip(self.qs.chunks_exact_mut(32)) {
                    let d = q8_0_block(xb, qb);
                    self.d.push(reference::round_f16(d));
                }
                self.biased.clear();
                self.biased
                    .extend(self.qs.iter().map(|&q| (q as u8) ^ 0x80));
            }
            GgmlType::Q8_1 => {
                self.qs.resize(n, 0);
                self.d.reserve(n / 32);
                self.s.reserve(n / 32);
                for (xb, qb) in x.chunks_exact(32).zip(self.qs.chunks_exact_mut(32)) {
                    let (d, s) = reference::q8_1_block(xb, qb);
                    self.d.push(d);
                    self.s.push(s);
                }
            }
            GgmlType::Q8K => {
                self.qs.resize(n, 0);
                self.bsums.resize(n / 16, 0);
                self.d.reserve(n / QK_K);
                for ((xb, qb), sb) in x
                    .chunks_exact(QK_K)
                    .zip(self.qs.chunks_exact_mut(QK_K))
                    .zip(self.bsums.chunks_exact_mut(16))
                {
                    let d = q8_k_block(xb, qb, sb);
                    self.d.push(d);
                }
            }
            _ => self.x.extend_from_slice(x),
        }
        Ok(())
    }
}

/// One activation block as Q8_0 ([`reference::q8_0_block`]'s result, vectorised where the
/// CPU allows).
pub(super) fn q8_0_block(x: &[f32], qs: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: every x86_64 level above scalar was detected with AVX2 and FMA.
        return unsafe { x86::q8_0_block(x, qs) };
    }
    reference::q8_0_block_lanes(x, qs)
}

/// One activation block as Q8_K ([`reference::q8_k_block`]'s result, vectorised where the
/// CPU allows).
pub(super) fn q8_k_block(x: &[f32], qs: &mut [i8], bsums: &mut [i16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if level() != Level::Scalar {
        // SAFETY: as in `q8_0_block`.
        return unsafe { x86::q8_k_block(x, qs, bsums) };
    }
    reference::q8_k_block_lanes(x, qs, bsums)
}
