//! `convert` writes edgemoe's layout from Hugging Face checkpoints and stock GGUFs; the result
//! runs with the same logits as the source.

mod common;

use common::*;
use edgemoe::convert::{convert, ConvertOptions};
use edgemoe::engine::{Model, Session};
use edgemoe::tensor::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemoe-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn opts(ty: GgmlType) -> ConvertOptions {
    ConvertOptions {
        matrix_type: Some(ty),
        expert_types: None,
        progress: None,
        ..Default::default()
    }
}

/// Logits of every position of every reference prompt.
fn all_logits(path: &Path, family: &str) -> Vec<Vec<f32>> {
    let model = Arc::new(Model::load(path).unwrap());
    reference(family)
        .prompts
        .iter()
        .map(|p| {
            let mut s = Session::new(model.clone(), Some(64)).unwrap();
            s.eval(&p.ids, true).unwrap().to_vec()
        })
        .collect()
}

fn reference_logits(family: &str) -> Vec<Vec<f32>> {
    reference(family)
        .prompts
        .iter()
        .map(|p| p.logits.iter().flatten().copied().collect())
        .collect()
}

fn worst(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

#[test]
fn hf_checkpoint_f32_matches_transformers() {
    for family in FAMILIES {
        let out = tmp(&format!("{family}-hf-f32.gguf"));
        convert(&fixture(family).join("hf"), &out, &opts(GgmlType::F32)).unwrap();
        let model = Model::load(&out).unwrap();
        assert!(
            model.directory.iter().all(|e| e.is_packed()),
            "{family}: experts not packed"
        );
        let d = worst(&all_logits(&out, family), &reference_logits(family));
        eprintln!("{family}: converted f32 max |Δlogit| = {d:.2e}");
        assert!(d <= 1e-3, "{family}: {d}");
    }
}

#[test]
fn stock_and_packed_layouts_give_identical_logits() {
    for family in FAMILIES {
        let stock = fixture(family).join("stock-f32.gguf");
        let out = tmp(&format!("{family}-repacked.gguf"));
        convert(
            &stock,
            &out,
            &ConvertOptions {
                progress: None,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            all_logits(&stock, family),
            all_logits(&out, family),
            "{family}"
        );
    }
}

fn mean_abs(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    let (mut sum, mut n) = (0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (u, v) in x.iter().zip(y) {
            sum += (u - v).abs() as f64;
            n += 1;
        }
    }
    (sum / n as f64) as f32
}

#[test]
fn half_precision_within_tolerance() {
    // Logits of these models are O(1) (|logit| < 3.5). f16 keeps 11 significant bits: every
    // logit within 1e-2. bf16 keeps 8: a perturbed hidden state can flip a near-tied router
    // choice, which moves a few logits discontinuously, so bf16 is bounded on the mean
    // (1e-2) and loosely on the max (0.5).
    for (ty, max_tol, mean_tol) in [(GgmlType::F16, 1e-2, 1e-3), (GgmlType::BF16, 0.5, 1e-2)] {
        for family in FAMILIES {
            let out = tmp(&format!("{family}-{ty}.gguf"));
            convert(&fixture(family).join("hf"), &out, &opts(ty)).unwrap();
            let (got, want) = (all_logits(&out, family), reference_logits(family));
            let (d, m) = (worst(&got, &want), mean_abs(&got, &want));
            eprintln!("{family}: {ty} max |Δlogit| = {d:.2e}, mean {m:.2e}");
            assert!(
                d <= max_tol && m <= mean_tol,
                "{family} {ty}: max {d}, mean {m}"
            );
        }
    }
}

#[test]
fn block_quantised_types_within_tolerance() {
    // Measured on these fixtures: q8_0 weights alone (dequantised to f32) move logits by
    // 1.1e-2 on average, with 8-bit activations as ggml quantises them 3.1e-2; q4_0 about 4x
    // that (these random-weight models are far more sensitive than trained ones; the demo
    // model's perplexity is the real quality check). Router flips make the max loose, so the
    // bound is on the mean.
    for (ty, mean_tol) in [(GgmlType::Q8_0, 6e-2), (GgmlType::Q4_0, 0.5)] {
        for family in FAMILIES {
            let out = tmp(&format!("{family}-{ty}.gguf"));
            convert(&fixture(family).join("hf"), &out, &opts(ty)).unwrap();
            let model = Model::load(&out).unwrap();
            assert_eq!(model.directory.iter().next().unwrap().gate.ty, ty);
            let (got, want) = (all_logits(&out, family), reference_logits(family));
            let (d, m) = (worst(&got, &want), mean_abs(&got, &want));
            eprintln!("{family}: {ty} max |Δlogit| = {d:.2e}, mean {m:.2e}");
            assert!(m <= mean_tol, "{family} {ty}: max {d}, mean {m}");
        }
    }
}

#[test]
fn per_tensor_type_overrides() {
    // Attention at q8_0, experts at q4_k (as `convert --attn-type q8_0 --expert-type q4_k`):
    // the fixtures' rows are 64 wide, not a whole 256-element q4_k block, so the experts fall
    // back to f16 (the documented rule); a second case puts the experts at q4_0, which fits.
    use edgemoe::convert::{ATTENTION_PATTERN, EXPERT_PATTERN};
    use edgemoe::format::GgufFile;
    for (expert_ty, stored_expert_ty) in [
        (GgmlType::Q4K, GgmlType::F16),
        (GgmlType::Q4_0, GgmlType::Q4_0),
    ] {
        for family in FAMILIES {
            let out = tmp(&format!("{family}-override-{expert_ty}.gguf"));
            let opts = ConvertOptions {
                matrix_type: Some(GgmlType::F32),
                overrides: vec![
                    (ATTENTION_PATTERN.to_string(), GgmlType::Q8_0),
                    (EXPERT_PATTERN.to_string(), expert_ty),
                ],
                progress: None,
                ..Default::default()
            };
            convert(&fixture(family).join("hf"), &out, &opts).unwrap();
            let file = GgufFile::open(&out).unwrap();
            for t in &file.header.tensors {
                let want = if t.dims.len() == 1 || t.name.contains("ffn_gate_inp") {
                    GgmlType::F32
                } else if t.name.contains(".attn_") {
                    GgmlType::Q8_0
                } else if t
                    .name
                    .split('.')
                    .nth(3)
                    .is_some_and(|e| e.parse::<usize>().is_ok())
                {
                    stored_expert_ty
                } else {
                    GgmlType::F32
                };
                assert_eq!(t.ty, want, "{family} {}", t.name);
            }
            // Measured: mean |Δlogit| 1.1e-2..2.7e-2 with q8_0 attention and f16 experts,
            // 3.9e-2..2.5e-1 with q4_0 experts (random-weight fixtures are very sensitive; see
            // block_quantised_types_within_tolerance).
            let mean_tol = if expert_ty == GgmlType::Q4_0 {
                0.5
            } else {
                6e-2
            };
            let (got, want) = (all_logits(&out, family), reference_logits(family));
            let (d, m) = (worst(&got, &want), mean_abs(&got, &want));
            eprintln!("{family}: attention q8_0, experts {stored_expert_ty}: max |Δlogit| = {d:.2e}, mean {m:.2e}");
            assert!(m <= mean_tol, "{family}: max {d}, mean {m}");
        }
    }
    // A pattern that matches nothing is refused.
    let opts = ConvertOptions {
        overrides: vec![("blk.*.attn_qq*".to_string(), GgmlType::Q8_0)],
        progress: None,
        ..Default::default()
    };
    let out = tmp("override-typo.gguf");
    assert!(convert(&fixture("mixtral").join("hf"), &out, &opts).is_err());
}
