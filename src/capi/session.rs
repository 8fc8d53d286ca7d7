//! `emoe_session`: one conversation.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use parking_lot::Mutex;

use super::params::*;
use super::{boundary, cstr_arg, emoe_status, invalid, str_arg, Failure, LastError};
use crate::engine::generate::{generate, GenerateParams, StopReason};
use crate::engine::{CancelHandle, Session};
use crate::sampling::Sampler;

/// One conversation with a model: KV cache, logits, sampler state.
///
/// Owned by the caller from `emoe_session_new` until `emoe_session_free`; keeps its model alive.
/// One caller at a time, from any thread; the exception is `emoe_session_cancel`, which any
/// thread may call at any time.
///
/// Functions: `emoe_session_new`, `emoe_session_free`, `emoe_session_eval`,
/// `emoe_session_logits`, `emoe_session_sample`, `emoe_session_generate`,
/// `emoe_session_cancel`, `emoe_session_reset`, `emoe_session_position`,
/// `emoe_session_last_error`.
pub struct emoe_session {
    inner: Mutex<SessionState>,
    cancel: CancelHandle,
    error: LastError,
}

struct SessionState {
    session: Session,
    history: Vec<u32>,
    sampler: Option<(emoe_sampling_params, Sampler)>,
}

/// Creates a session on `model` with room for `context_length` tokens and writes it to
/// `*out_session`. 0: the context the model's memory budget reserved (`context_length` of
/// `emoe_model_params`), or without a budget the model's context length. A model loaded with a
/// memory budget refuses a larger context with `EMOE_STATUS_BUDGET_TOO_SMALL` (the message
/// names the context the budget allows); a KV cache that cannot be allocated gives
/// `EMOE_STATUS_INVALID_ARGUMENT`, never an abort.
///
/// # Safety
/// `model` must be NULL or a live handle; `out_session` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_new(
    model: *const super::emoe_model,
    context_length: u32,
    out_session: *mut *mut emoe_session,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        if out_session.is_null() {
            return Err(invalid("`out_session` is NULL"));
        }
        // Session::new checks the size against the model's budget and allocates fallibly.
        let cap = (context_length > 0).then_some(context_length as usize);
        let session = Session::new(Arc::clone(&m.model), cap)?;
        let cancel = session.cancel_handle();
        let handle = Box::new(emoe_session {
            inner: Mutex::new(SessionState {
                session,
                history: Vec::new(),
                sampler: None,
            }),
            cancel,
            error: LastError::default(),
        });
        // SAFETY: checked non-null; the caller provides a writable pointer.
        unsafe { out_session.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Frees a session. NULL is a no-op.
///
/// # Safety
/// `session` must be NULL or a live handle not in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_free(session: *mut emoe_session) {
    if session.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: a live handle from Box::into_raw, freed exactly once by contract.
        drop(unsafe { Box::from_raw(session) });
    }));
}

/// The message of the last failed call on `session` ("" after a success or for NULL), valid
/// until the next call on the session (a session has one caller at a time, so no other thread
/// replaces it).
///
/// # Safety
/// `session` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_last_error(session: *const emoe_session) -> *const c_char {
    // SAFETY: NULL or a live handle, by contract.
    match unsafe { session.as_ref() } {
        Some(s) => s.error.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// Stops the session's call in progress (`emoe_session_eval` or `emoe_session_generate`, which
/// then returns `EMOE_STATUS_CANCELLED`), during prompt processing as well as decoding, and
/// nothing after it: a cancel while the session is idle does nothing. Expert reads in flight
/// are stopped too (those not yet started by the device; another session that still needs one
/// reads it again). Any thread, any time. The session stays usable; the tokens evaluated
/// before the cancel stay in it.
///
/// # Safety
/// `session` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_cancel(session: *const emoe_session) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    match unsafe { session.as_ref() } {
        Some(s) => {
            s.cancel.cancel();
            emoe_status::EMOE_STATUS_OK
        }
        None => emoe_status::EMOE_STATUS_INVALID_ARGUMENT,
    }
}

/// Runs `f` on the session's state under its error slot.
fn with_session(
    session: *const emoe_session,
    f: impl FnOnce(&mut SessionState) -> Result<(), Failure>,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by the callers' contracts.
    let Some(s) = (unsafe { session.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&s.error), || {
        let mut state = s
            .inner
            .try_lock()
            .ok_or_else(|| invalid("the session is in use by another call"))?;
        f(&mut state)
    })
}

/// Forgets the conversation (the KV cache and sampling history).
///
/// # Safety
/// `session` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_reset(session: *mut emoe_session) -> emoe_status {
    with_session(session, |s| {
        s.session.reset();
        s.history.clear();
        Ok(())
    })
}

/// Drops the tokens after `position` from the session (the KV cache and sampling history),
/// so the conversation continues from there: undo a reply, regenerate it, edit a message. A
/// `position` at or past the session's position changes nothing. What follows is computed
/// exactly as if the dropped tokens had never been evaluated.
///
/// # Safety
/// `session` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_truncate(
    session: *mut emoe_session,
    position: usize,
) -> emoe_status {
    with_session(session, |s| {
        s.session.truncate(position);
        let kept = s.session.position();
        s.history.truncate(kept);
        Ok(())
    })
}

/// Copies the tokens in the session's KV cache, in order, to `tokens` (up to `capacity`) and
/// their number to `*n_tokens`; when `capacity` is too small, writes the needed count to
/// `*n_tokens` and returns `EMOE_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// `session` must be NULL or a live handle; `tokens` NULL (with `capacity` 0) or writable for
/// `capacity` ids; `n_tokens` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_tokens(
    session: *mut emoe_session,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> emoe_status {
    with_session(session, |s| {
        if n_tokens.is_null() {
            return Err(invalid("`n_tokens` is NULL"));
        }
        let ids = s.session.tokens();
        // SAFETY: checked non-NULL above; writable by contract.
        unsafe { *n_tokens = ids.len() };
        if ids.len() > capacity {
            return Err(Failure {
                status: emoe_status::EMOE_STATUS_BUFFER_TOO_SMALL,
                message: format!("{} tokens do not fit in {capacity}", ids.len()),
            });
        }
        if ids.is_empty() {
            return Ok(());
        }
        if tokens.is_null() {
            return Err(invalid("`tokens` is NULL"));
        }
        // SAFETY: non-NULL and writable for `capacity >= ids.len()` ids, by contract.
        let out = unsafe { std::slice::from_raw_parts_mut(tokens, ids.len()) };
        for (o, &id) in out.iter_mut().zip(ids) {
            *o = id as i32;
        }
        Ok(())
    })
}

/// Writes the number of tokens in the session's KV cache to `*out`.
///
/// # Safety
/// `session` must be NULL or a live handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_position(
    session: *const emoe_session,
    out: *mut usize,
) -> emoe_status {
    with_session(session, |s| {
        if out.is_null() {
            return Err(invalid("`out` is NULL"));
        }
        // SAFETY: checked non-null.
        unsafe { out.write(s.session.position()) };
        Ok(())
    })
}

/// Evaluates `n_tokens` tokens after those already in the session; the logits of the last
/// one can then be read with `emoe_session_logits`.
///
/// # Safety
/// `session` must be NULL or a live handle; `tokens` valid for `n_tokens` ids.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_eval(
    session: *mut emoe_session,
    tokens: *const i32,
    n_tokens: usize,
) -> emoe_status {
    with_session(session, |s| {
        if tokens.is_null() || n_tokens == 0 {
            return Err(invalid("`tokens` is NULL or empty"));
        }
        let room = s.session.capacity() - s.session.position();
        if n_tokens > room {
            return Err(crate::Error::ContextFull {
                needed: s.session.position().saturating_add(n_tokens),
                capacity: s.session.capacity(),
            }
            .into());
        }
        // SAFETY: `n_tokens` readable ids, by contract.
        let ids = unsafe { std::slice::from_raw_parts(tokens, n_tokens) };
        let ids: Vec<u32> = ids
            .iter()
            .map(|&t| u32::try_from(t).map_err(|_| invalid(format!("token {t} is negative"))))
            .collect::<Result<_, _>>()?;
        s.session.eval(&ids, false)?;
        s.history.extend_from_slice(&ids);
        Ok(())
    })
}

/// Points `*logits` at the last evaluated token's logits (`*n_vocab` floats), valid until the
/// next call on this session.
///
/// # Safety
/// `session` must be NULL or a live handle; out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_logits(
    session: *mut emoe_session,
    logits: *mut *const f32,
    n_vocab: *mut usize,
) -> emoe_status {
    with_session(session, |s| {
        if logits.is_null() || n_vocab.is_null() {
            return Err(invalid("an out-pointer is NULL"));
        }
        let l = s.session.logits();
        if l.is_empty() {
            return Err(invalid("nothing evaluated yet"));
        }
        // SAFETY: checked non-null; the logits live in the session until its next call.
        unsafe {
            logits.write(l.as_ptr());
            n_vocab.write(l.len());
        }
        Ok(())
    })
}

/// Samples the next token from the last logits with `params` (NULL: greedy) and writes it to
/// `*out_token`. The sampler's random state persists across calls while `params` is unchanged.
/// Does not evaluate the token.
///
/// # Safety
/// `session` must be NULL or a live handle; `params` NULL or initialised; `out_token` writable.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_sample(
    session: *mut emoe_session,
    params: *const emoe_sampling_params,
    out_token: *mut i32,
) -> emoe_status {
    with_session(session, |s| {
        if out_token.is_null() {
            return Err(invalid("`out_token` is NULL"));
        }
        // SAFETY: NULL or initialised by emoe_sampling_params_default.
        let p = unsafe { read_versioned(params, "params") }?;
        let same = matches!(&s.sampler, Some((old, _)) if format!("{old:?}") == format!("{p:?}"));
        if !same {
            s.sampler = Some((p, Sampler::new(p.to_rust())?));
        }
        let logits = s.session.logits();
        if logits.is_empty() {
            return Err(invalid("nothing evaluated yet"));
        }
        let (_, sampler) = s.sampler.as_mut().ok_or_else(|| invalid("no sampler"))?;
        let token = sampler.sample(logits, &s.history);
        // SAFETY: checked non-null.
        unsafe { out_token.write(token as i32) };
        Ok(())
    })
}

/// Generates a continuation of `prompt` (`prompt_len` bytes of UTF-8) after what the session
/// holds, calling `callback` with each piece of text (whole UTF-8 characters) on this thread.
/// `params` may be NULL for defaults; `stats` may be NULL, else its `struct_size` must be set
/// to `sizeof(emoe_generate_stats)` (versioned by size like `emoe_stats`). The stats are
/// written on success and also after `EMOE_STATUS_CANCELLED` (stop reason 5) and
/// `EMOE_STATUS_CONTEXT_FULL` (stop reason 3), with what was done before the stop.
/// `emoe_session_cancel` from another thread stops the whole call, prompt included.
/// The callback must not unwind (throw a C++ exception, longjmp) through this function.
///
/// # Safety
/// Pointers must be NULL or valid as described; the callback must be safe to call with
/// `user_data`.
#[no_mangle]
pub unsafe extern "C" fn emoe_session_generate(
    session: *mut emoe_session,
    prompt: *const c_char,
    prompt_len: usize,
    params: *const emoe_generate_params,
    callback: emoe_piece_callback,
    user_data: *mut c_void,
    stats: *mut emoe_generate_stats,
) -> emoe_status {
    with_session(session, |s| {
        // SAFETY: `prompt_len` readable bytes, by contract.
        let prompt = unsafe { str_arg(prompt, prompt_len, "prompt") }?;
        // SAFETY: NULL or initialised by emoe_generate_params_default.
        let p = unsafe { read_generate_params(params) }?;
        if !stats.is_null() {
            // Checks `stats->struct_size` before generating anything.
            // SAFETY: non-null; writable for its struct_size, by contract.
            unsafe { write_versioned(stats, emoe_generate_stats::default(), "stats") }?;
        }
        let mut stop = Vec::new();
        if p.n_stop > 0 {
            if p.stop.is_null() {
                return Err(invalid("`params.stop` is NULL with n_stop > 0"));
            }
            for i in 0..p.n_stop {
                // SAFETY: `n_stop` string pointers, by contract.
                let ptr = unsafe { p.stop.add(i).read() };
                // SAFETY: each a NUL-terminated string, by contract.
                stop.push(unsafe { cstr_arg(ptr, "stop string") }?.to_string());
            }
        }
        let gp = GenerateParams {
            max_tokens: p.max_tokens as usize,
            sampler: p.sampling.to_rust(),
            stop,
            add_bos: p.add_bos,
        };
        let model = s.session.model().clone();
        let tokenizer = model.tokenizer()?;
        let on_text = |text: &str| match callback {
            // SAFETY: the host's callback with its own user data; `text` outlives the call.
            Some(cb) => unsafe { cb(user_data, text.as_ptr().cast::<c_char>(), text.len()) },
            None => true,
        };
        let before = s.session.position();
        let start = std::time::Instant::now();
        let mut first_piece: Option<std::time::Instant> = None;
        let mut on_text = |text: &str| {
            first_piece.get_or_insert_with(std::time::Instant::now);
            on_text(text)
        };
        let result = s
            .session
            .cancellable(|session| generate(session, tokenizer, prompt, &gp, &mut on_text));
        let (out, error) = match result {
            Ok(st) => (
                emoe_generate_stats {
                    struct_size: std::mem::size_of::<emoe_generate_stats>() as u32,
                    prompt_tokens: st.prompt_tokens as u32,
                    generated_tokens: st.generated_tokens as u32,
                    prompt_seconds: st.prompt_seconds,
                    decode_seconds: st.decode_seconds,
                    stop_reason: match st.stop_reason {
                        StopReason::EndOfSequence => 0,
                        StopReason::MaxTokens => 1,
                        StopReason::StopString => 2,
                        StopReason::ContextFull => 3,
                        StopReason::Callback => 4,
                    },
                },
                None,
            ),
            Err(e @ (crate::Error::Cancelled | crate::Error::ContextFull { .. })) => {
                // What was done before the stop: the evaluated tokens past the prompt, and the
                // token sampled from the last of them.
                let evaluated = s.session.position() - before;
                let prompt_tokens = tokenizer
                    .encode(prompt, gp.add_bos)
                    .map_or(evaluated, |ids| ids.len());
                let generated = if evaluated >= prompt_tokens && evaluated > 0 {
                    evaluated - prompt_tokens + 1
                } else {
                    0
                };
                let total = start.elapsed().as_secs_f64();
                let prompt_seconds = first_piece.map_or(total, |t| (t - start).as_secs_f64());
                let out = emoe_generate_stats {
                    struct_size: std::mem::size_of::<emoe_generate_stats>() as u32,
                    prompt_tokens: prompt_tokens as u32,
                    generated_tokens: generated as u32,
                    prompt_seconds,
                    decode_seconds: total - prompt_seconds,
                    stop_reason: if matches!(e, crate::Error::Cancelled) {
                        5
                    } else {
                        3
                    },
                };
                (out, Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        if !stats.is_null() {
            // SAFETY: checked non-null; writable for its struct_size, by contract.
            unsafe { write_versioned(stats, out, "stats") }?;
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    })
}
