//! `calibrate` on a tiny fixture: the in-memory trials are what a converted file computes,
//! the chosen assignment keeps to the tolerance, and the tolerance moves the result.

mod common;

use common::*;
use edgemoe::convert::calibrate::{calibrate, CalibrateOptions, Tolerance};
use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::convert::{convert_with_expert_types, ConvertOptions};
use edgemoe::engine::perplexity::perplexity;
use edgemoe::engine::Model;
use edgemoe::tensor::GgmlType;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemoe-cal-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn ppl_of_file(input: &Path, table: &ExpertTypes, name: &str, ids: &[u32]) -> f64 {
    let out = tmp(name);
    let opts = ConvertOptions {
        progress: None,
        ..Default::default()
    };
    let report = convert_with_expert_types(input, &out, &opts, table).unwrap();
    assert!(report.fallbacks.is_empty());
    let model = Arc::new(Model::load(&out).unwrap());
    perplexity(&model, ids, 64, 64, &mut |_, _| {})
        .unwrap()
        .perplexity
}

#[test]
fn calibration_trials_match_converted_files() {
    let input = fixture("mixtral").join("stock-f32.gguf");
    let model = Arc::new(Model::load(&input).unwrap());
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shakespeare-2k.txt"),
    )
    .unwrap();
    let ids = model.tokenizer().unwrap().encode(&text, false).unwrap();
    let (calib, heldout) = (&ids[..512], &ids[512..1024]);
    let opts = CalibrateOptions {
        tolerance: Tolerance::PplIncrease(0.01),
        sweep: vec![1.0],
        ctx: 64,
        progress: None,
        ..Default::default()
    };
    let cal = calibrate(&model, calib, heldout, &opts).unwrap();
    // Rows of 64 elements: no K-quant fits, the 32-element block types are used.
    assert_eq!(cal.types, ["q8_0", "q5_1", "q5_0", "q4_1", "q4_0"]);
    assert!(!cal.notes.is_empty());
    assert_eq!(cal.experts.len(), 16);
    // Within tolerance on the held-out text, and no larger than the baseline.
    let chosen = &cal.adapted[0];
    assert!(chosen.perplexity <= cal.baseline.perplexity * 1.01);
    assert!(chosen.expert_bytes <= cal.baseline.expert_bytes);
    // A 100% tolerance lets at least as much go as 1%.
    assert!(cal.adapted[1].expert_bytes <= chosen.expert_bytes);
    // The report compares with the best uniform type within the requested tolerance, of
    // whichever kind it is.
    let best = cal.best_uniform_within(cal.requested).unwrap();
    assert!(best.perplexity <= cal.baseline.perplexity * 1.01);
    let kl_budget = cal.uniform[2].kl;
    let best_kl = cal.best_uniform_within(Tolerance::Kl(kl_budget)).unwrap();
    assert!(best_kl.kl <= kl_budget && best_kl.expert_bytes <= cal.uniform[2].expert_bytes);
    assert!(cal.markdown().contains("best uniform type within it"));
    // A margin of two standard errors of the paired NLL change: the choice keeps it to spare,
    // so it is never cheaper than the choice without one; the equal-KL rows take no margin.
    let strict = calibrate(
        &model,
        calib,
        heldout,
        &CalibrateOptions {
            margin: 2.0,
            ..opts.clone()
        },
    )
    .unwrap();
    let picked = &strict.adapted[0];
    assert!(picked.nll_change_std_error > 0.0 || picked.expert_bytes == cal.baseline.expert_bytes);
    assert!(
        (picked.perplexity / strict.baseline.perplexity).ln() + 2.0 * picked.nll_change_std_error
            <= 1.01f64.ln()
    );
    assert!(picked.expert_bytes >= chosen.expert_bytes);
    let bytes = |c: &edgemoe::convert::calibrate::Calibration| -> Vec<u64> {
        c.kl_matched.iter().map(|(_, p)| p.expert_bytes).collect()
    };
    assert_eq!(bytes(&strict), bytes(&cal));
    assert!(strict
        .markdown()
        .contains("standard errors of the measured change to spare"));
    // In-memory trials compute what the converted files compute.
    let base = ExpertTypes::uniform(2, 8, GgmlType::Q8_0);
    let base_ppl = ppl_of_file(&input, &base, "base.gguf", heldout);
    assert!((base_ppl / cal.baseline.perplexity - 1.0).abs() < 1e-9);
    let adapted_ppl = ppl_of_file(&input, &cal.chosen, "adapted.gguf", heldout);
    assert!((adapted_ppl / chosen.perplexity - 1.0).abs() < 1e-9);
    let _ = std::fs::remove_dir_all(tmp("x").parent().unwrap());
}
