//! The GGUF reader parses the stock llama.cpp files of every test family.

use edgemoe::format::GgufFile;
use std::path::Path;

#[test]
fn stock_fixtures_parse() {
    for family in ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(family)
            .join("stock-f32.gguf");
        let f = GgufFile::open(&path).unwrap();
        let arch = f.get("general.architecture").unwrap().as_str().unwrap();
        assert!(f.get(&format!("{arch}.block_count")).is_some());
        assert!(f.tensor("token_embd.weight").is_some(), "{family}");
        assert!(f.tensor("blk.0.ffn_gate_exps.weight").is_some(), "{family}");
    }
}

#[test]
fn foreign_file_is_a_typed_error() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = GgufFile::open(&path).err().unwrap();
    assert!(matches!(err, edgemoe::Error::InvalidFile { .. }));
    assert!(err.to_string().contains("Cargo.toml"));
}
