//! `convert --expert-types`: each expert at its own type, the table in `edgemoe.bitwidth.*`,
//! and rows that cannot take a type fall back visibly.

mod common;

use common::*;
use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::convert::{convert_with_expert_types, ConvertOptions};
use edgemoe::engine::Model;
use edgemoe::format::GgufFile;
use edgemoe::tensor::GgmlType;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemoe-types-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn per_expert_types_are_written_and_recorded() {
    // Mixtral fixture: 2 layers x 8 experts, rows of 64 elements (block-32 types fit, K-quants
    // do not).
    let input = fixture("mixtral").join("stock-f32.gguf");
    let cycle = [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_1,
        GgmlType::Q4K,
    ];
    let table = ExpertTypes {
        layers: (0..2)
            .map(|l| (0..8).map(|e| cycle[(l + e) % 4]).collect())
            .collect(),
        tolerance: Some("test".into()),
        calibration: Some("none".into()),
    };
    let out = tmp("mixed.gguf");
    let opts = ConvertOptions {
        progress: None,
        ..Default::default()
    };
    let report = convert_with_expert_types(&input, &out, &opts, &table).unwrap();
    // The K-quant experts fell back to f16, and the report says so: 4 experts x 3 matrices.
    assert_eq!(report.fallbacks.len(), 12);
    assert!(report
        .fallbacks
        .iter()
        .all(|f| f.wanted == GgmlType::Q4K && f.written == GgmlType::F16 && f.row_len == 64));
    let model = Model::load(&out).unwrap();
    for l in 0..2 {
        for e in 0..8 {
            let loc = model.directory.get(l, e).unwrap();
            let want = match table.layers[l][e] {
                GgmlType::Q4K => GgmlType::F16,
                t => t,
            };
            assert_eq!([loc.gate.ty, loc.up.ty, loc.down.ty], [want; 3], "{l}.{e}");
        }
    }
    let file = GgufFile::open(&out).unwrap();
    let stored = ExpertTypes::from_gguf(&file.header, &out).unwrap().unwrap();
    assert_eq!(stored, table);
    // A table of the wrong shape is refused.
    let short = ExpertTypes::uniform(1, 8, GgmlType::Q8_0);
    assert!(convert_with_expert_types(&input, &tmp("bad.gguf"), &opts, &short).is_err());
    let _ = std::fs::remove_dir_all(out.parent().unwrap());
}
