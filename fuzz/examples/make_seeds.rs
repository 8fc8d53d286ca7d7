//! Writes the seed corpora under fuzz/corpus/ (small, committed): minimal GGUF headers built
//! with `GgufWriter`, truncated headers, and the JSON and template seeds.
//! Run: `cd fuzz && cargo run --example make_seeds` (then commit fuzz/corpus/).

use std::path::{Path, PathBuf};

use edgemoe::convert::expert_types::ExpertTypes;
use edgemoe::engine::ExpertStats;
use edgemoe::format::{GgufValue, GgufWriter, TensorSpec};
use edgemoe::quant::GgmlType;
use edgemoe::tokenizer::Tokenizer;
use fuzz_common::SEP;

fn s(v: &str) -> GgufValue {
    GgufValue::String(v.into())
}

fn kv(k: &str, v: GgufValue) -> (String, GgufValue) {
    (k.to_string(), v)
}

/// A GGUF file of `specs` (zero data) and `meta`, returned as bytes.
fn gguf(meta: &[(String, GgufValue)], specs: Vec<TensorSpec>) -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("edgemoe-seed-{}.gguf", std::process::id()));
    let mut w = GgufWriter::create(&path, meta, specs.clone()).unwrap();
    for spec in &specs {
        w.write_tensor(&vec![0u8; spec.size().unwrap() as usize])
            .unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    bytes
}

fn spec(name: &str, dims: &[u64], ty: GgmlType) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dims: dims.to_vec(),
        ty,
    }
}

/// A minimal qwen2moe model header: 1 layer, 2 experts of 32x32 (q4_0), hidden 32, vocab 4.
fn model(packed: bool, extra: &[(String, GgufValue)]) -> Vec<u8> {
    let a = "qwen2moe";
    let mut meta = vec![
        kv("general.architecture", s(a)),
        kv(&format!("{a}.block_count"), GgufValue::U32(1)),
        kv(&format!("{a}.context_length"), GgufValue::U32(64)),
        kv(&format!("{a}.embedding_length"), GgufValue::U32(32)),
        kv(&format!("{a}.attention.head_count"), GgufValue::U32(2)),
        kv(&format!("{a}.attention.head_count_kv"), GgufValue::U32(1)),
        kv(&format!("{a}.rope.freq_base"), GgufValue::F32(10000.0)),
        kv(
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            GgufValue::F32(1e-6),
        ),
        kv(&format!("{a}.expert_count"), GgufValue::U32(2)),
        kv(&format!("{a}.expert_used_count"), GgufValue::U32(1)),
        kv(&format!("{a}.expert_feed_forward_length"), GgufValue::U32(32)),
        kv(
            &format!("{a}.expert_shared_feed_forward_length"),
            GgufValue::U32(32),
        ),
    ];
    meta.extend_from_slice(extra);
    let q = GgmlType::Q4_0;
    let mut specs = vec![spec("token_embd.weight", &[32, 4], GgmlType::Q8_0)];
    for kind in ["gate", "up", "down"] {
        if packed {
            for e in 0..2 {
                specs.push(spec(&format!("blk.0.ffn_{kind}.{e}.weight"), &[32, 32], q));
            }
        } else {
            specs.push(spec(&format!("blk.0.ffn_{kind}_exps.weight"), &[32, 32, 2], q));
        }
        specs.push(spec(&format!("blk.0.ffn_{kind}_shexp.weight"), &[32, 32], q));
    }
    gguf(&meta, specs)
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(SEP)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("corpus");
    let fixtures = root.join("../tests/fixtures");

    // Predictor and expert-type tables for a 1-layer, 2-expert model, k = 1.
    let mut stats = ExpertStats::new(2, 2, 1);
    for t in 0..5usize {
        stats.observe(&[vec![t % 2], vec![(t / 2) % 2]]).unwrap();
    }
    stats.calibration = Some("seed".into());
    let stats_meta = stats.gguf_metadata();
    let types = ExpertTypes {
        layers: vec![vec![GgmlType::Q4_0, GgmlType::Q8_0]],
        tolerance: None,
        calibration: Some("seed".into()),
    };
    let types_meta = types.gguf_metadata();

    // gguf_parse: stock and packed minimal models, one with both tables, truncated headers.
    let d = corpus.join("gguf_parse");
    let stock = model(false, &[]);
    put(&d, "stock-min", &stock);
    put(&d, "packed-min", &model(true, &[]));
    let mut both = stats_meta.clone();
    both.extend(types_meta.clone());
    let tables = model(false, &both);
    put(&d, "stock-tables", &tables);
    put(&d, "magic-only", b"GGUF");
    put(&d, "stock-trunc-40", &stock[..40]);
    for fam in ["mixtral", "olmoe", "qwen3_moe"] {
        let f = std::fs::read(fixtures.join(fam).join("stock-f32.gguf")).unwrap();
        put(&d, &format!("{fam}-first-2k"), &f[..2048]);
    }

    // predictor_stats: two shape bytes (2 layers, 2 experts) + a header with the table.
    let d = corpus.join("predictor_stats");
    let mut p = vec![1u8, 1u8];
    p.extend(gguf(&stats_meta, vec![]));
    put(&d, "table-2x2", &p);
    let mut big = ExpertStats::new(3, 8, 2);
    for t in 0..20usize {
        let l = |x: usize| vec![x % 8, (x + 3) % 8];
        big.observe(&[l(t), l(t * 7), l(t * 5 + 1)]).unwrap();
    }
    let mut p = vec![2u8, 7u8];
    p.extend(gguf(&big.gguf_metadata(), vec![]));
    put(&d, "table-3x8", &p);

    // expert_types: JSON (selector 0) and GGUF (selector 1).
    let d = corpus.join("expert_types");
    let mut j = vec![0u8];
    j.extend(types.to_json().as_bytes());
    put(&d, "json", &j);
    let mut g = vec![1u8];
    g.extend(gguf(&types_meta, vec![]));
    put(&d, "gguf", &g);

    // tokenizer_hf: the minimal tokenizer.json, a tokenizer_config.json, config.json, text.
    let tok_json = std::fs::read(root.join("seeds/tokenizer.json")).unwrap();
    let tcfg = br#"{"bos_token":"<s>","eos_token":"</s>","add_bos_token":true,"chat_template":"{{ messages }}"}"#;
    let mcfg = br#"{"vocab_size":110,"eos_token_id":[1,0]}"#;
    let text = "Hello the world <s> in\u{e9}r \u{1f600}\n\t".as_bytes();
    let d = corpus.join("tokenizer_hf");
    put(&d, "min", &join(&[&tok_json, tcfg, mcfg, text]));
    put(&d, "bare", &join(&[&tok_json, b"", b"", text]));

    // tokenizer_gguf: text + GGUF with the embedded tokenizer.json, or llama.cpp's arrays.
    let d = corpus.join("tokenizer_gguf");
    let tdir = std::env::temp_dir().join(format!("edgemoe-seed-tok-{}", std::process::id()));
    put(&tdir, "tokenizer.json", &tok_json);
    put(&tdir, "tokenizer_config.json", tcfg);
    let tok = Tokenizer::from_hf_files(&tdir).unwrap();
    std::fs::remove_dir_all(&tdir).unwrap();
    let mut meta = vec![kv("general.architecture", s("qwen2moe"))];
    meta.extend(tok.gguf_metadata());
    put(&d, "hf-json", &join(&[text, &gguf(&meta, vec![])]));
    let printable: Vec<String> = (33u8..127).map(|c| (c as char).to_string()).collect();
    let mut gpt2: Vec<String> = vec!["<s>".into(), "</s>".into(), "\u{120}".into()];
    gpt2.extend(printable.iter().cloned());
    gpt2.extend(["\u{120}t", "he", "\u{120}the"].map(String::from));
    for pre in ["qwen2", "llama3"] {
        let meta = vec![
            kv("general.architecture", s("qwen2moe")),
            kv("tokenizer.ggml.model", s("gpt2")),
            kv("tokenizer.ggml.pre", s(pre)),
            kv("tokenizer.ggml.tokens", GgufValue::string_array(gpt2.clone())),
            kv(
                "tokenizer.ggml.merges",
                GgufValue::string_array(["\u{120} t", "h e", "\u{120}t he"]),
            ),
            kv("tokenizer.ggml.bos_token_id", GgufValue::U32(0)),
            kv("tokenizer.ggml.eos_token_id", GgufValue::U32(1)),
        ];
        put(&d, &format!("gpt2-{pre}"), &join(&[text, &gguf(&meta, vec![])]));
    }
    let mut spm: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    spm.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")).take(0));
    spm.extend(["\u{2581}", "\u{2581}the", "h", "e", "l", "o", "\u{2581}H"].map(String::from));
    spm.extend(printable.iter().take(20).cloned());
    let n = spm.len();
    let meta = vec![
        kv("general.architecture", s("llama")),
        kv("tokenizer.ggml.model", s("llama")),
        kv("tokenizer.ggml.tokens", GgufValue::string_array(spm)),
        kv(
            "tokenizer.ggml.scores",
            GgufValue::f32_array((0..n).map(|i| -(i as f32))),
        ),
        kv(
            "tokenizer.ggml.token_type",
            GgufValue::i32_array((0..n).map(|i| if i < 3 { 3 } else { 1 })),
        ),
        kv("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
        kv("tokenizer.ggml.eos_token_id", GgufValue::U32(2)),
        kv("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
    ];
    put(&d, "llama-spm", &join(&[text, &gguf(&meta, vec![])]));

    // hf_import: each fixture's config.json + the first 2 KB of its safetensors shard.
    let d = corpus.join("hf_import");
    for fam in ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"] {
        let hf = fixtures.join(fam).join("hf");
        let cfg = std::fs::read(hf.join("config.json")).unwrap();
        let st = std::fs::read(hf.join("model.safetensors")).unwrap();
        let head = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        put(&d, &format!("{fam}-head"), &join(&[&cfg, &st[..head.min(2048)]]));
    }

    // chat_template: small templates with their messages; the big fixtures are left out.
    let d = corpus.join("chat_template");
    let msgs = br#"[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello","tool_calls":[{"type":"function","function":{"name":"f","arguments":{"a":1}}}]},{"role":"tool","content":"42"}]"#;
    for name in ["chatml", "mixtral-8x7b-instruct", "deepseek-v2", "lfm2-8b-a1b"] {
        let t = std::fs::read(fixtures.join("chat").join(format!("{name}.jinja"))).unwrap();
        put(&d, name, &join(&[&t, msgs, br#"{"enable_thinking":false}"#]));
    }
    // Not seeded: string doubling (`s.v ~ s.v` in a loop), which no limit bounds yet
    // (docs/fuzzing.md, open finding); CI's short runs would fail on it.
    let hostile: [&[u8]; 3] = [
        b"{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        b"{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        b"{{ messages[0].content * 100000000 }}{{ raise_exception('x') }}",
    ];
    for (i, t) in hostile.iter().enumerate() {
        put(&d, &format!("hostile-{i}"), &join(&[t, msgs, b""]));
    }
}
