//! Records a model's routing (and its router look-ahead's predictions) over a text, one token
//! per forward pass as in decoding, in the compact format of
//! [`edgemoe::stream::cache::ReplayTrace`]. Writes the cache-policy fixtures in
//! `tests/fixtures/traces/`:
//!
//! ```sh
//! cargo run --release --example record_routing -- models/demo.gguf out.trace --tokens 300
//! cargo run --release --example random_model -- /tmp/r16.gguf --hidden 256 --ffn 512 --layers 16
//! cargo run --release --example record_routing -- /tmp/r16.gguf out.trace --tokens 300
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use edgemoe::engine::{Model, PredictionOptions, PredictorKind, Routing, RoutingObserver, Session};
use edgemoe::stream::cache::{ReplayTrace, TraceLayer};

/// Per position, per layer: used, predicted, refined.
type Log = BTreeMap<usize, Vec<TraceLayer>>;

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Log>>);

impl Recorder {
    fn layer<R>(&self, layer: usize, position: usize, f: impl FnOnce(&mut TraceLayer) -> R) -> R {
        let mut log = self.0.lock().expect("recorder lock");
        let layers = log.entry(position).or_default();
        if layers.len() <= layer {
            layers.resize(layer + 1, TraceLayer::default());
        }
        f(&mut layers[layer])
    }
}

impl RoutingObserver for Recorder {
    fn observe(&mut self, layer: usize, position: usize, routing: &Routing) {
        self.layer(layer, position, |l| l.used = routing.experts.clone());
    }

    fn observe_prediction(&mut self, layer: usize, position: usize, experts: &[usize]) {
        // The first prediction of a layer is made before the layer before runs; a second
        // (the look-ahead's refinement) after it, and adds what the first missed.
        self.layer(layer, position, |l| {
            if l.predicted.is_empty() {
                l.predicted = experts.to_vec();
            } else {
                for &e in experts {
                    if !l.predicted.contains(&e) && !l.refined.contains(&e) {
                        l.refined.push(e);
                    }
                }
            }
        });
    }
}

fn main() -> edgemoe::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args().skip(1);
    let usage = || {
        edgemoe::Error::InvalidArgument(
            "usage: record_routing MODEL.gguf OUT.trace [--tokens N] [--text FILE]".into(),
        )
    };
    let model_path = PathBuf::from(args.next().ok_or_else(usage)?);
    let out = PathBuf::from(args.next().ok_or_else(usage)?);
    let mut tokens = 300usize;
    let mut text_path = root.join("tests/fixtures/shakespeare-2k.txt");
    while let Some(a) = args.next() {
        let value = args.next().ok_or_else(usage)?;
        match a.as_str() {
            "--tokens" => tokens = value.parse().map_err(|_| usage())?,
            "--text" => text_path = PathBuf::from(value),
            _ => return Err(usage()),
        }
    }
    let model = Arc::new(Model::load(&model_path)?);
    let text =
        std::fs::read_to_string(&text_path).map_err(|e| edgemoe::Error::io(&text_path, e))?;
    let ids = model.tokenizer()?.encode(&text, true)?;
    let ids = &ids[..tokens.min(ids.len())];
    let mut session = Session::new(model.clone(), Some(ids.len() + 1))?;
    session.set_prediction(PredictionOptions {
        predictor: PredictorKind::LookAhead,
        ..Default::default()
    })?;
    let recorder = Recorder::default();
    session.set_observer(Some(Box::new(recorder.clone())));
    for &id in ids {
        session.eval(&[id], false)?;
    }
    session.set_observer(None);
    let c = &model.config;
    let log = recorder.0.lock().expect("recorder lock").clone();
    let trace = ReplayTrace {
        n_layers: c.n_layers,
        n_experts: c.n_experts,
        n_used: c.n_experts_used,
        tokens: log
            .into_values()
            .map(|mut v| {
                v.resize(c.n_layers, TraceLayer::default());
                v
            })
            .collect(),
    };
    let name = model_path.file_name().unwrap_or_default().to_string_lossy();
    let comment = format!(
        "routing of {name} over the first {} tokens of {}, one token per pass;\n\
         predictions: router look-ahead, depth 1, refined (examples/record_routing.rs)",
        ids.len(),
        text_path.file_name().unwrap_or_default().to_string_lossy()
    );
    std::fs::write(&out, trace.to_text(&comment)).map_err(|e| edgemoe::Error::io(&out, e))?;
    eprintln!("wrote {} ({} tokens)", out.display(), trace.tokens.len());
    Ok(())
}
