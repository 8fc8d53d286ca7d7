//! Shared helpers for integration tests: fixture paths and the transformers reference.
#![allow(dead_code)]

use serde::Deserialize;
use std::path::PathBuf;

pub const FAMILIES: [&str; 4] = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];

pub fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
}

#[derive(Deserialize)]
pub struct Prompt {
    pub text: String,
    pub ids: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
    pub greedy: Vec<u32>,
    pub greedy_text: String,
    pub router: Vec<Vec<Vec<usize>>>,
    pub router_weights: Vec<Vec<Vec<f32>>>,
    pub router_logits: Vec<Vec<Vec<f32>>>,
}

#[derive(Deserialize)]
pub struct Reference {
    pub family: String,
    pub prompts: Vec<Prompt>,
}

pub fn reference(family: &str) -> Reference {
    let text = std::fs::read_to_string(fixture(family).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding of `n` tokens after the demo prompt "ROMEO:" in `session` (a fresh one),
/// calling `between(i)` after the i-th token is chosen; ties go to the lower token id.
pub fn greedy_after_romeo(
    model: &std::sync::Arc<edgemoe::engine::Model>,
    session: &mut edgemoe::engine::Session,
    n: usize,
    mut between: impl FnMut(usize),
) -> Vec<u32> {
    let ids = model.tokenizer().unwrap().encode("ROMEO:", true).unwrap();
    let mut logits = session.eval(&ids, false).unwrap().to_vec();
    let mut out = Vec::new();
    for i in 0..n {
        let next = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .unwrap()
            .0 as u32;
        out.push(next);
        between(i);
        logits = session.eval(&[next], false).unwrap().to_vec();
    }
    out
}
