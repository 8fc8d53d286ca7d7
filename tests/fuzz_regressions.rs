//! Inputs the fuzz targets of fuzz/ found (tests/fixtures/fuzz/<target>/), replayed through
//! the same calls as the target: each must end in a typed error or a result, never a panic,
//! an abort on an impossible allocation, or a hang. See docs/fuzzing.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::engine::{ExpertDirectory, ExpertStats, ModelConfig};
use edgemoe::format::GgufHeader;

/// The committed inputs of one target.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// fuzz/fuzz_targets/gguf_parse.rs.
fn gguf_parse(data: &[u8]) {
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
}

#[test]
fn gguf_parse_findings() {
    for (p, data) in inputs("gguf_parse") {
        let t = Instant::now();
        gguf_parse(&data);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{}: took {:?}",
            p.display(),
            t.elapsed()
        );
    }
}

/// Splits an input of several files as fuzz/src/lib.rs does.
fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    const SEP: &[u8] = b"\n#--#\n";
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEP.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    while parts.len() < n {
        parts.push(&[]);
    }
    parts
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemoe-fuzz-regr-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// fuzz/fuzz_targets/tokenizer_gguf.rs: `text SEP gguf`. tokenizers 0.22 panicked on
/// malformed JSON inside `decoder` of an embedded tokenizer.json.
#[test]
fn tokenizer_gguf_findings() {
    let dir = scratch("tokenizer-gguf");
    for (p, data) in inputs("tokenizer_gguf") {
        let parts = split(&data, 2);
        let path = dir.join("model.gguf");
        std::fs::write(&path, parts[1]).unwrap();
        let Ok(file) = edgemoe::format::GgufFile::open(&path) else {
            continue;
        };
        if let Ok(tok) = edgemoe::tokenizer::Tokenizer::from_gguf(&file) {
            let text = String::from_utf8_lossy(parts[0]);
            if let Ok(ids) = tok.encode_with(&text, true, true) {
                let _ = tok.decode(&ids);
            }
        }
        eprintln!("{}: no panic", p.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// fuzz/fuzz_targets/tokenizer_hf.rs: `tokenizer.json SEP tokenizer_config.json SEP
/// config.json SEP text` (the same tokenizers panic as above, from a checkpoint directory).
#[test]
fn tokenizer_hf_findings() {
    let dir = scratch("tokenizer-hf");
    for (p, data) in inputs("tokenizer_hf") {
        let parts = split(&data, 4);
        std::fs::write(dir.join("tokenizer.json"), parts[0]).unwrap();
        for (name, bytes) in [
            ("tokenizer_config.json", parts[1]),
            ("config.json", parts[2]),
        ] {
            let _ = std::fs::remove_file(dir.join(name));
            if !bytes.is_empty() {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
        if let Ok(tok) = edgemoe::tokenizer::Tokenizer::from_hf_files(&dir) {
            let text = String::from_utf8_lossy(parts[3]);
            if let Ok(ids) = tok.encode_with(&text, true, true) {
                let _ = tok.decode(&ids);
            }
        }
        eprintln!("{}: no panic", p.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// fuzz/fuzz_targets/chat_template.rs: `template SEP messages-json SEP extra-json`.
/// Open finding: a template that doubles a string in a loop (`s.v ~ s.v`, 40 times) exhausts
/// memory within its fuel; minijinja has no bound on string concatenation and no hook for
/// one (see `Limits` and docs/fuzzing.md). Ignored until a limit stops it: run with
/// `--ignored` in a process that may fail.
#[test]
#[ignore = "open: string concatenation in chat templates is unbounded (docs/fuzzing.md)"]
fn chat_template_findings() {
    use edgemoe::chat::{ChatTemplate, RenderOptions};
    for (p, data) in inputs("chat_template") {
        let parts = split(&data, 3);
        let Ok(t) = ChatTemplate::new(String::from_utf8_lossy(parts[0])) else {
            continue;
        };
        let messages = String::from_utf8_lossy(parts[1]);
        let _ = t.render_json(&messages, &RenderOptions::new().generation_prompt(true));
        eprintln!("{}: no panic", p.display());
    }
}
