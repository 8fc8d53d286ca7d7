//! The bitwidth search, free of any model: order the moves "expert e down to a cheaper type"
//! greedily by bytes saved per unit of sensitivity, then binary-search how many of them the
//! held-out tolerance allows (EdgeMoE moves the least important experts down and searches
//! the count; the greedy order generalises that to several steps per expert).

#![forbid(unsafe_code)]

/// One step of the greedy order: `expert` goes to candidate type `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    pub expert: usize,
    pub to: usize,
}

/// The greedy order of moves. `gain[e][j]` is what serving expert `e` at candidate `j` saves
/// (0 at `j = 0`, increasing with `j`); `cost[e][j]` its measured sensitivity (0 at `j = 0`).
/// Costs are made non-decreasing in `j` first (a cheaper type never counts as less damaging
/// than a dearer one; measured noise can say otherwise). Each move takes the expert to the
/// level with the best saving per unit of added cost from where it is, so an expert may skip
/// levels that are not worth stopping at.
pub fn greedy_order(gain: &[Vec<f64>], cost: &[Vec<f64>]) -> Vec<Move> {
    let cost: Vec<Vec<f64>> = cost
        .iter()
        .map(|c| {
            let mut m = 0f64;
            c.iter()
                .map(|&x| {
                    m = m.max(x.max(0.0));
                    m
                })
                .collect()
        })
        .collect();
    let mut level = vec![0usize; gain.len()];
    let mut moves = Vec::new();
    // Tiny floor on added cost, so free moves rank by their saving.
    const EPS: f64 = 1e-15;
    loop {
        let mut best: Option<(f64, f64, Move)> = None;
        for (e, g) in gain.iter().enumerate() {
            let from = level[e];
            for to in from + 1..g.len() {
                let saved = g[to] - g[from];
                if saved <= 0.0 {
                    continue;
                }
                let ratio = saved / (cost[e][to] - cost[e][from] + EPS);
                let better = match best {
                    None => true,
                    Some((r, s, _)) => ratio > r || (ratio == r && saved > s),
                };
                if better {
                    best = Some((ratio, saved, Move { expert: e, to }));
                }
            }
        }
        let Some((_, _, m)) = best else {
            break;
        };
        level[m.expert] = m.to;
        moves.push(m);
    }
    moves
}

/// The assignment (candidate index per expert) after the first `k` moves.
pub fn assignment_after(n_experts: usize, moves: &[Move], k: usize) -> Vec<usize> {
    let mut a = vec![0usize; n_experts];
    for m in &moves[..k.min(moves.len())] {
        a[m.expert] = m.to;
    }
    a
}

/// The largest `k` in `0..=n` with `ok(k)`, assuming `ok(0)` and that `ok` holds up to some
/// point and fails after it (binary search; about log2(n) calls).
pub fn largest_ok(
    n: usize,
    ok: &mut dyn FnMut(usize) -> crate::Result<bool>,
) -> crate::Result<usize> {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if ok(mid)? {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// Ranks (1-based, ties share their average rank).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0f64; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman's rank correlation of two equally long series (NaN below 2 values or when one
/// series is constant).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.len() < 2 {
        return f64::NAN;
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let mean = (n + 1.0) / 2.0;
    let (mut cov, mut va, mut vb) = (0f64, 0f64, 0f64);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - mean) * (y - mean);
        va += (x - mean).powi(2);
        vb += (y - mean).powi(2);
    }
    cov / (va * vb).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cheap_insensitive_experts_move_first() {
        // Expert 0 is insensitive, expert 1 sensitive; both save the same bytes.
        let gain = vec![vec![0.0, 10.0, 16.0], vec![0.0, 10.0, 16.0]];
        let cost = vec![vec![0.0, 0.1, 0.2], vec![0.0, 5.0, 9.0]];
        let moves = greedy_order(&gain, &cost);
        assert_eq!(moves[0].expert, 0);
        assert_eq!(moves.last().unwrap().expert, 1);
        let a = assignment_after(2, &moves, moves.len());
        assert_eq!(a, vec![2, 2]);
        assert_eq!(assignment_after(2, &moves, 0), vec![0, 0]);
    }

    #[test]
    fn noisy_costs_are_made_monotone() {
        // A lower level measured as less damaging than a higher one counts as equally bad.
        let gain = vec![vec![0.0, 10.0, 16.0]];
        let cost = vec![vec![0.0, 1.0, 0.5]];
        let moves = greedy_order(&gain, &cost);
        // Straight to level 2: same cost as level 1, more saved.
        assert_eq!(moves, vec![Move { expert: 0, to: 2 }]);
    }

    #[test]
    fn binary_search_finds_the_last_passing_count() {
        for limit in 0..=20 {
            let mut calls = 0;
            let k = largest_ok(20, &mut |k| {
                calls += 1;
                Ok(k <= limit)
            })
            .unwrap();
            assert_eq!(k, limit);
            assert!(calls <= 5);
        }
    }

    #[test]
    fn spearman_of_monotone_and_reversed_series() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 25.0, 100.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert!(spearman(&a, &[1.0, 1.0, 1.0, 1.0]).is_nan());
    }
}
