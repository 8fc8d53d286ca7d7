//! Profiling for EdgeMoE's statistics predictor: run calibration text through a model and
//! count which experts follow which ([`ExpertStats`]). Tooling, not on the inference path.

use std::collections::HashMap;

use super::blocks::router::{Routing, RoutingObserver};
use super::model::Model;
use super::predictor::ExpertStats;
use super::session::Session;
use crate::{Error, Result};

/// Collects each token's routing through every layer and counts it into an [`ExpertStats`].
struct Profiler {
    stats: std::sync::Arc<std::sync::Mutex<ExpertStats>>,
    pending: HashMap<usize, Vec<Vec<usize>>>,
    error: std::sync::Arc<std::sync::Mutex<Option<Error>>>,
}

impl RoutingObserver for Profiler {
    fn observe(&mut self, layer: usize, position: usize, routing: &Routing) {
        let Ok(mut stats) = self.stats.lock() else {
            return;
        };
        let n_layers = stats.n_layers();
        let layers = self
            .pending
            .entry(position)
            .or_insert_with(|| vec![Vec::new(); n_layers]);
        if let Some(slot) = layers.get_mut(layer) {
            slot.clone_from(&routing.experts);
        }
        if layer + 1 == n_layers {
            if let Some(layers) = self.pending.remove(&position) {
                if let Err(e) = stats.observe(&layers) {
                    if let Ok(mut slot) = self.error.lock() {
                        slot.get_or_insert(e);
                    }
                }
            }
        }
    }
}

/// Runs `ids` through `model` in windows of `ctx` tokens (each from an empty cache) and counts
/// which experts follow which ([`ExpertStats`]). `progress(done, total)` is called after each
/// window.
pub fn profile(
    model: &std::sync::Arc<Model>,
    ids: &[u32],
    ctx: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ExpertStats> {
    if ctx == 0 || ids.is_empty() {
        return Err(Error::InvalidArgument(
            "profiling needs some tokens and a window of at least 1".into(),
        ));
    }
    let c = &model.config;
    let stats = std::sync::Arc::new(std::sync::Mutex::new(ExpertStats::new(
        c.n_layers,
        c.n_experts,
        c.n_experts_used,
    )));
    let error = std::sync::Arc::new(std::sync::Mutex::new(None));
    let mut session = Session::new(model.clone(), Some(ctx))?;
    session.set_observer(Some(Box::new(Profiler {
        stats: stats.clone(),
        pending: HashMap::new(),
        error: error.clone(),
    })));
    let windows: Vec<&[u32]> = ids.chunks(ctx).collect();
    for (i, w) in windows.iter().enumerate() {
        session.reset();
        session.eval(w, false)?;
        progress(i + 1, windows.len());
    }
    session.set_observer(None);
    if let Some(e) = error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    let table = stats
        .lock()
        .map(|s| s.clone())
        .map_err(|_| Error::InvalidArgument("profiler state poisoned".into()))?;
    Ok(table)
}
