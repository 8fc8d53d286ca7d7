//! `edgemoe chat` without a terminal: replies after `/undo` and `/reset` equal the replies of an
//! uninterrupted conversation, and a reply that reuses the KV cache of earlier turns equals a
//! fresh evaluation of the whole rendered conversation, token for token (greedy).

use std::io::Write;
use std::process::{Command, Stdio};

const TEMPLATE: &str = "{% for m in messages %}{{ m.role | upper }}: {{ m.content }}\n\
                        {% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}";

fn chat(input: &str) -> String {
    let dir = std::env::temp_dir().join(format!("edgemoe-chat-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let template = dir.join("t.jinja");
    std::fs::write(&template, TEMPLATE).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgemoe"))
        .args([
            "chat",
            "--temp",
            "0",
            "-n",
            "12",
            "--system",
            "A play.",
            "--template",
        ])
        .arg(&template)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn undo_reset_and_cached_turns_equal_an_uninterrupted_conversation() {
    let one = chat("ROMEO, what news?\n");
    let two = chat("ROMEO, what news?\nAnd then?\n");
    assert!(two.starts_with(&one), "{one:?} / {two:?}");
    let second = &two[one.len()..];
    assert!(second.len() > 1, "the second reply is empty: {two:?}");
    // An exchange undone, and a reset, leave no trace in what follows.
    let undone = chat("JULIET, speak.\n/undo\nROMEO, what news?\nAnd then?\n");
    assert!(undone.ends_with(&two), "{undone:?} / {two:?}");
    let reset = chat("ROMEO, what news?\n/reset\nROMEO, what news?\nAnd then?\n");
    assert_eq!(reset, format!("{one}{two}"));
    // The second reply, computed on the cache of the first turn, equals a fresh session's
    // continuation of the whole rendered conversation.
    let reply1 = one.strip_suffix('\n').unwrap();
    let prompt = format!(
        "SYSTEM: A play.\nUSER: ROMEO, what news?\nASSISTANT: {reply1}\nUSER: And then?\nASSISTANT:"
    );
    let fresh = Command::new(env!("CARGO_BIN_EXE_edgemoe"))
        .args([
            "generate", "--temp", "0", "-n", "12", "--no-bos", "-p", &prompt,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(fresh.status.success());
    let fresh = String::from_utf8(fresh.stdout).unwrap();
    assert_eq!(fresh, format!("{prompt}{second}"));
}
