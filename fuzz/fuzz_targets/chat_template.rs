//! Chat-template rendering with hostile templates and inputs under the default limits:
//! a hang or an allocation past libFuzzer's limit is a finding.
//! Input: `template SEP messages-json SEP extra-json`.
#![no_main]

use edgemoe::chat::{ChatTemplate, Message, RenderOptions};
use fuzz_common::split;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parts = split(data, 3);
    let Ok(template) = std::str::from_utf8(parts[0]) else {
        return;
    };
    let Ok(t) = ChatTemplate::new(template) else {
        return;
    };
    let messages = String::from_utf8_lossy(parts[1]);
    let mut opts = RenderOptions::new().generation_prompt(true);
    opts.bos_token = Some("<s>".into());
    opts.eos_token = Some("</s>".into());
    opts.now = Some(0);
    if !parts[2].is_empty() {
        opts = opts.extra(String::from_utf8_lossy(parts[2]).into_owned());
    }
    let _ = t.render_json(&messages, &opts);
    let plain = [
        Message::new("system", messages.as_ref()),
        Message::new("user", "hi"),
        Message::new("assistant", messages.as_ref()),
    ];
    let _ = t.render(&plain, &opts);
});
