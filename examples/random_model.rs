//! Writes a random-weight Mixtral-style model in edgemoe's packed layout, for measuring
//! speed on shapes larger than the bundled demo model. The tokenizer is copied from the demo
//! model (vocabulary 2048), so `edgemoe generate -m out.gguf` runs (and prints noise).
//!
//! ```sh
//! cargo run --release --example random_model -- /tmp/r1024.gguf --hidden 1024 --ffn 3584 --type q4_k
//! ```

use std::path::PathBuf;

use edgemoe::convert::random::{write_random_model, RandomModel};
use edgemoe::format::GgufFile;
use edgemoe::tensor::GgmlType;

fn main() -> edgemoe::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = None;
    let (mut hidden, mut ffn, mut layers, mut experts) = (1024usize, 3584usize, 8usize, 8usize);
    let mut ty = GgmlType::Q4K;
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--hidden" => hidden = value().parse().unwrap_or(hidden),
            "--ffn" => ffn = value().parse().unwrap_or(ffn),
            "--layers" => layers = value().parse().unwrap_or(layers),
            "--experts" => experts = value().parse().unwrap_or(experts),
            "--type" => ty = GgmlType::from_name(&value())?,
            other => out = Some(PathBuf::from(other)),
        }
    }
    let out = out.ok_or_else(|| {
        edgemoe::Error::InvalidArgument(
            "usage: random_model OUT.gguf [--hidden N --ffn N --layers N --experts N --type T]"
                .into(),
        )
    })?;
    let demo = GgufFile::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf"))?;
    let shape = RandomModel {
        hidden,
        expert_ffn: ffn,
        layers,
        experts,
        ty,
    };
    write_random_model(&out, &shape, &demo)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
