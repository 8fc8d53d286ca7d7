//! The tokenizer of a Hugging Face checkpoint (tokenizer.json, tokenizer_config.json,
//! config.json), then encoding and decoding of fuzzed text and ids.
//! Input: `tokenizer.json SEP tokenizer_config.json SEP config.json SEP text`.
#![no_main]

use std::sync::OnceLock;

use edgemoe::tokenizer::{StreamDecoder, Tokenizer};
use fuzz_common::{ids, scratch, split, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch("tokenizer-hf"));
    let parts = split(data, 4);
    write(dir, "tokenizer.json", parts[0]);
    for (name, bytes) in [("tokenizer_config.json", parts[1]), ("config.json", parts[2])] {
        if bytes.is_empty() {
            let _ = std::fs::remove_file(dir.join(name));
        } else {
            write(dir, name, bytes);
        }
    }
    let Ok(tok) = Tokenizer::from_hf_files(dir) else {
        return;
    };
    let text = String::from_utf8_lossy(parts[3]);
    for (bos, special) in [(false, false), (true, true)] {
        if let Ok(enc) = tok.encode_with(&text, bos, special) {
            let _ = tok.decode(&enc);
        }
    }
    let ids = ids(parts[3]);
    let _ = tok.decode(&ids);
    let mut stream = StreamDecoder::new();
    for &id in &ids {
        let _ = stream.push(&tok, id);
    }
    let _ = stream.finish();
    let _ = tok.gguf_metadata();
});
