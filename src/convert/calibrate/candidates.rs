//! The candidate types of a calibration: those that fit every expert row, dearest first.

#![forbid(unsafe_code)]

use super::{CalibrateOptions, BLOCK32_CANDIDATES, DEFAULT_CANDIDATES};
use crate::engine::Model;
use crate::tensor::GgmlType;
use crate::{Error, Result};

/// The candidate types that fit every expert row of `model`, dearest first, with notes on
/// what was dropped. The baseline must fit.
pub(super) fn applicable_types(
    model: &Model,
    opts: &CalibrateOptions,
) -> Result<(Vec<GgmlType>, Vec<String>)> {
    let c = &model.config;
    let rows = [c.hidden, c.expert_ffn];
    let fits = |t: GgmlType| rows.iter().all(|&r| r % t.block_len() == 0);
    if !fits(opts.baseline) {
        return Err(Error::InvalidArgument(format!(
            "the baseline {} does not fit expert rows of {} and {} elements",
            opts.baseline, c.hidden, c.expert_ffn
        )));
    }
    let bytes_per_elem = |t: GgmlType| t.block_bytes() as f64 / t.block_len() as f64;
    let base = bytes_per_elem(opts.baseline);
    let mut notes = Vec::new();
    let select = |list: &[GgmlType], notes: &mut Vec<String>| {
        let mut out = vec![opts.baseline];
        for &t in list {
            if out.contains(&t) {
                continue;
            }
            if !fits(t) {
                notes.push(format!(
                    "{t} skipped: expert rows of {} and {} elements are not whole {t} blocks of {}",
                    c.hidden,
                    c.expert_ffn,
                    t.block_len()
                ));
            } else if bytes_per_elem(t) >= base {
                notes.push(format!(
                    "{t} skipped: not smaller than the baseline {}",
                    opts.baseline
                ));
            } else {
                out.push(t);
            }
        }
        out.sort_by(|a, b| bytes_per_elem(*b).total_cmp(&bytes_per_elem(*a)));
        out
    };
    let mut types = select(&opts.candidates, &mut notes);
    if types.len() < 2 && opts.candidates == DEFAULT_CANDIDATES {
        notes.push(format!(
            "no K-quant fits; using the 32-element block types {} instead",
            BLOCK32_CANDIDATES.map(|t| t.name()).join(", ")
        ));
        types = select(&BLOCK32_CANDIDATES, &mut Vec::new());
    }
    if types.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "no candidate type below the baseline fits this model ({})",
            notes.join("; ")
        )));
    }
    Ok((types, notes))
}
