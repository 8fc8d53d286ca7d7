//! Chat templates render exactly as transformers' `apply_chat_template(tokenize=False)`.
//!
//! tests/fixtures/chat/*.json hold real templates' conversations and the text transformers
//! rendered for them (tools/fixtures/make_chat_refs.py; sources in the README there). Every
//! case must match byte for byte. Error cases: bad syntax, `raise_exception`, a loop that does
//! not end, a render that grows too large, bad JSON variables.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgemoe::chat::{ChatTemplate, Limits, Message, RenderOptions, TemplateError};
use serde_json::Value;

/// tests/fixtures/chat, or `EMOE_CHAT_FIXTURES` (e.g. the output of
/// `make_chat_refs.py --sweep DIR`, every template llama.cpp ships).
fn fixture_dir() -> PathBuf {
    match std::env::var_os("EMOE_CHAT_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat"),
    }
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

fn options(fixture: &Value, case: &Value) -> RenderOptions {
    let text = |v: &Value| v.as_str().map(str::to_string);
    RenderOptions {
        add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
        bos_token: text(&fixture["bos_token"]),
        eos_token: text(&fixture["eos_token"]),
        tools_json: text(&case["tools_json"]),
        extra_json: text(&case["extra_json"]),
        now: fixture["now"].as_i64(),
    }
}

#[test]
fn renders_match_transformers_byte_for_byte() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in fixtures() {
        let text = std::fs::read_to_string(&path).unwrap();
        let fixture: Value = serde_json::from_str(&text).unwrap();
        let source =
            std::fs::read_to_string(fixture_dir().join(fixture["template"].as_str().unwrap()))
                .unwrap();
        let template = match ChatTemplate::new(source) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        for case in fixture["cases"].as_array().unwrap() {
            let name = format!(
                "{}:{}",
                path.file_name().unwrap().to_string_lossy(),
                case["name"]
            );
            let got = template.render_json(
                case["messages_json"].as_str().unwrap(),
                &options(&fixture, case),
            );
            if case.get("python_error").is_some() {
                continue; // transformers itself failed: nothing to compare with
            }
            checked += 1;
            match (case.get("expected"), got) {
                (Some(want), Ok(got)) if want.as_str() == Some(got.as_str()) => {}
                (None, Err(TemplateError::Raised(msg))) if case["error"].as_str() == Some(&msg) => {
                }
                (want, got) => failures.push(format!(
                    "{name}\n  want: {:?}\n  got:  {:?}",
                    want.or(case.get("error")),
                    got
                )),
            }
        }
    }
    assert!(checked >= 40, "only {checked} cases found");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn plain_messages_render_like_json_ones() {
    let t = ChatTemplate::new(std::fs::read_to_string(fixture_dir().join("qwen3.jinja")).unwrap())
        .unwrap();
    let messages = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
    ];
    let opts = RenderOptions::new().generation_prompt(true);
    let json = r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]"#;
    assert_eq!(
        t.render(&messages, &opts).unwrap(),
        t.render_json(json, &opts).unwrap()
    );
    assert_eq!(
        t.render(&messages, &opts).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn syntax_errors_are_typed() {
    for bad in [
        "{% for m in messages %}",
        "{{ messages[ }}",
        "{% if %}{% endif %}",
    ] {
        match ChatTemplate::new(bad) {
            Err(TemplateError::Syntax(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn raise_exception_keeps_its_message() {
    let t =
        ChatTemplate::new("{{ raise_exception('Only user and assistant roles are supported!') }}")
            .unwrap();
    let err = t.render(&[], &RenderOptions::new()).unwrap_err();
    assert_eq!(
        err,
        TemplateError::Raised("Only user and assistant roles are supported!".into())
    );
    // Raised inside a macro and a loop too.
    let t = ChatTemplate::new(
        "{% macro f(m) %}{% if m.role == 'tool' %}{{ raise_exception('no tools: ' ~ m.content) }}{% endif %}{% endmacro %}\
         {% for m in messages %}{{ f(m) }}{% endfor %}",
    )
    .unwrap();
    let err = t
        .render(&[Message::new("tool", "x")], &RenderOptions::new())
        .unwrap_err();
    assert_eq!(err, TemplateError::Raised("no tools: x".into()));
}

#[test]
fn endless_loops_run_out_of_fuel_quickly() {
    let t = ChatTemplate::new(
        "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}\
         {% endfor %}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let start = Instant::now();
    let err = t.render(&[], &RenderOptions::new()).unwrap_err();
    assert!(matches!(err, TemplateError::OutOfFuel { .. }), "{err:?}");
    // Optimised builds stop within a second; unoptimised ones get more time.
    let bound = Duration::from_secs(if cfg!(debug_assertions) { 5 } else { 1 });
    assert!(start.elapsed() < bound, "{:?}", start.elapsed());
}

#[test]
fn recursion_is_bounded() {
    let t = ChatTemplate::new("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
    let err = t.render(&[], &RenderOptions::new()).unwrap_err();
    assert!(
        matches!(
            err,
            TemplateError::RecursionLimit | TemplateError::OutOfFuel { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn huge_output_is_an_error() {
    let t = ChatTemplate::new("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}").unwrap();
    let err = t.render(&[], &RenderOptions::new()).unwrap_err();
    assert_eq!(err, TemplateError::OutputTooLarge { limit: 1 << 20 });
    // A smaller limit applies too.
    let limits = Limits {
        max_output: 10,
        ..Limits::default()
    };
    let t = ChatTemplate::with_limits("{{ 'abcdefghijk' }}", limits).unwrap();
    assert_eq!(
        t.render(&[], &RenderOptions::new()).unwrap_err(),
        TemplateError::OutputTooLarge { limit: 10 }
    );
}

#[test]
fn bad_variables_are_typed() {
    let t = ChatTemplate::new("{{ x }}").unwrap();
    for (extra, tools) in [
        (Some("{not json"), None),
        (Some("[1, 2]"), None),
        (Some(r#"{"messages": []}"#), None),
        (None, Some("[{")),
    ] {
        let opts = RenderOptions {
            extra_json: extra.map(str::to_string),
            tools_json: tools.map(str::to_string),
            ..Default::default()
        };
        match t.render(&[], &opts) {
            Err(TemplateError::InvalidVariables(_)) => {}
            other => panic!("{extra:?} {tools:?}: {other:?}"),
        }
    }
    assert!(matches!(
        t.render_json("{}", &RenderOptions::new()),
        Err(TemplateError::InvalidVariables(_))
    ));
}

#[test]
fn python_semantics_hold() {
    let t = ChatTemplate::new(
        "{{ x }}|{{ y }}|{{ z }}|{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ '  a b  '.strip().split(' ') }}|\
         {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.get('missing', 'dflt') }}|{{ tools is none }}\
         {% for i in range(5) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 3 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    )
    .unwrap();
    let opts = RenderOptions::new()
        .extra(r#"{"x": null, "y": true, "z": 1.0, "d": {"b": "é<>&", "a": [1, 0.5]}}"#);
    assert_eq!(
        t.render(&[], &opts).unwrap(),
        "None|True|1.0|{\"b\": \"é<>&\", \"a\": [1, 0.5]}|{\n  \"b\": \"é<>&\",\n  \"a\": [\n    1,\n    0.5\n  ]\n}|['a', 'b']|\
         b=é<>&;a=[1, 0.5];|dflt|True02"
    );
}

#[test]
fn strftime_now_reads_the_given_clock() {
    let t = ChatTemplate::new("{{ strftime_now('%d %b %Y') }}").unwrap();
    let opts = RenderOptions {
        now: Some(1_741_964_966),
        ..Default::default()
    };
    assert_eq!(t.render(&[], &opts).unwrap(), "14 Mar 2025");
}

#[test]
fn templates_load_from_tokenizer_config() {
    let cfg = r#"{"chat_template": [{"name": "default", "template": "D{{ messages | length }}"},
                                    {"name": "tool_use", "template": "T"}], "bos_token": {"content": "<s>"}, "eos_token": "</s>"}"#;
    let t = ChatTemplate::from_tokenizer_config(cfg, None).unwrap();
    assert_eq!(t.render(&[], &RenderOptions::new()).unwrap(), "D0");
    let t = ChatTemplate::from_tokenizer_config(cfg, Some("tool_use")).unwrap();
    assert_eq!(t.source(), "T");
    assert!(matches!(
        ChatTemplate::from_tokenizer_config(cfg, Some("nope")),
        Err(TemplateError::Missing(_))
    ));
    assert!(matches!(
        ChatTemplate::from_tokenizer_config("{}", None),
        Err(TemplateError::Missing(_))
    ));
    let sp = edgemoe::chat::SpecialTokens::from_tokenizer_config(cfg);
    assert_eq!(
        (sp.bos.as_deref(), sp.eos.as_deref()),
        (Some("<s>"), Some("</s>"))
    );
}

mod c_api {
    //! `emoe_chat_apply_template` called in-process, as C calls it.

    use std::ffi::{c_char, CStr, CString};
    use std::ptr::{null, null_mut};

    use edgemoe::capi::emoe_status::*;
    use edgemoe::capi::*;

    struct Conversation {
        _strings: Vec<CString>,
        messages: Vec<emoe_chat_message>,
    }

    fn conversation(pairs: &[(&str, &str)]) -> Conversation {
        let strings: Vec<CString> = pairs
            .iter()
            .flat_map(|(r, c)| [CString::new(*r).unwrap(), CString::new(*c).unwrap()])
            .collect();
        let messages = strings
            .chunks(2)
            .map(|p| emoe_chat_message {
                role: p[0].as_ptr(),
                content: p[1].as_ptr(),
            })
            .collect();
        Conversation {
            _strings: strings,
            messages,
        }
    }

    /// Renders through the C function: the length query, then the render into a buffer of
    /// exactly the asked size.
    fn render(
        model: *const emoe_model,
        tmpl: Option<&str>,
        conv: &Conversation,
        gen: bool,
        extra: Option<&str>,
    ) -> Result<String, emoe_status> {
        let tmpl = tmpl.map(|t| CString::new(t).unwrap());
        let extra = extra.map(|t| CString::new(t).unwrap());
        let call = |buf: *mut c_char, cap: usize, len: &mut usize| unsafe {
            // SAFETY: every pointer is NULL or valid for its stated length.
            emoe_chat_apply_template(
                model,
                tmpl.as_ref().map_or(null(), |t| t.as_ptr()),
                conv.messages.as_ptr(),
                conv.messages.len(),
                gen,
                extra.as_ref().map_or(null(), |t| t.as_ptr()),
                buf,
                cap,
                len,
            )
        };
        let mut len = usize::MAX;
        match call(null_mut(), 0, &mut len) {
            EMOE_STATUS_BUFFER_TOO_SMALL => {}
            other => return Err(other),
        }
        let mut small = vec![0 as c_char; len];
        let mut len2 = 0;
        assert_eq!(
            call(small.as_mut_ptr(), len, &mut len2),
            EMOE_STATUS_BUFFER_TOO_SMALL
        );
        assert_eq!(len2, len);
        let mut buf = vec![1 as c_char; len + 1];
        assert_eq!(call(buf.as_mut_ptr(), buf.len(), &mut len2), EMOE_STATUS_OK);
        assert_eq!(len2, len);
        // SAFETY: NUL-terminated by the call.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        Ok(text.to_str().unwrap().to_string())
    }

    #[test]
    fn renders_a_callers_template_like_the_rust_api() {
        let source = std::fs::read_to_string(super::fixture_dir().join("qwen3.jinja")).unwrap();
        let conv = conversation(&[("system", "Sé breve."), ("user", "Hola")]);
        let got = render(
            null(),
            Some(&source),
            &conv,
            true,
            Some(r#"{"enable_thinking": false}"#),
        );
        let want = edgemoe::chat::ChatTemplate::new(source)
            .unwrap()
            .render(
                &[
                    edgemoe::chat::Message::new("system", "Sé breve."),
                    edgemoe::chat::Message::new("user", "Hola"),
                ],
                &edgemoe::chat::RenderOptions::new()
                    .generation_prompt(true)
                    .extra(r#"{"enable_thinking": false}"#),
            )
            .unwrap();
        assert_eq!(got.unwrap(), want);
        assert!(
            want.ends_with("<|im_start|>assistant\n<think>\n\n</think>\n\n"),
            "{want:?}"
        );
    }

    #[test]
    fn bad_arguments_give_statuses() {
        let conv = conversation(&[("user", "hi")]);
        let t = Some("{{ messages[0].content }}");
        assert_eq!(
            render(null(), None, &conv, false, None),
            Err(EMOE_STATUS_INVALID_ARGUMENT)
        );
        assert_eq!(
            render(null(), Some("{% if %}"), &conv, false, None),
            Err(EMOE_STATUS_INVALID_ARGUMENT)
        );
        assert_eq!(
            render(null(), t, &conv, false, Some("{bad")),
            Err(EMOE_STATUS_INVALID_ARGUMENT)
        );
        assert_eq!(
            render(
                null(),
                Some("{{ raise_exception('no') }}"),
                &conv,
                false,
                None
            ),
            Err(EMOE_STATUS_INVALID_ARGUMENT)
        );
        assert_eq!(
            render(null(), Some("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"), &conv, false, None),
            Err(EMOE_STATUS_INVALID_ARGUMENT)
        );
        let tmpl = CString::new("x").unwrap();
        let mut len = 0usize;
        let mut buf = [0 as c_char; 8];
        let nul_role = [emoe_chat_message {
            role: null(),
            content: tmpl.as_ptr(),
        }];
        let bad_utf8 = CString::new(vec![0xffu8, 0xfe]).unwrap();
        let bad = [emoe_chat_message {
            role: tmpl.as_ptr(),
            content: bad_utf8.as_ptr(),
        }];
        // SAFETY: pointers are NULL or valid; the bad counts are refused before any read.
        unsafe {
            let call = |msgs: *const emoe_chat_message,
                        n: usize,
                        buf: *mut c_char,
                        cap: usize,
                        len: *mut usize| {
                emoe_chat_apply_template(
                    null(),
                    tmpl.as_ptr(),
                    msgs,
                    n,
                    false,
                    null(),
                    buf,
                    cap,
                    len,
                )
            };
            assert_eq!(
                call(null(), 1, buf.as_mut_ptr(), 8, &mut len),
                EMOE_STATUS_INVALID_ARGUMENT
            );
            assert_eq!(
                call(null(), usize::MAX, buf.as_mut_ptr(), 8, &mut len),
                EMOE_STATUS_INVALID_ARGUMENT
            );
            assert_eq!(
                call(nul_role.as_ptr(), 1, buf.as_mut_ptr(), 8, &mut len),
                EMOE_STATUS_INVALID_ARGUMENT
            );
            assert_eq!(
                call(bad.as_ptr(), 1, buf.as_mut_ptr(), 8, &mut len),
                EMOE_STATUS_INVALID_ARGUMENT
            );
            assert_eq!(
                call(bad.as_ptr(), 0, buf.as_mut_ptr(), 8, null_mut()),
                EMOE_STATUS_INVALID_ARGUMENT
            );
            assert_eq!(
                call(bad.as_ptr(), 0, null_mut(), 8, &mut len),
                EMOE_STATUS_INVALID_ARGUMENT
            );
            assert_eq!(
                call(null(), 0, buf.as_mut_ptr(), 8, &mut len),
                EMOE_STATUS_OK
            );
            assert_eq!(len, 1);
            assert_eq!(CStr::from_ptr(buf.as_ptr()).to_bytes(), b"x");
        }
    }

    #[test]
    fn a_models_special_tokens_and_errors() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf");
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        let mut model: *mut emoe_model = null_mut();
        // SAFETY: valid path, NULL params (defaults), writable out-pointer, no error buffer.
        let status = unsafe { emoe_model_load(cpath.as_ptr(), null(), &mut model, null_mut(), 0) };
        assert_eq!(status, EMOE_STATUS_OK);
        let conv = conversation(&[("user", "hi")]);
        // The demo model has no chat template of its own.
        assert_eq!(
            render(model, None, &conv, true, None),
            Err(EMOE_STATUS_UNSUPPORTED)
        );
        let text = render(
            model,
            Some("{{ bos_token }}[{{ messages[0].content }}]{{ eos_token }}"),
            &conv,
            true,
            None,
        )
        .unwrap();
        assert!(text.contains("[hi]"), "{text:?}");
        assert_eq!(
            render(
                model,
                Some("{{ raise_exception('roles must alternate') }}"),
                &conv,
                true,
                None
            ),
            Err(EMOE_STATUS_INVALID_ARGUMENT)
        );
        // SAFETY: a live handle; the message stays valid until the next call on it.
        let message = unsafe { CStr::from_ptr(emoe_model_last_error(model)) };
        assert!(
            message.to_str().unwrap().contains("roles must alternate"),
            "{message:?}"
        );
        // SAFETY: freed once.
        unsafe { emoe_model_free(model) };
        // A copy that carries a template is rendered with it and its special tokens.
        let dir = super::temp_dir("capi");
        let template = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}";
        let path = super::demo_with(
            &dir,
            &[(
                "tokenizer.chat_template",
                edgemoe::format::GgufValue::String(template.into()),
            )],
        );
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        let mut model: *mut emoe_model = null_mut();
        // SAFETY: as above.
        let status = unsafe { emoe_model_load(cpath.as_ptr(), null(), &mut model, null_mut(), 0) };
        assert_eq!(status, EMOE_STATUS_OK);
        let file = edgemoe::format::GgufFile::open(&path).unwrap();
        let sp = edgemoe::chat::SpecialTokens::from_gguf(&file);
        let (bos, eos) = (sp.bos.unwrap_or_default(), sp.eos.unwrap_or_default());
        assert!(!eos.is_empty());
        assert_eq!(
            render(model, None, &conv, true, None).unwrap(),
            format!("{bos}<user>hi{eos}")
        );
        // The template's own text comes back through emoe_model_chat_template.
        let mut len = 0usize;
        // SAFETY: a live handle; NULL name and buffer with capacity 0 ask for the length.
        let status = unsafe { emoe_model_chat_template(model, null(), null_mut(), 0, &mut len) };
        assert_eq!(
            (status, len),
            (EMOE_STATUS_BUFFER_TOO_SMALL, template.len())
        );
        let mut buf = vec![0 as c_char; len + 1];
        // SAFETY: `buf` holds len + 1 bytes.
        let status = unsafe {
            emoe_model_chat_template(model, null(), buf.as_mut_ptr(), buf.len(), &mut len)
        };
        assert_eq!(status, EMOE_STATUS_OK);
        // SAFETY: NUL-terminated by the call.
        assert_eq!(
            unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap(),
            template
        );
        let tool_use = CString::new("tool_use").unwrap();
        // SAFETY: as above.
        let status = unsafe {
            emoe_model_chat_template(
                model,
                tool_use.as_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut len,
            )
        };
        assert_eq!(status, EMOE_STATUS_UNSUPPORTED);
        // SAFETY: NULL model.
        let status = unsafe { emoe_model_chat_template(null(), null(), null_mut(), 0, &mut len) };
        assert_eq!(status, EMOE_STATUS_INVALID_ARGUMENT);
        // SAFETY: freed once.
        unsafe { emoe_model_free(model) };
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A copy of the demo model with extra metadata (e.g. a chat template) in `dir`.
fn demo_with(dir: &Path, extra: &[(&str, edgemoe::format::GgufValue)]) -> PathBuf {
    use edgemoe::format::{GgufFile, GgufWriter, TensorSpec};
    let demo =
        GgufFile::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf")).unwrap();
    let mut meta = demo.header.metadata.clone();
    for (k, v) in extra {
        meta.push((k.to_string(), v.clone()));
    }
    let specs = demo
        .header
        .tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let path = dir.join("demo-chat.gguf");
    let mut w = GgufWriter::create(&path, &meta, specs).unwrap();
    for t in &demo.header.tensors {
        w.write_tensor(demo.data(t)).unwrap();
    }
    w.finish().unwrap();
    path
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemoe-chat-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn templates_load_from_gguf_with_names() {
    use edgemoe::format::{GgufFile, GgufValue};
    let dir = temp_dir("gguf");
    let path = demo_with(
        &dir,
        &[
            (
                "tokenizer.chat_template",
                GgufValue::String("D:{{ bos_token }}".into()),
            ),
            (
                "tokenizer.chat_template.tool_use",
                GgufValue::String("T".into()),
            ),
            (
                "tokenizer.chat_templates",
                GgufValue::string_array(["tool_use"]),
            ),
        ],
    );
    let file = GgufFile::open(&path).unwrap();
    assert_eq!(edgemoe::chat::gguf_template_names(&file), ["tool_use"]);
    let t = ChatTemplate::from_gguf(&file, None).unwrap();
    let sp = edgemoe::chat::SpecialTokens::from_gguf(&file);
    let text = t
        .render(&[], &RenderOptions::new().special_tokens(&sp))
        .unwrap();
    assert_eq!(text, format!("D:{}", sp.bos.clone().unwrap_or_default()));
    assert_eq!(
        ChatTemplate::from_gguf(&file, Some("tool_use"))
            .unwrap()
            .source(),
        "T"
    );
    assert!(matches!(
        ChatTemplate::from_gguf(&file, Some("nope")),
        Err(TemplateError::Missing(_))
    ));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn generation_blocks_render_their_body() {
    let t = ChatTemplate::new(
        "{% for m in messages %}\n  {%- generation %}\n[{{ m.content }}]\n  {%- endgeneration %}\n{% endfor %}",
    )
    .unwrap();
    let msgs = [
        Message::new("assistant", "a"),
        Message::new("assistant", "b"),
    ];
    assert_eq!(t.render(&msgs, &RenderOptions::new()).unwrap(), "[a][b]");
    // `generation_prompt`-like names are not tags.
    let t = ChatTemplate::new("{% if generation_x is defined %}y{% endif %}n").unwrap();
    assert_eq!(t.render(&[], &RenderOptions::new()).unwrap(), "n");
}

#[test]
fn long_conversations_fit_the_default_limits() {
    let source = std::fs::read_to_string(fixture_dir().join("gpt-oss.jinja")).unwrap();
    let t = ChatTemplate::new(source).unwrap();
    let mut msgs = vec![Message::new("system", "Be brief.")];
    for i in 0..500 {
        msgs.push(Message::new("user", format!("question {i}")));
        msgs.push(Message::new("assistant", format!("answer {i}")));
    }
    let start = Instant::now();
    let text = t
        .render(&msgs, &RenderOptions::new().generation_prompt(true))
        .unwrap();
    assert!(text.contains("answer 499"));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}
