//! Sliding-window perplexity matches transformers on every fixture family (the committed
//! reference of tools/fixtures/make_ppl_reference.py) to 0.1%.

mod common;

use common::*;
use edgemoe::engine::perplexity::perplexity;
use edgemoe::engine::Model;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct Setting {
    ctx: usize,
    stride: usize,
    windows: usize,
    predictions: usize,
    perplexity: f64,
}

#[derive(Deserialize)]
struct PplReference {
    ids: Vec<u32>,
    results: Vec<Setting>,
}

#[test]
fn perplexity_matches_transformers() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shakespeare-2k.txt"),
    )
    .unwrap();
    for family in FAMILIES {
        let dir = fixture(family);
        let r: PplReference =
            serde_json::from_str(&std::fs::read_to_string(dir.join("perplexity.json")).unwrap())
                .unwrap();
        let model = Arc::new(Model::load(&dir.join("stock-f32.gguf")).unwrap());
        // The engine's tokenizer gives the ids transformers scored.
        let ids = model.tokenizer().unwrap().encode(&text, false).unwrap();
        assert_eq!(ids, r.ids, "{family}: tokenization differs");
        for s in &r.results {
            let got = perplexity(&model, &r.ids, s.ctx, s.stride, &mut |_, _| {}).unwrap();
            assert_eq!(
                got.windows, s.windows,
                "{family} ctx {} stride {}",
                s.ctx, s.stride
            );
            assert_eq!(got.predictions, s.predictions);
            let rel = (got.perplexity / s.perplexity - 1.0).abs();
            assert!(
                rel < 1e-3,
                "{family} ctx {} stride {}: {} vs transformers {} ({:.2e})",
                s.ctx,
                s.stride,
                got.perplexity,
                s.perplexity,
                rel
            );
            assert!(got.perplexity_std_error > 0.0 && got.perplexity_std_error < got.perplexity);
        }
    }
}
