//! Expert-type tables: the JSON file form and the GGUF metadata form.
//! Input: first byte even: JSON text; odd: GGUF bytes.
#![no_main]

use std::path::Path;

use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::format::GgufHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let path = Path::new("fuzz");
    if sel % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(rest) {
            if let Ok(t) = ExpertTypes::parse(text, path) {
                let _ = ExpertTypes::parse(&t.to_json(), path);
                let _ = t.gguf_metadata();
            }
        }
    } else if let Ok(h) = GgufHeader::parse(rest, path) {
        let _ = ExpertTypes::from_gguf(&h, path);
    }
});
