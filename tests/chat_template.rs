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

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/chat")
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
        let template = ChatTemplate::new(source).unwrap();
        for case in fixture["cases"].as_array().unwrap() {
            let name = format!("{}:{}", path.file_name().unwrap().to_string_lossy(), case["name"]);
            let got = template.render_json(case["messages_json"].as_str().unwrap(), &options(&fixture, case));
            checked += 1;
            match (case.get("expected"), got) {
                (Some(want), Ok(got)) if want.as_str() == Some(got.as_str()) => {}
                (None, Err(TemplateError::Raised(msg))) if case["error"].as_str() == Some(&msg) => {}
                (want, got) => failures.push(format!(
                    "{name}\n  want: {:?}\n  got:  {:?}",
                    want.or(case.get("error")),
                    got
                )),
            }
        }
    }
    assert!(checked >= 40, "only {checked} cases found");
    assert!(failures.is_empty(), "{} of {checked} cases differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn plain_messages_render_like_json_ones() {
    let t = ChatTemplate::new(
        std::fs::read_to_string(fixture_dir().join("qwen3.jinja")).unwrap(),
    )
    .unwrap();
    let messages = [Message::new("system", "Be brief."), Message::new("user", "Hi")];
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
    for bad in ["{% for m in messages %}", "{{ messages[ }}", "{% if %}{% endif %}"] {
        match ChatTemplate::new(bad) {
            Err(TemplateError::Syntax(_)) => {}
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn raise_exception_keeps_its_message() {
    let t = ChatTemplate::new("{{ raise_exception('Only user and assistant roles are supported!') }}").unwrap();
    let err = t.render(&[], &RenderOptions::new()).unwrap_err();
    assert_eq!(err, TemplateError::Raised("Only user and assistant roles are supported!".into()));
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
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}

#[test]
fn recursion_is_bounded() {
    let t = ChatTemplate::new("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").unwrap();
    let err = t.render(&[], &RenderOptions::new()).unwrap_err();
    assert!(
        matches!(err, TemplateError::RecursionLimit | TemplateError::OutOfFuel { .. }),
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
    let opts = RenderOptions::new().extra(r#"{"x": null, "y": true, "z": 1.0, "d": {"b": "é<>&", "a": [1, 0.5]}}"#);
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
    assert_eq!((sp.bos.as_deref(), sp.eos.as_deref()), (Some("<s>"), Some("</s>")));
}
