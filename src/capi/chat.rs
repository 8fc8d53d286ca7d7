//! Chat templates from C: render a model's chat template (or the caller's) with a
//! conversation into a caller buffer.

use std::ffi::c_char;

use super::model::emoe_model;
use super::{boundary, cstr_arg, emoe_status, invalid, Failure, LastError};
use crate::chat::{ChatTemplate, Message, RenderOptions, SpecialTokens};

/// One message of a conversation: NUL-terminated UTF-8 `role` ("system", "user", "assistant",
/// "tool", or what the template accepts) and `content`. Neither may be NULL.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct emoe_chat_message {
    pub role: *const c_char,
    pub content: *const c_char,
}

/// The most messages one call takes; more give `EMOE_STATUS_INVALID_ARGUMENT`.
pub const EMOE_CHAT_MAX_MESSAGES: usize = 1 << 20;

/// The messages as Rust strings.
///
/// # Safety
/// `messages` must be NULL (with `n` = 0) or point to `n` messages whose strings are NULL or
/// NUL-terminated.
unsafe fn messages_arg(
    messages: *const emoe_chat_message,
    n: usize,
) -> Result<Vec<Message>, Failure> {
    if n > EMOE_CHAT_MAX_MESSAGES {
        return Err(invalid(format!(
            "{n} messages: at most {EMOE_CHAT_MAX_MESSAGES} are accepted"
        )));
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    if messages.is_null() {
        return Err(invalid("`messages` is NULL"));
    }
    // SAFETY: `n` readable messages at `messages`, by contract.
    let list = unsafe { std::slice::from_raw_parts(messages, n) };
    let mut out = Vec::with_capacity(n);
    for (i, m) in list.iter().enumerate() {
        // SAFETY: NULL (checked inside) or NUL-terminated, by contract.
        let role = unsafe { cstr_arg(m.role, &format!("messages[{i}].role")) }?;
        // SAFETY: as above.
        let content = unsafe { cstr_arg(m.content, &format!("messages[{i}].content")) }?;
        out.push(Message::new(role, content));
    }
    Ok(out)
}

/// The template to render: the caller's, else the model's (`tokenizer.chat_template`).
fn template_of(model: Option<&emoe_model>, source: Option<&str>) -> Result<ChatTemplate, Failure> {
    match (source, model) {
        (Some(s), _) => Ok(ChatTemplate::new(s).map_err(crate::Error::from)?),
        (None, Some(m)) => {
            Ok(ChatTemplate::from_model(&m.model, None).map_err(crate::Error::from)?)
        }
        (None, None) => Err(invalid("`model` and `tmpl` are both NULL")),
    }
}

/// Writes `text` and a NUL to `buf` when it fits, and its length (without the NUL) to
/// `*out_len` in any case.
///
/// # Safety
/// `out_len` must be writable; `buf` must be NULL (with `capacity` 0) or hold `capacity` bytes.
unsafe fn write_text(
    text: &str,
    buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> Result<(), Failure> {
    // SAFETY: checked non-null by the caller.
    unsafe { out_len.write(text.len()) };
    if text.len() >= capacity {
        return Err(Failure {
            status: emoe_status::EMOE_STATUS_BUFFER_TOO_SMALL,
            message: format!(
                "the prompt of {} bytes (and its NUL) does not fit in {capacity}",
                text.len()
            ),
        });
    }
    // SAFETY: text.len() + 1 <= capacity bytes of the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
        buf.add(text.len()).write(0);
    }
    Ok(())
}

/// Renders a chat template with `n_messages` messages, as transformers'
/// `apply_chat_template(tokenize=False)` does, into `buf`.
///
/// - `model`: the model whose template and special tokens (`bos_token`, `eos_token`) are used;
///   may be NULL when `tmpl` is given (the template then sees no special tokens).
/// - `tmpl`: NULL for the model's own template (`tokenizer.chat_template`), or a Jinja
///   template of the caller's (NUL-terminated UTF-8).
/// - `add_generation_prompt`: end with the header of an assistant reply.
/// - `extra_json`: NULL, or a JSON object of more template variables, e.g.
///   `{"enable_thinking": false, "tools": [...]}`.
/// - On return `*out_len` holds the prompt's length in bytes (without the NUL) whenever the
///   render succeeded. The prompt and a NUL are written when `capacity > *out_len`; otherwise
///   the status is `EMOE_STATUS_BUFFER_TOO_SMALL` and the caller retries with a buffer of at
///   least `*out_len + 1` bytes (`buf` may be NULL with `capacity` 0 to ask for the length).
///
/// Statuses: `EMOE_STATUS_UNSUPPORTED` when the model has no template;
/// `EMOE_STATUS_INVALID_ARGUMENT` for NULL or non-UTF-8 strings, more than
/// `EMOE_CHAT_MAX_MESSAGES` messages, bad `extra_json`, a template syntax error, the
/// template's `raise_exception` (e.g. roles that do not alternate), and a render past its
/// limits (5 M instructions, 1 MiB of output, nesting 200). The message is in
/// `emoe_model_last_error_copy` when `model` is not NULL.
///
/// # Safety
/// Pointers must be NULL or valid as described; `messages` points to `n_messages` elements.
#[no_mangle]
pub unsafe extern "C" fn emoe_chat_apply_template(
    model: *const emoe_model,
    tmpl: *const c_char,
    messages: *const emoe_chat_message,
    n_messages: usize,
    add_generation_prompt: bool,
    extra_json: *const c_char,
    buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let m = unsafe { model.as_ref() };
    let scratch = LastError::default();
    let err = m.map_or(&scratch, |m| &m.error);
    boundary(Some(err), || {
        if out_len.is_null() || (buf.is_null() && capacity > 0) {
            return Err(invalid(
                "`out_len` is NULL, or `buf` is NULL with a capacity",
            ));
        }
        // SAFETY: NULL or NUL-terminated, by contract.
        let source = (!tmpl.is_null())
            .then(|| unsafe { cstr_arg(tmpl, "tmpl") })
            .transpose()?;
        // SAFETY: as above.
        let extra = (!extra_json.is_null())
            .then(|| unsafe { cstr_arg(extra_json, "extra_json") })
            .transpose()?;
        // SAFETY: forwarded contract.
        let messages = unsafe { messages_arg(messages, n_messages) }?;
        let template = template_of(m, source)?;
        let mut options = RenderOptions::new().generation_prompt(add_generation_prompt);
        if let Some(m) = m {
            options = options.special_tokens(&SpecialTokens::from_model(&m.model));
        }
        options.extra_json = extra.map(str::to_string);
        let text = template
            .render(&messages, &options)
            .map_err(crate::Error::from)?;
        // SAFETY: `out_len` checked; `buf` holds `capacity` bytes, by contract.
        unsafe { write_text(&text, buf, capacity, out_len) }
    })
}

/// Writes the text of a model's chat template to `buf`: the default one when `name` is NULL,
/// else the named one (`tokenizer.chat_template.<name>`, e.g. "tool_use"), to show it or to
/// pass it to `emoe_chat_apply_template` as `tmpl`. Lengths as in `emoe_chat_apply_template`:
/// `*out_len` gets the length without the NUL; `EMOE_STATUS_BUFFER_TOO_SMALL` when
/// `capacity <= *out_len`. `EMOE_STATUS_UNSUPPORTED` when the model has no such template.
///
/// # Safety
/// Pointers must be NULL or valid as described.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_chat_template(
    model: *const emoe_model,
    name: *const c_char,
    buf: *mut c_char,
    capacity: usize,
    out_len: *mut usize,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        if out_len.is_null() || (buf.is_null() && capacity > 0) {
            return Err(invalid(
                "`out_len` is NULL, or `buf` is NULL with a capacity",
            ));
        }
        // SAFETY: NULL or NUL-terminated, by contract.
        let name = (!name.is_null())
            .then(|| unsafe { cstr_arg(name, "name") })
            .transpose()?;
        let template = ChatTemplate::from_model(&m.model, name).map_err(crate::Error::from)?;
        // SAFETY: `out_len` checked; `buf` holds `capacity` bytes, by contract.
        unsafe { write_text(template.source(), buf, capacity, out_len) }
    })
}
