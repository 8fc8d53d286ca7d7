//! Tokenizer tests against the Hugging Face reference outputs of the fixture models, for
//! tokenizers loaded from the HF files, from llama.cpp's stock GGUFs and from a GGUF written
//! with our own metadata.

use std::path::{Path, PathBuf};

use edgemoe::format::{GgufFile, GgufValue, GgufWriter};
use edgemoe::tokenizer::{StreamDecoder, Tokenizer};
use edgemoe::Error;
use serde_json::Value;

const FAMILIES: [&str; 4] = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"];

fn fixture(family: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(family)
}

fn reference(family: &str) -> Value {
    let text = std::fs::read_to_string(fixture(family).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn hf(family: &str) -> Tokenizer {
    Tokenizer::from_hf_files(&fixture(family).join("hf")).unwrap()
}

fn stock(family: &str) -> Tokenizer {
    let file = GgufFile::open(&fixture(family).join("stock-f32.gguf")).unwrap();
    Tokenizer::from_gguf(&file).unwrap()
}

/// Streams `ids` one at a time; checks the pieces concatenate to `decode(ids)`.
fn check_stream(tok: &Tokenizer, ids: &[u32]) {
    let mut d = StreamDecoder::default();
    let mut out = String::new();
    for &id in ids {
        out.push_str(&d.push(tok, id).unwrap());
    }
    out.push_str(&d.finish());
    assert_eq!(out, tok.decode(ids).unwrap(), "stream of {ids:?}");
}

/// Checks the prompts (with BOS) and greedy continuations of the reference.
fn check_prompts(family: &str, tok: &Tokenizer, r: &Value) {
    for p in r["prompts"].as_array().unwrap() {
        let text = p["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids(&p["ids"]),
            "{family}: {text:?}"
        );
        let greedy = ids(&p["greedy"]);
        assert_eq!(
            tok.decode(&greedy).unwrap(),
            p["greedy_text"].as_str().unwrap(),
            "{family}: greedy after {text:?}"
        );
        check_stream(tok, &greedy);
        let mut all = ids(&p["ids"]);
        all.extend(&greedy);
        check_stream(tok, &all);
    }
}

#[test]
fn hf_files_match_reference() {
    for family in FAMILIES {
        let tok = hf(family);
        let r = reference(family);
        assert_eq!(tok.adds_bos(), r["add_bos"].as_bool().unwrap(), "{family}");
        for c in r["tokenizer_cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            let want = ids(&c["ids"]);
            assert_eq!(tok.encode(text, false).unwrap(), want, "{family}: {text:?}");
            assert_eq!(
                tok.decode(&want).unwrap(),
                c["decoded"].as_str().unwrap(),
                "{family}: decode {text:?}"
            );
            check_stream(&tok, &want);
        }
        check_prompts(family, &tok, &r);
    }
}

#[test]
fn special_ids_and_sizes() {
    let t = hf("mixtral");
    assert_eq!(
        (t.bos_id(), t.eos_ids(), t.vocab_size()),
        (Some(1), &[2][..], 512)
    );
    assert!(t.adds_bos() && t.is_eos(2) && !t.is_eos(1));
    let t = hf("qwen2_moe");
    // The embedding has 768 rows, the tokenizer 703 tokens.
    assert_eq!(
        (t.eos_ids(), t.vocab_size(), t.adds_bos()),
        (&[700][..], 768, false)
    );
    assert_eq!(t.decode(&[765]).unwrap(), "");
    assert!(t.token_to_piece(765).unwrap().is_empty());
    let t = hf("qwen3_moe");
    assert_eq!((t.eos_ids(), t.pad_id()), (&[602][..], Some(600)));
    let t = hf("olmoe");
    assert_eq!(
        (t.bos_id(), t.eos_ids(), t.pad_id()),
        (None, &[0][..], Some(1))
    );
    for family in FAMILIES {
        let s = stock(family);
        let h = hf(family);
        assert_eq!(s.vocab_size(), h.vocab_size(), "{family}");
        assert_eq!(s.eos_ids()[0], h.eos_ids()[0], "{family}");
        assert_eq!(s.adds_bos(), h.adds_bos(), "{family}");
    }
}

#[test]
fn stock_gguf_matches_reference() {
    for family in FAMILIES {
        let tok = stock(family);
        let h = hf(family);
        let r = reference(family);
        for c in r["tokenizer_cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            if family == "mixtral" {
                // llama.cpp's SPM tokenizer = SentencePiece: always a dummy-prefix ▁.
                let sp = ids(&c["sentencepiece_ids"]);
                assert_eq!(tok.encode_with(text, false, false).unwrap(), sp, "{text:?}");
                if text.contains("<s>") {
                    // With special tokens parsed (the default), each stretch of text after a
                    // special token gets its own ▁, as in llama.cpp.
                    let mut want = vec![1];
                    want.extend(tok.encode("Hello", false).unwrap());
                    want.push(2);
                    assert_eq!(tok.encode(text, false).unwrap(), want);
                } else {
                    assert_eq!(tok.encode(text, false).unwrap(), sp, "{text:?}");
                    // SentencePiece round trip; HF's decoded differs where it dropped a ▁.
                    assert_eq!(tok.decode(&sp).unwrap(), text, "{text:?}");
                }
                check_stream(&tok, &sp);
            } else {
                let want = ids(&c["ids"]);
                assert_eq!(tok.encode(text, false).unwrap(), want, "{family}: {text:?}");
                assert_eq!(
                    tok.decode(&want).unwrap(),
                    c["decoded"].as_str().unwrap(),
                    "{family}: decode {text:?}"
                );
                check_stream(&tok, &want);
            }
            // Decoding agrees with the HF tokenizer on any ids.
            let want = ids(&c["ids"]);
            assert_eq!(
                tok.decode(&want).unwrap(),
                h.decode(&want).unwrap(),
                "{family}"
            );
        }
        check_prompts(family, &tok, &r);
    }
}

/// A simple deterministic generator for the fuzz tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: usize) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

#[test]
fn stream_equals_decode_on_random_ids() {
    for family in FAMILIES {
        for tok in [hf(family), stock(family)] {
            let mut rng = Lcg(0x5eed ^ family.len() as u64);
            let n = tok.vocab_size();
            for round in 0..300 {
                let len = 1 + rng.next(24) as usize;
                let ids: Vec<u32> = (0..len)
                    .map(|_| {
                        // Favour the low ids: byte tokens (SPM) and single bytes (byte-level).
                        if round % 2 == 0 {
                            rng.next(300.min(n))
                        } else {
                            rng.next(n)
                        }
                    })
                    .collect();
                check_stream(&tok, &ids);
            }
        }
    }
}

#[test]
fn stream_holds_back_partial_characters() {
    for family in FAMILIES {
        let tok = hf(family);
        for text in ["🙂", "日本語", "👍🏽 thumbs", "café, niño"] {
            let ids = tok.encode(text, false).unwrap();
            let mut d = StreamDecoder::new();
            let mut out = String::new();
            for &id in &ids {
                let piece = d.push(&tok, id).unwrap();
                assert!(
                    !piece.contains('\u{FFFD}'),
                    "{family}: {text:?} gave {piece:?}"
                );
                out.push_str(&piece);
            }
            out.push_str(&d.finish());
            assert_eq!(out, text, "{family}");
        }
    }
}

#[test]
fn token_pieces() {
    // Byte-level: pieces are the raw bytes; concatenated they are the text.
    for family in ["qwen2_moe", "qwen3_moe", "olmoe"] {
        for tok in [hf(family), stock(family)] {
            let text = "café 🙂 日本語, ok";
            let mut bytes = Vec::new();
            for id in tok.encode(text, false).unwrap() {
                bytes.extend(tok.token_to_piece(id).unwrap());
            }
            assert_eq!(bytes, text.as_bytes(), "{family}");
        }
    }
    // SentencePiece: ▁ is a space, <0xNN> the byte.
    for tok in [hf("mixtral"), stock("mixtral")] {
        let hello = tok.token_to_id("▁t").unwrap();
        assert_eq!(tok.token_to_piece(hello).unwrap(), b" t");
        let byte = tok.token_to_id("<0xF0>").unwrap();
        assert_eq!(tok.token_to_piece(byte).unwrap(), [0xF0]);
        assert_eq!(tok.token_to_piece(2).unwrap(), b"</s>");
    }
}

#[test]
fn out_of_range_ids_are_errors() {
    for family in FAMILIES {
        let tok = hf(family);
        let bad = tok.vocab_size() as u32;
        assert!(matches!(
            tok.decode(&[0, bad]),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            tok.token_to_piece(bad),
            Err(Error::InvalidArgument(_))
        ));
        let mut d = StreamDecoder::new();
        assert!(matches!(d.push(&tok, bad), Err(Error::InvalidArgument(_))));
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("emoe-tok-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_gguf(path: &Path, meta: &[(String, GgufValue)]) {
    GgufWriter::create(path, meta, Vec::new())
        .unwrap()
        .finish()
        .unwrap();
}

#[test]
fn gguf_metadata_round_trip() {
    let dir = temp_dir("rt");
    for family in FAMILIES {
        let h = hf(family);
        let meta = h.gguf_metadata();
        let keys: Vec<&str> = meta.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "tokenizer.huggingface.json",
            "tokenizer.ggml.eos_token_id",
            "edgemoe.eos_token_ids",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
            "tokenizer.ggml.model",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
        ] {
            assert!(keys.contains(&k), "{family}: {k} missing");
        }
        // The decoder was recognised (streaming is exact, not the re-decode fallback).
        let model = meta
            .iter()
            .find(|(k, _)| k == "tokenizer.ggml.model")
            .unwrap();
        let want = if family == "mixtral" { "llama" } else { "gpt2" };
        assert_eq!(model.1.as_str(), Some(want), "{family}");
        let path = dir.join(format!("{family}.gguf"));
        write_gguf(&path, &meta);
        let g = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        assert_eq!(g.vocab_size(), h.vocab_size(), "{family}");
        assert_eq!(g.bos_id(), h.bos_id(), "{family}");
        assert_eq!(g.eos_ids(), h.eos_ids(), "{family}");
        assert_eq!(g.pad_id(), h.pad_id(), "{family}");
        assert_eq!(g.adds_bos(), h.adds_bos(), "{family}");
        let r = reference(family);
        for c in r["tokenizer_cases"].as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            assert_eq!(
                g.encode(text, false).unwrap(),
                ids(&c["ids"]),
                "{family}: {text:?}"
            );
            assert_eq!(g.encode(text, true).unwrap(), h.encode(text, true).unwrap());
        }
        check_prompts(family, &g, &r);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Metadata of the stock mixtral (SPM) or qwen3 (BPE) GGUF with `edit` applied.
fn edited(family: &str, edit: impl Fn(&mut Vec<(String, GgufValue)>)) -> Vec<(String, GgufValue)> {
    let file = GgufFile::open(&fixture(family).join("stock-f32.gguf")).unwrap();
    let mut meta: Vec<(String, GgufValue)> = file
        .header
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer.") || k == "general.architecture")
        .cloned()
        .collect();
    edit(&mut meta);
    meta
}

fn set(meta: &mut Vec<(String, GgufValue)>, key: &str, v: GgufValue) {
    meta.retain(|(k, _)| k != key);
    meta.push((key.to_string(), v));
}

fn load(dir: &Path, name: &str, meta: &[(String, GgufValue)]) -> edgemoe::Result<Tokenizer> {
    let path = dir.join(format!("{name}.gguf"));
    write_gguf(&path, meta);
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap())
}

#[test]
fn corrupt_tokenizer_metadata_is_an_error() {
    let dir = temp_dir("bad");
    let invalid = |r: edgemoe::Result<Tokenizer>| matches!(r, Err(Error::InvalidFile { .. }));
    // The unedited copies load.
    assert!(load(&dir, "ok-spm", &edited("mixtral", |_| {})).is_ok());
    assert!(load(&dir, "ok-bpe", &edited("qwen3_moe", |_| {})).is_ok());

    type Edit = Box<dyn Fn(&mut Vec<(String, GgufValue)>)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "tokens-not-strings",
            "mixtral",
            Box::new(|m| set(m, "tokenizer.ggml.tokens", GgufValue::i32_array([1, 2, 3]))),
        ),
        (
            "tokens-not-array",
            "qwen3_moe",
            Box::new(|m| set(m, "tokenizer.ggml.tokens", GgufValue::U32(3))),
        ),
        (
            "tokens-empty",
            "qwen3_moe",
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.tokens",
                    GgufValue::string_array(Vec::<String>::new()),
                )
            }),
        ),
        (
            "scores-short",
            "mixtral",
            Box::new(|m| set(m, "tokenizer.ggml.scores", GgufValue::f32_array([0.0; 7]))),
        ),
        (
            "scores-strings",
            "mixtral",
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.scores",
                    GgufValue::string_array(vec!["x"; 512]),
                )
            }),
        ),
        (
            "types-short",
            "qwen3_moe",
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.token_type",
                    GgufValue::i32_array([1; 10]),
                )
            }),
        ),
        (
            "bos-out-of-range",
            "mixtral",
            Box::new(|m| set(m, "tokenizer.ggml.bos_token_id", GgufValue::U32(100_000))),
        ),
        (
            "eos-wrong-type",
            "qwen3_moe",
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.eos_token_id",
                    GgufValue::String("x".into()),
                )
            }),
        ),
        (
            "merges-missing",
            "qwen3_moe",
            Box::new(|m| m.retain(|(k, _)| k != "tokenizer.ggml.merges")),
        ),
        (
            "merge-one-token",
            "qwen3_moe",
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.merges",
                    GgufValue::string_array(["nospace"]),
                )
            }),
        ),
        (
            "merge-unknown-token",
            "qwen3_moe",
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.ggml.merges",
                    GgufValue::string_array(["zzzq yyyq"]),
                )
            }),
        ),
        (
            "add-bos-not-bool",
            "mixtral",
            Box::new(|m| set(m, "tokenizer.ggml.add_bos_token", GgufValue::U8(1))),
        ),
        (
            "hf-json-garbage",
            "qwen3_moe",
            Box::new(|m| {
                set(
                    m,
                    "tokenizer.huggingface.json",
                    GgufValue::String("{not json".into()),
                )
            }),
        ),
    ];
    for (name, family, edit) in cases {
        let r = load(&dir, name, &edited(family, |m| edit(m)));
        assert!(invalid(r), "{name}");
    }
    let unsupported = |r: edgemoe::Result<Tokenizer>| matches!(r, Err(Error::Unsupported(_)));
    let r = load(
        &dir,
        "bert",
        &edited("qwen3_moe", |m| {
            set(m, "tokenizer.ggml.model", GgufValue::String("bert".into()))
        }),
    );
    assert!(unsupported(r));
    let r = load(
        &dir,
        "pre",
        &edited("qwen3_moe", |m| {
            set(
                m,
                "tokenizer.ggml.pre",
                GgufValue::String("no-such-pre".into()),
            )
        }),
    );
    assert!(unsupported(r));
    let r = load(
        &dir,
        "none",
        &edited("qwen3_moe", |m| {
            m.retain(|(k, _)| k == "general.architecture")
        }),
    );
    assert!(matches!(r, Err(Error::Tokenizer(_))));
    std::fs::remove_dir_all(&dir).ok();
}

/// Stock GGUF tokenizers agree with the Hugging Face ones on varied text (for SentencePiece,
/// text that does not start with a space, where both put one `▁` in front).
#[test]
fn stock_gguf_agrees_with_hf_on_varied_text() {
    let text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\
        What's this? 'Tis 1,234.56 ducats -- and 7/8ths of 99%!\tTabs\t\there...   spaces   \n\
        Ünïcödé: café naïve façade; Ελληνικά, русский, العربية, עברית, हिन्दी, 中文字符, 日本語のテキスト, 한국어.\n\
        Emoji 🙂👍🏽🎉 and symbols ©®™ — “quotes” ‘single’ «guillemets» …\n\
        code: fn main() { let x = a[i] + b->c; } // <tag attr=\"v\">&amp;</tag>\r\nCRLF line\r\n\
        I'LL WE'RE they've she'd It's DON'T you'Re";
    for family in FAMILIES {
        let (h, s) = (hf(family), stock(family));
        let mut pieces: Vec<&str> = text.lines().filter(|l| !l.starts_with(' ')).collect();
        pieces.push(text.trim_start());
        for piece in pieces {
            assert_eq!(
                s.encode(piece, true).unwrap(),
                h.encode(piece, true).unwrap(),
                "{family}: {piece:?}"
            );
            let ids = h.encode(piece, false).unwrap();
            assert_eq!(s.decode(&ids).unwrap(), h.decode(&ids).unwrap(), "{family}");
            check_stream(&s, &ids);
        }
    }
}

/// Generation stops at EOS and at the special tokens that end a chat turn, from both the
/// Hugging Face files and llama.cpp's GGUF; the EOS ids themselves stay the model's.
#[test]
fn end_of_generation_ids() {
    // Qwen2-MoE: EOS is <|endoftext|> (700); <|im_end|> (702) ends a chat turn.
    let t = hf("qwen2_moe");
    assert_eq!(t.eos_ids(), &[700]);
    assert_eq!(t.eog_ids(), &[700, 702]);
    assert!(t.is_eog(702) && !t.is_eos(702) && !t.is_eog(701));
    // Qwen3-MoE: EOS is <|im_end|> (602); <|endoftext|> (600) ends generation too.
    let t = hf("qwen3_moe");
    assert_eq!(t.eog_ids(), &[602, 600]);
    // Mixtral has no chat-turn token beyond </s>.
    assert_eq!(hf("mixtral").eog_ids(), &[2]);
    for family in FAMILIES {
        let (s, h) = (stock(family), hf(family));
        let (mut a, mut b) = (s.eog_ids().to_vec(), h.eog_ids().to_vec());
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "{family}");
    }
}
