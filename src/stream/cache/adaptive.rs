//! The default eviction policy: activation counts that are fair across the cyclic layer scan,
//! ties broken by when the layer runs next, and a weight for the layers that predictions do
//! not cover.

use parking_lot::Mutex;

use super::{AccessInfo, EvictionPolicy, Key, PolicyContext};

/// Keeps the experts used most often, counted so that the layers already run in the current
/// token are not ahead by that token's use; among equal counts it evicts first the running
/// layer's experts fetched in this pass, then those of the layer that ran last, and so on
/// (the MRU end of the cyclic layer scan), so a cache smaller than one token's experts keeps
/// a fixed subset instead of thrashing as LRU does.
///
/// When the cache tells it of predictions ([`EvictionPolicy::preloaded`]), experts of the layers
/// that predictions rarely cover (with the router look-ahead, the first layer of each token,
/// which no prediction names) are worth up to `1 + boost` times as much: a miss there is a
/// demand read, elsewhere the predictor would likely have read it anyway.
///
/// The live cache must report predictions for that weight to apply; one that does not runs
/// the rule as without preloads (on the demo traces with preloads, up to 5% below the best
/// older policy at 30-60% of the experts instead of up to 9% above it).
///
/// Measured on the committed traces (`tests/cache_policy.rs`, cache sizes 10%..90% of the
/// experts): demand-only, at most 1.1% below the best older policy at any size (LFU; the
/// others fall far behind somewhere) and up to 10% above it at 10%; with the look-ahead's
/// preloads, at most 1.2% below the best older policy and up to 9% above it (the demo model
/// at 40-50%, where Forward was best).
pub struct Adaptive {
    /// Extra worth of an expert in a layer no prediction covers.
    pub boost: f64,
    preloads: Mutex<Coverage>,
}

/// Experts predictions named, per layer, and the most any layer had.
#[derive(Default)]
struct Coverage {
    per_layer: Vec<u64>,
    most: u64,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            boost: 1.0,
            preloads: Mutex::new(Coverage::default()),
        }
    }
}

impl Adaptive {
    /// `1 + boost` for a layer that predictions named less than half as many experts of as
    /// the layer they named most of, else 1 (1 for every layer while nothing was preloaded).
    /// A yes/no weight: graded by each layer's count, the noise between the covered layers
    /// cost up to 2% of the served fetches on the random traces.
    fn layer_weight(&self, layer: usize) -> f64 {
        let p = self.preloads.lock();
        let named = p.per_layer.get(layer).copied().unwrap_or(0);
        if p.most > 0 && 2 * named < p.most {
            1.0 + self.boost
        } else {
            1.0
        }
    }
}

impl EvictionPolicy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn keep_score(&self, (layer, _): Key, info: &AccessInfo, cx: &PolicyContext) -> f64 {
        let n = cx.n_layers.max(1);
        let current = cx.current_layer % n;
        // Layers before the running one have had this token's chance to be used already,
        // and so have the running layer's experts fetched in this pass (fewer accesses ago
        // than a token makes): compare counts as of the token's start.
        let this_pass = cx.now.saturating_sub(info.last) < n as u64;
        let count = if layer < current || (layer == current && this_pass) {
            info.freq.saturating_sub(1)
        } else {
            info.freq
        } as f64;
        // Next run, in layers: the running layer's experts fetched in this pass run again
        // last; its others may still be fetched now.
        let next = match cx.distance(layer) {
            0 if this_pass => n,
            d => d,
        };
        let soon = 1.0 - next as f64 / (n + 1) as f64;
        (count + soon) * self.layer_weight(layer)
    }

    fn preloaded(&self, (layer, _): Key) {
        let mut p = self.preloads.lock();
        if p.per_layer.len() <= layer {
            p.per_layer.resize(layer + 1, 0);
        }
        p.per_layer[layer] += 1;
        p.most = p.most.max(p.per_layer[layer]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(current_layer: usize) -> PolicyContext {
        PolicyContext {
            now: 100,
            current_layer,
            n_layers: 4,
            max_freq: 10,
        }
    }

    #[test]
    fn counts_are_fair_across_the_scan_and_ties_evict_the_layer_just_run() {
        let a = Adaptive::default();
        let info = |freq| AccessInfo { last: 50, freq };
        // Running layer 2: layer 1 ran this token (3 uses, one of them this token), layer 3
        // has not (2 uses): equal as of the token's start, and layer 1 runs again last.
        let behind = a.keep_score((1, 0), &info(3), &cx(2));
        let ahead = a.keep_score((3, 0), &info(2), &cx(2));
        assert!(ahead > behind, "{ahead} {behind}");
        // The running layer's expert fetched a moment ago goes before both; one it has not
        // fetched yet may be next.
        let fetched = AccessInfo { last: 99, freq: 3 };
        assert!(a.keep_score((2, 5), &fetched, &cx(2)) < behind);
        assert!(a.keep_score((2, 6), &info(2), &cx(2)) > ahead);
        // A real difference in use still wins.
        assert!(a.keep_score((1, 0), &info(5), &cx(2)) > ahead);
    }

    #[test]
    fn layers_no_prediction_covers_weigh_more_once_preloads_are_seen() {
        let a = Adaptive::default();
        let info = AccessInfo { last: 50, freq: 4 };
        let before = (
            a.keep_score((0, 0), &info, &cx(2)),
            a.keep_score((3, 0), &info, &cx(2)),
        );
        assert!(before.0 < before.1, "layer 0 runs after layer 3");
        for l in 1..4 {
            a.preloaded((l, 1));
        }
        let after = (
            a.keep_score((0, 0), &info, &cx(2)),
            a.keep_score((3, 0), &info, &cx(2)),
        );
        assert!(after.0 > after.1, "{after:?}");
        assert_eq!(after.1, before.1);
    }
}
