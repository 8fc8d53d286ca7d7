//! Hugging Face checkpoint directory (config.json + safetensors shards + tokenizer files) to
//! edgemoe's layout: the config read ([`config`]), the shards mapped ([`checkpoint`]), the
//! tensors named and ordered for the packed layout ([`plan`]), then written.

// Not `forbid`: see `convert`'s note on unsafe code.
#![deny(unsafe_code)]

mod checkpoint;
mod config;
mod plan;

use std::path::Path;

use super::{write, ConvertOptions, ConvertReport};
use crate::format::GgufValue;
use crate::Result;
use checkpoint::{Checkpoint, Shards};
pub use config::read_config;

/// GGUF tokenizer metadata for the checkpoint's tokenizer files.
fn tokenizer_metadata(dir: &Path) -> Result<Vec<(String, GgufValue)>> {
    Ok(crate::tokenizer::Tokenizer::from_hf_files(dir)?.gguf_metadata())
}

pub(super) fn convert(
    dir: &Path,
    output: &Path,
    opts: &ConvertOptions,
    extra: Vec<(String, GgufValue)>,
) -> Result<ConvertReport> {
    let cfg = read_config(dir)?;
    let shards = Shards::open(dir)?;
    let ck = Checkpoint::new(&shards)?;
    let plan = plan::plan(&ck, &cfg);
    let mut metadata = vec![(
        "general.name".to_string(),
        GgufValue::String(
            dir.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        ),
    )];
    metadata.extend(tokenizer_metadata(dir)?);
    metadata.extend(extra);
    write(output, &cfg, metadata, plan, opts, false)
}
