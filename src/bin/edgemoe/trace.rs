//! `edgemoe trace`: record which experts a generation uses, layer by layer, for `replay`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use clap::Args;
use edgemoe::engine::generate::generate;
use edgemoe::engine::{Routing, RoutingObserver, Session};

use crate::generate::GenerateArgs;

#[derive(Args)]
pub struct TraceArgs {
    #[command(flatten)]
    gen: GenerateArgs,
    /// Where to write the trace.
    #[arg(short, long)]
    output: PathBuf,
}

/// A recorded routing trace: every expert fetch in order, as the forward pass makes them.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct TraceFile {
    pub model: String,
    pub n_layers: usize,
    pub n_experts: usize,
    pub n_experts_used: usize,
    /// Per token and layer, the chosen experts (router order).
    pub tokens: Vec<Vec<Vec<usize>>>,
    /// Per token and layer, the experts the predictor named before the layer before ran (what
    /// the engine knows while that layer fetches its experts); empty when none.
    #[serde(default)]
    pub predicted: Vec<Vec<Vec<usize>>>,
    /// Per token and layer, experts the router look-ahead added once the layer before had run
    /// (known from the end of that layer on).
    #[serde(default)]
    pub refined: Vec<Vec<Vec<usize>>>,
    /// The predictor that made `predicted`.
    #[serde(default)]
    pub predictor: String,
}

/// Per token: chosen, predicted and refined experts per layer.
type Recorded = [Vec<Vec<usize>>; 3];

/// Collects routing decisions and predictions into per-token, per-layer lists.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<BTreeMap<usize, Recorded>>>);

impl Recorder {
    fn put(&self, which: usize, layer: usize, position: usize, experts: &[usize]) {
        if let Ok(mut map) = self.0.lock() {
            let layers = &mut map.entry(position).or_default()[which];
            if layers.len() <= layer {
                layers.resize(layer + 1, Vec::new());
            }
            // Later predictions of a layer (depth > 1, refinement) add to what is known.
            for &e in experts {
                if !layers[layer].contains(&e) {
                    layers[layer].push(e);
                }
            }
        }
    }

    /// Lists `which` (0 chosen, 1 predicted, 2 refined) of every token, `n_layers` each.
    fn take(&self, which: usize, n_layers: usize) -> Vec<Vec<Vec<usize>>> {
        self.0
            .lock()
            .map(|m| {
                m.values()
                    .map(|r| {
                        let mut v = r[which].clone();
                        v.resize(n_layers, Vec::new());
                        v
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The experts already predicted for `layer` at `position`.
    fn predicted(&self, layer: usize, position: usize) -> Vec<usize> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(&position).map(|r| r[1][layer].clone()))
            .unwrap_or_default()
    }
}

impl RoutingObserver for Recorder {
    fn observe(&mut self, layer: usize, position: usize, routing: &Routing) {
        self.put(0, layer, position, &routing.experts);
    }

    fn observe_prediction(&mut self, layer: usize, position: usize, experts: &[usize]) {
        // The first prediction of a layer is made before the layer before runs; a second
        // (the look-ahead's refinement) after it.
        let first = self
            .0
            .lock()
            .map(|m| {
                m.get(&position)
                    .and_then(|r| r[1].get(layer))
                    .map_or(true, Vec::is_empty)
            })
            .unwrap_or(true);
        if first {
            self.put(1, layer, position, experts);
        } else {
            let known = self.predicted(layer, position);
            let extra: Vec<usize> = experts
                .iter()
                .copied()
                .filter(|e| !known.contains(e))
                .collect();
            self.put(2, layer, position, &extra);
        }
    }
}

pub fn run(mut a: TraceArgs) -> edgemoe::Result<()> {
    let ctx = a.gen.context_length();
    a.gen.model.context_length = Some(ctx);
    let model = Arc::new(a.gen.model.load()?);
    let mut session = Session::new(model.clone(), Some(ctx))?;
    let recorder = Recorder::default();
    session.set_observer(Some(Box::new(recorder.clone())));
    let params = a.gen.params();
    generate(
        &mut session,
        model.tokenizer()?,
        &a.gen.prompt,
        &params,
        &mut |_| true,
    )?;
    session.set_observer(None);
    let c = &model.config;
    let trace = TraceFile {
        model: model.path.display().to_string(),
        n_layers: c.n_layers,
        n_experts: c.n_experts,
        n_experts_used: c.n_experts_used,
        tokens: recorder.take(0, c.n_layers),
        predicted: recorder.take(1, c.n_layers),
        refined: recorder.take(2, c.n_layers),
        predictor: session.prediction().predictor.name().to_string(),
    };
    let json = serde_json::to_string(&trace)
        .map_err(|e| edgemoe::Error::InvalidArgument(e.to_string()))?;
    std::fs::write(&a.output, json).map_err(|e| edgemoe::Error::io(&a.output, e))?;
    eprintln!(
        "wrote {} ({} tokens x {} layers)",
        a.output.display(),
        trace.tokens.len(),
        c.n_layers
    );
    Ok(())
}
