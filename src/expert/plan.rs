//! How experts are read into pool slots: each expert's aligned read plan, and the slot size
//! and smallest pool that follow from them (the numbers the budget plan needs).

use super::layout::{ExpertDirectory, ExpertLoc, MatrixLoc};

/// Alignment of slots, file offsets and read lengths (the largest logical block size of the
/// devices we target; O_DIRECT requires it for all three).
pub const ALIGN: u64 = 4096;

/// Rounds `x` up to a multiple of [`ALIGN`].
pub fn align_up(x: u64) -> u64 {
    x.div_ceil(ALIGN) * ALIGN
}

/// Rounds `x` down to a multiple of [`ALIGN`].
pub fn align_down(x: u64) -> u64 {
    x / ALIGN * ALIGN
}

/// The reads that bring one expert into a slot, and where its matrices land in the slot.
#[derive(Clone, Debug)]
pub struct ReadPlan {
    /// (file offset, length, offset in slot), all 4096-aligned.
    pub reads: Vec<(u64, usize, usize)>,
    /// The expert's location with offsets relative to the slot start.
    pub loc: ExpertLoc,
}

impl ReadPlan {
    /// The plan for an expert at `loc` (absolute file offsets).
    pub fn new(loc: &ExpertLoc) -> ReadPlan {
        let rel = |m: &MatrixLoc, offset: u64| MatrixLoc { offset, ..*m };
        if loc.is_packed() {
            let (start, end) = loc.span();
            let a = align_down(start);
            let b = align_up(end);
            ReadPlan {
                reads: vec![(a, (b - a) as usize, 0)],
                loc: ExpertLoc {
                    gate: rel(&loc.gate, loc.gate.offset - a),
                    up: rel(&loc.up, loc.up.offset - a),
                    down: rel(&loc.down, loc.down.offset - a),
                },
            }
        } else {
            let mut reads = Vec::with_capacity(3);
            let mut at = 0u64;
            let mut place = |m: &MatrixLoc| {
                let a = align_down(m.offset);
                let b = align_up(m.offset + m.len);
                reads.push((a, (b - a) as usize, at as usize));
                let r = rel(m, at + (m.offset - a));
                at += b - a;
                r
            };
            let (gate, up, down) = (place(&loc.gate), place(&loc.up), place(&loc.down));
            ReadPlan {
                reads,
                loc: ExpertLoc { gate, up, down },
            }
        }
    }

    /// Bytes of slot this plan fills.
    pub fn slot_bytes(&self) -> u64 {
        self.reads
            .iter()
            .map(|&(_, len, at)| (at + len) as u64)
            .max()
            .unwrap_or(0)
    }
}

/// Bytes of one pool slot for `directory`: the largest expert's aligned read plan (its
/// low-precision copies included; a slot holds either copy).
pub fn slot_bytes(directory: &ExpertDirectory) -> u64 {
    directory
        .iter()
        .chain(directory.iter_low())
        .map(|l| ReadPlan::new(l).slot_bytes())
        .max()
        .unwrap_or(ALIGN)
        .max(ALIGN)
}

/// The smallest pool that can serve the model: one slot per expert a token uses in a layer.
pub fn min_pool_bytes(directory: &ExpertDirectory) -> u64 {
    slot_bytes(directory) * directory.n_experts_used.max(1) as u64
}
