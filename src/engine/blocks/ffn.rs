//! Expert FFNs: a routed expert over the tokens gathered for it, and the shared expert.

use super::scratch::{grow, Scratch};
use super::FFN_GROUP;
use crate::engine::arch::FfnKind;
use crate::engine::config::ModelConfig;
use crate::engine::weights::SharedExpert;
use crate::expert::ExpertView;
use crate::tensor::ops::{self, matmat, MatrixRef};

/// One FFN's three matrices.
struct Ffn<'a> {
    gate: MatrixRef<'a>,
    up: MatrixRef<'a>,
    down: MatrixRef<'a>,
    width: usize,
}

/// Runs the FFN on `g` rows of `inputs` (`g x hidden`), writing the results over the inputs.
fn run(kind: FfnKind, f: &Ffn<'_>, inputs: &mut [f32], g: usize, s: &mut Scratch) {
    let a = grow(&mut s.ffn_a, g * f.width);
    let b = grow(&mut s.ffn_b, g * f.width);
    matmat(f.gate, inputs, g, a, &mut s.matvec);
    matmat(f.up, inputs, g, b, &mut s.matvec);
    match kind {
        FfnKind::SwiGlu => ops::swiglu(a, b, &s.matvec),
    }
    matmat(f.down, a, g, inputs, &mut s.matvec);
}

/// Runs expert `view` on every `(token, slot)` of `s.assigned` (inputs: the normalised
/// hidden states in `s.h`), writing each output to `s.expert_out` at `(token * k + slot)`.
pub(crate) fn routed_expert(c: &ModelConfig, view: &ExpertView<'_>, s: &mut Scratch) {
    let (h, k) = (c.hidden, c.n_experts_used);
    let ffn = Ffn {
        gate: view.gate,
        up: view.up,
        down: view.down,
        width: c.expert_ffn,
    };
    let assigned = std::mem::take(&mut s.assigned);
    for part in assigned.chunks(FFN_GROUP) {
        let g = part.len();
        let mut inputs = std::mem::take(&mut s.gathered);
        let rows = grow(&mut inputs, g * h);
        for (dst, &(t, _)) in rows.chunks_exact_mut(h).zip(part) {
            dst.copy_from_slice(&s.h[t * h..(t + 1) * h]);
        }
        // The gathered inputs are not needed after the down projection: it writes over them.
        run(c.family.ffn, &ffn, rows, g, s);
        for (out, &(t, slot)) in rows.chunks_exact(h).zip(part) {
            s.expert_out[(t * k + slot) * h..(t * k + slot + 1) * h].copy_from_slice(out);
        }
        s.gathered = inputs;
    }
    s.assigned = assigned;
}

/// Adds the shared expert, scaled by its sigmoid gate, to every token of `x` (inputs: the
/// normalised hidden states in `s.h`).
pub(crate) fn shared_expert(
    c: &ModelConfig,
    sh: &SharedExpert,
    x: &mut [f32],
    n: usize,
    s: &mut Scratch,
) {
    let h = c.hidden;
    let ffn = Ffn {
        gate: sh.gate.as_ref(),
        up: sh.up.as_ref(),
        down: sh.down.as_ref(),
        width: c.shared_ffn,
    };
    for t0 in (0..n).step_by(FFN_GROUP) {
        let g = FFN_GROUP.min(n - t0);
        let mut out = std::mem::take(&mut s.proj);
        let rows = grow(&mut out, g * h);
        rows.copy_from_slice(&s.h[t0 * h..(t0 + g) * h]);
        run(c.family.ffn, &ffn, rows, g, s);
        let gates = grow(&mut s.router, g);
        matmat(
            sh.gate_inp.as_ref(),
            &s.h[t0 * h..(t0 + g) * h],
            g,
            gates,
            &mut s.matvec,
        );
        for (i, xt) in x[t0 * h..(t0 + g) * h].chunks_exact_mut(h).enumerate() {
            ops::axpy(ops::sigmoid(gates[i]), &rows[i * h..(i + 1) * h], xt);
        }
        s.proj = out;
    }
}
