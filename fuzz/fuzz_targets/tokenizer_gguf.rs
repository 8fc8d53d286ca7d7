//! The tokenizer built from a GGUF file's metadata (llama.cpp's arrays or the embedded
//! tokenizer.json), then encoding and decoding of fuzzed text and ids.
//! Input: `text SEP gguf-bytes`.
#![no_main]

use std::sync::OnceLock;

use edgemoe::format::GgufFile;
use edgemoe::tokenizer::{StreamDecoder, Tokenizer};
use fuzz_common::{ids, scratch, split, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch("tokenizer-gguf"));
    let parts = split(data, 2);
    let (text, gguf) = (parts[0], parts[1]);
    let path = write(dir, "model.gguf", gguf);
    let Ok(file) = GgufFile::open(&path) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_gguf(&file) else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    for (bos, special) in [(false, false), (true, true)] {
        if let Ok(enc) = tok.encode_with(&text, bos, special) {
            let _ = tok.decode(&enc);
        }
    }
    let ids = ids(text.as_bytes());
    let _ = tok.decode(&ids);
    let mut stream = StreamDecoder::new();
    for &id in &ids {
        let _ = tok.token_to_piece(id);
        let _ = stream.push(&tok, id);
    }
    let _ = stream.finish();
});
