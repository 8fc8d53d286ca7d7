//! Held-out checks: assignments measured on held-out text against the baseline, the uniform
//! types, and the search for the most moves each tolerance allows.

#![forbid(unsafe_code)]

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::search::{self, Move};
use super::trial::{ExpertVariants, TrialExperts};
use super::{stage, CalibrateOptions, Point, Tolerance};
use crate::convert::expert_types::ExpertTypes;
use crate::engine::divergence::{Divergence, ReferenceDistributions};
use crate::engine::Model;
use crate::Result;

/// Evaluates assignments on the held-out text against the baseline.
pub(super) struct HeldOut<'a> {
    trial: &'a Arc<TrialExperts>,
    model: &'a Arc<Model>,
    reference: ReferenceDistributions,
    variants: &'a ExpertVariants,
    frequency: &'a [f64],
}

impl<'a> HeldOut<'a> {
    /// Computes the baseline's distributions on the `heldout` tokens.
    pub(super) fn new(
        trial: &'a Arc<TrialExperts>,
        model: &'a Arc<Model>,
        heldout: &[u32],
        variants: &'a ExpertVariants,
        frequency: &'a [f64],
        opts: &CalibrateOptions,
    ) -> Result<Self> {
        let ctx = opts.ctx;
        let mut b = stage(opts, 1, "baseline on held-out text");
        trial.set(&vec![0; frequency.len()])?;
        let reference = ReferenceDistributions::compute(model, heldout, ctx, ctx, &mut |d, t| {
            b.set(d as u64, t as u64)
        })?;
        b.finish();
        Ok(HeldOut {
            trial,
            model,
            reference,
            variants,
            frequency,
        })
    }

    /// The held-out figures of `assignment` (candidate index per expert), named `label`.
    pub(super) fn measure(&self, label: String, assignment: &[usize]) -> Result<Point> {
        self.trial.set(assignment)?;
        let d: Divergence = self.reference.compare(self.model, &mut |_, _| {})?;
        let mut bytes = 0u64;
        let mut reads = 0f64;
        for (e, &t) in assignment.iter().enumerate() {
            let b = self.variants.bytes(e, t);
            bytes += b;
            reads += self.frequency[e] * b as f64;
        }
        Ok(Point {
            label,
            expert_bytes: bytes,
            reads_per_token: reads,
            perplexity: d.model.perplexity,
            perplexity_std_error: d.model.perplexity_std_error,
            kl: d.kl,
            kl_std_error: d.kl_std_error,
            nll_change_std_error: d.nll_change_std_error,
            top1_agreement: d.top1_agreement,
        })
    }

    /// Every expert at one type, for each candidate: `baseline` (measured), then the others.
    pub(super) fn uniform(&self, baseline: &Point, opts: &CalibrateOptions) -> Result<Vec<Point>> {
        let types = &self.variants.types;
        let n = self.frequency.len();
        let mut b = stage(opts, types.len() - 1, "uniform types");
        let mut uniform = vec![baseline.clone()];
        for (t, ty) in types.iter().enumerate().skip(1) {
            uniform.push(self.measure(format!("uniform {ty}"), &vec![t; n])?);
            b.advance(1);
        }
        b.finish();
        Ok(uniform)
    }

    /// The most `moves` each tolerance allows: the requested one and the sweep's, then the
    /// held-out KL of each cheaper `uniform` type (the bytes adaptation saves at equal
    /// quality). `note` says how the tables were calibrated.
    pub(super) fn search(
        &self,
        moves: &[Move],
        baseline: &Point,
        uniform: &[Point],
        note: &str,
        opts: &CalibrateOptions,
    ) -> Result<Found> {
        let mut requested = vec![opts.tolerance];
        requested.extend(opts.sweep.iter().map(|&x| Tolerance::PplIncrease(x)));
        let checks = requested.len() + uniform.len() - 1;
        let mut b = stage(opts, checks, "search (held-out checks)");
        let mut s = Search {
            held: self,
            moves,
            baseline,
            memo: BTreeMap::from([(0, baseline.clone())]),
        };
        let table = |a: &[usize], tol: Tolerance| {
            to_table(self.variants, a, tol.to_string(), note.to_string())
        };
        let mut found = Found::default();
        for tol in requested {
            let (mut p, a) = s.largest_within(tol, opts.margin)?;
            b.advance(1);
            p.label = format!("adapted, {tol}");
            found.adapted_types.push(table(&a, tol));
            found.adapted.push(p);
        }
        for u in uniform.iter().skip(1) {
            // The equal-KL comparisons match a measured KL exactly: no margin there.
            let tol = Tolerance::Kl(u.kl);
            let (mut p, a) = s.largest_within(tol, 0.0)?;
            b.advance(1);
            p.label = format!("adapted, KL <= {}", u.label);
            found.kl_matched_types.push(table(&a, tol));
            found.kl_matched.push((u.clone(), p));
        }
        b.finish();
        found.trace = s.memo;
        Ok(found)
    }
}

/// What the search found (see the fields of the same names in [`super::Calibration`]).
#[derive(Default)]
pub(super) struct Found {
    pub adapted: Vec<Point>,
    pub adapted_types: Vec<ExpertTypes>,
    pub kl_matched: Vec<(Point, Point)>,
    pub kl_matched_types: Vec<ExpertTypes>,
    /// Every held-out evaluation, by number of moves.
    pub trace: BTreeMap<usize, Point>,
}

/// The binary search over the number of moves, remembering every evaluation.
struct Search<'h, 'a> {
    held: &'h HeldOut<'a>,
    moves: &'h [Move],
    baseline: &'h Point,
    memo: BTreeMap<usize, Point>,
}

impl Search<'_, '_> {
    /// The point after the most moves that keeps to `tol` (with `margin`), and its assignment.
    fn largest_within(&mut self, tol: Tolerance, margin: f64) -> Result<(Point, Vec<usize>)> {
        let n = self.held.frequency.len();
        let (held, moves, baseline, memo) = (self.held, self.moves, self.baseline, &mut self.memo);
        let k = search::largest_ok(moves.len(), &mut |k| {
            if let Entry::Vacant(slot) = memo.entry(k) {
                let a = search::assignment_after(n, moves, k);
                slot.insert(held.measure(format!("{k} moves"), &a)?);
            }
            Ok(within(tol, &memo[&k], baseline, margin))
        })?;
        Ok((memo[&k].clone(), search::assignment_after(n, moves, k)))
    }
}

/// Whether `p` keeps to `t`, with `margin` standard errors of the measured change to spare
/// (0: the measured change itself).
pub(super) fn within(t: Tolerance, p: &Point, base: &Point, margin: f64) -> bool {
    if margin == 0.0 {
        return match t {
            Tolerance::PplIncrease(x) => p.perplexity <= base.perplexity * (1.0 + x),
            Tolerance::Kl(x) => p.kl <= x,
        };
    }
    match t {
        Tolerance::PplIncrease(x) => {
            (p.perplexity / base.perplexity).ln() + margin * p.nll_change_std_error
                <= (1.0 + x).ln()
        }
        Tolerance::Kl(x) => p.kl + margin * p.kl_std_error <= x,
    }
}

/// An assignment as a type table.
fn to_table(
    variants: &ExpertVariants,
    assignment: &[usize],
    tolerance: String,
    calibration: String,
) -> ExpertTypes {
    ExpertTypes {
        layers: assignment
            .chunks(variants.n_experts)
            .map(|l| l.iter().map(|&t| variants.types[t]).collect())
            .collect(),
        tolerance: Some(tolerance),
        calibration: Some(calibration),
    }
}
