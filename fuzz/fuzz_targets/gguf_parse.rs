//! GGUF header parsing from bytes, then everything a model load reads from the header:
//! the model configuration, the expert directory (stock or packed layout), the expert-type
//! table and the predictor table. Every malformed input must be a typed error.
#![no_main]

use std::path::Path;

use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::engine::{ExpertDirectory, ExpertStats, ModelConfig};
use edgemoe::format::GgufHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.gguf");
    let Ok(h) = GgufHeader::parse(data, path) else {
        return;
    };
    let _ = ExpertTypes::from_gguf(&h, path);
    let Ok(cfg) = ModelConfig::from_gguf(&h, path) else {
        return;
    };
    let _ = ExpertDirectory::from_gguf(&h, &cfg, path);
    let _ = ExpertStats::from_gguf(&h, &cfg, path);
});
