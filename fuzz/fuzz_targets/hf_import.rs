//! Hugging Face checkpoint import through `edgemoe::convert::convert` on a checkpoint
//! directory: config.json read into a model configuration, the safetensors shard parsed,
//! planned and (when it holds every tensor) read and written; the tokenizer files are a
//! fixed minimal tokenizer.json.
//! Input: `config.json SEP model.safetensors`.
#![no_main]

use std::sync::OnceLock;

use edgemoe::convert::{convert, ConvertOptions};
use fuzz_common::{scratch, split, write};
use libfuzzer_sys::fuzz_target;

const TOKENIZER: &[u8] = include_bytes!("../seeds/tokenizer.json");

fuzz_target!(|data: &[u8]| {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| scratch("hf-import"));
    let parts = split(data, 2);
    write(dir, "config.json", parts[0]);
    write(dir, "model.safetensors", parts[1]);
    write(dir, "tokenizer.json", TOKENIZER);
    let _ = safetensors::SafeTensors::deserialize(parts[1]);
    let out = dir.with_extension("out.gguf");
    let _ = convert(dir, &out, &ConvertOptions::default());
});
