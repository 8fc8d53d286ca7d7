//! KL divergence and top-1 agreement between a model and a reference.

mod common;

use common::*;
use edgemoe::convert::{convert, ConvertOptions};
use edgemoe::engine::divergence::{compare, ReferenceDistributions};
use edgemoe::engine::Model;
use edgemoe::tensor::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn text_ids(model: &Model) -> Vec<u32> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shakespeare-2k.txt"),
    )
    .unwrap();
    model.tokenizer().unwrap().encode(&text, false).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemoe-kl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_model_against_itself_has_zero_divergence() {
    for family in FAMILIES {
        let model = Arc::new(Model::load(&fixture(family).join("stock-f32.gguf")).unwrap());
        let ids = text_ids(&model);
        let d = compare(&model, &model, &ids, 64, 32, &mut |_, _| {}).unwrap();
        assert_eq!(d.kl, 0.0, "{family}");
        assert_eq!(d.top1_agreement, 1.0, "{family}");
        assert_eq!(d.model, d.reference);
    }
}

#[test]
fn q8_0_demo_model_is_close_to_f16() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf");
    let q8 = tmp("demo-q8_0.gguf");
    let opts = ConvertOptions {
        matrix_type: Some(GgmlType::Q8_0),
        progress: None,
        ..Default::default()
    };
    convert(&demo, &q8, &opts).unwrap();
    let reference = Arc::new(Model::load(&demo).unwrap());
    let model = Arc::new(Model::load(&q8).unwrap());
    let ids = text_ids(&reference);
    let d = compare(&model, &reference, &ids, 128, 128, &mut |_, _| {}).unwrap();
    // Measured on the held-out 10% of tinyshakespeare: KL 0.00037 nats, top-1 98.95%.
    assert!(d.kl > 0.0 && d.kl < 2e-3, "KL {}", d.kl);
    assert!(d.top1_agreement > 0.95, "top-1 {}", d.top1_agreement);
    assert!((d.model.perplexity / d.reference.perplexity - 1.0).abs() < 0.01);
    // The cached reference gives the same figures as running both models side by side.
    let cached = ReferenceDistributions::compute(&reference, &ids, 128, 128, &mut |_, _| {})
        .unwrap()
        .compare(&model, &mut |_, _| {})
        .unwrap();
    assert!((cached.kl - d.kl).abs() < 1e-9);
    assert_eq!(cached.top1_agreement, d.top1_agreement);
    assert!((cached.model.perplexity - d.model.perplexity).abs() < 1e-9);
    let _ = std::fs::remove_file(q8);
}
