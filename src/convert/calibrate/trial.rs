//! Calibration trials in memory: every expert pre-encoded at every candidate type, served to
//! the forward pass through an [`ExpertSource`] whose per-expert choice can be changed between
//! evaluations. One model then runs every trial, with no file written per trial.

#![forbid(unsafe_code)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::RwLock;

use super::super::write::{decode_rows, encode_rows};
use crate::engine::Model;
use crate::expert::{ExpertLoc, ExpertSource, ExpertView, MatrixLoc, Precision};
use crate::tensor::GgmlType;
use crate::{Error, Result};

/// One expert encoded at one type.
struct Variant {
    /// Offsets relative to `bytes`.
    loc: ExpertLoc,
    bytes: Vec<u8>,
}

/// Every expert at every candidate type, with its quantisation error.
pub struct ExpertVariants {
    pub types: Vec<GgmlType>,
    pub n_layers: usize,
    pub n_experts: usize,
    /// `variants[expert][type]`, experts layer-major.
    variants: Vec<Vec<Variant>>,
    /// `error[expert][type]`: squared error of the encoded weights over their squared norm.
    pub error: Vec<Vec<f64>>,
}

/// An expert's matrix as f32 rows.
fn matrix_f32(m: &crate::tensor::MatrixRef<'_>) -> Result<Vec<f32>> {
    let mut out = vec![0f32; m.rows * m.cols];
    for (r, row) in out.chunks_exact_mut(m.cols).enumerate() {
        m.row_f32(r, row)?;
    }
    Ok(out)
}

/// Expert `e` of layer `l` at each of `types`, with each one's relative squared error.
fn encode_expert(
    model: &Model,
    l: usize,
    e: usize,
    types: &[GgmlType],
) -> Result<(Vec<Variant>, Vec<f64>)> {
    let view = model
        .experts
        .get(l, e, Precision::High, &AtomicBool::new(false))?;
    let mats = [view.gate, view.up, view.down];
    let values: Vec<Vec<f32>> = mats.iter().map(matrix_f32).collect::<Result<_>>()?;
    let norm: f64 = values.iter().flatten().map(|&v| (v as f64).powi(2)).sum();
    let mut per_type = Vec::with_capacity(types.len());
    let mut err_per_type = Vec::with_capacity(types.len());
    for &ty in types {
        let (variant, sq_err) = encode_variant(&mats, &values, ty)?;
        per_type.push(variant);
        err_per_type.push(sq_err / norm.max(f64::MIN_POSITIVE));
    }
    Ok((per_type, err_per_type))
}

/// An expert's three matrices (`mats`, their `values`) encoded at `ty` back to back, and the
/// squared error of the encoded weights.
fn encode_variant(
    mats: &[crate::tensor::MatrixRef<'_>],
    values: &[Vec<f32>],
    ty: GgmlType,
) -> Result<(Variant, f64)> {
    let mut bytes = Vec::new();
    let mut locs = Vec::with_capacity(3);
    let mut sq_err = 0f64;
    for (m, v) in mats.iter().zip(values) {
        let enc = encode_rows(ty, v, m.cols)?;
        let mut back = vec![0f32; v.len()];
        decode_rows(ty, &enc, m.cols, &mut back)?;
        sq_err += v
            .iter()
            .zip(&back)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>();
        locs.push(MatrixLoc {
            ty,
            rows: m.rows,
            cols: m.cols,
            offset: bytes.len() as u64,
            len: enc.len() as u64,
        });
        bytes.extend_from_slice(&enc);
    }
    let loc = ExpertLoc {
        gate: locs[0],
        up: locs[1],
        down: locs[2],
    };
    Ok((Variant { loc, bytes }, sq_err))
}

impl ExpertVariants {
    /// Encodes every expert of `model` at each of `types` (each must fit the expert rows).
    pub fn build(
        model: &Model,
        types: &[GgmlType],
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let c = &model.config;
        let total = c.n_layers * c.n_experts;
        let mut variants = Vec::with_capacity(total);
        let mut error = Vec::with_capacity(total);
        for l in 0..c.n_layers {
            for e in 0..c.n_experts {
                let (per_type, err_per_type) = encode_expert(model, l, e, types)?;
                variants.push(per_type);
                error.push(err_per_type);
                progress(l * c.n_experts + e + 1, total);
            }
        }
        Ok(ExpertVariants {
            types: types.to_vec(),
            n_layers: c.n_layers,
            n_experts: c.n_experts,
            variants,
            error,
        })
    }

    /// Bytes of expert `expert` (layer-major index) at candidate `ty`.
    pub fn bytes(&self, expert: usize, ty: usize) -> u64 {
        self.variants[expert][ty].bytes.len() as u64
    }
}

/// The in-memory expert source of calibration trials.
pub struct TrialExperts {
    variants: Arc<ExpertVariants>,
    /// Per expert (layer-major), the index into `variants.types` it is served at.
    assignment: RwLock<Vec<usize>>,
}

impl TrialExperts {
    /// Every expert at candidate 0.
    pub fn new(variants: Arc<ExpertVariants>) -> Arc<Self> {
        let n = variants.n_layers * variants.n_experts;
        Arc::new(TrialExperts {
            variants,
            assignment: RwLock::new(vec![0; n]),
        })
    }

    /// Serves each expert at its type from now on (call between evaluations).
    pub fn set(&self, assignment: &[usize]) -> Result<()> {
        let v = &self.variants;
        if assignment.len() != v.n_layers * v.n_experts
            || assignment.iter().any(|&t| t >= v.types.len())
        {
            return Err(Error::InvalidArgument(
                "a trial assignment does not fit the model".into(),
            ));
        }
        self.assignment.write().copy_from_slice(assignment);
        Ok(())
    }

    /// A model that runs `model`'s resident weights with these experts.
    pub fn model(self: &Arc<Self>, model: &Model) -> Result<Arc<Model>> {
        Ok(Arc::new(Model::from_parts(
            model.file.clone(),
            model.config.clone(),
            model.directory.clone(),
            Box::new(TrialSource(self.clone())),
        )?))
    }
}

struct TrialSource(Arc<TrialExperts>);

impl ExpertSource for TrialSource {
    fn get(
        &self,
        layer: usize,
        expert: usize,
        _precision: Precision,
        _cancel: &AtomicBool,
    ) -> Result<ExpertView<'_>> {
        let v = &self.0.variants;
        if layer >= v.n_layers || expert >= v.n_experts {
            return Err(Error::InvalidArgument(format!(
                "expert {expert} of layer {layer} does not exist"
            )));
        }
        let index = layer * v.n_experts + expert;
        let ty = self.0.assignment.read()[index];
        let variant = &v.variants[index][ty];
        ExpertView::new(&variant.loc, 0, &variant.bytes, None)
    }

    fn name(&self) -> &'static str {
        "calibration"
    }
}
