//! Tokens of an `emoe_model`: text to token ids and back.

use std::ffi::c_char;

use super::model::emoe_model;
use super::{boundary, emoe_status, invalid, str_arg, Failure};

/// Tokenizes `len` bytes of UTF-8 `text`. Writes up to `capacity` ids to `tokens` and the
/// number of ids to `*n_tokens`; when `capacity` is too small, writes the needed count to
/// `*n_tokens` and returns `EMOE_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// Pointers must be NULL or valid for the given lengths.
#[no_mangle]
pub unsafe extern "C" fn emoe_tokenize(
    model: *const emoe_model,
    text: *const c_char,
    len: usize,
    add_bos: bool,
    tokens: *mut i32,
    capacity: usize,
    n_tokens: *mut usize,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        if n_tokens.is_null() || (tokens.is_null() && capacity > 0) {
            return Err(invalid(
                "`n_tokens` is NULL, or `tokens` is NULL with a capacity",
            ));
        }
        // SAFETY: `len` readable bytes at `text`, by contract.
        let text = unsafe { str_arg(text, len, "text") }?;
        let ids = m.model.tokenizer()?.encode(text, add_bos)?;
        // SAFETY: checked non-null.
        unsafe { n_tokens.write(ids.len()) };
        if ids.len() > capacity {
            return Err(Failure {
                status: emoe_status::EMOE_STATUS_BUFFER_TOO_SMALL,
                message: format!("{} tokens do not fit in {capacity}", ids.len()),
            });
        }
        for (i, &id) in ids.iter().enumerate() {
            // SAFETY: i < ids.len() <= capacity elements of the caller's buffer.
            unsafe { tokens.add(i).write(id as i32) };
        }
        Ok(())
    })
}

/// Writes the bytes token `token` stands for (not NUL-terminated; may be part of a UTF-8
/// character) to `buf` and their count to `*len`. When `capacity` is too small, writes the
/// needed count and returns `EMOE_STATUS_BUFFER_TOO_SMALL`.
///
/// # Safety
/// Pointers must be NULL or valid for the given lengths.
#[no_mangle]
pub unsafe extern "C" fn emoe_token_to_piece(
    model: *const emoe_model,
    token: i32,
    buf: *mut c_char,
    capacity: usize,
    len: *mut usize,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        if len.is_null() || (buf.is_null() && capacity > 0) {
            return Err(invalid("`len` is NULL, or `buf` is NULL with a capacity"));
        }
        let id = u32::try_from(token).map_err(|_| invalid(format!("token {token} is negative")))?;
        let piece = m.model.tokenizer()?.token_to_piece(id)?;
        // SAFETY: checked non-null.
        unsafe { len.write(piece.len()) };
        if piece.len() > capacity {
            return Err(Failure {
                status: emoe_status::EMOE_STATUS_BUFFER_TOO_SMALL,
                message: format!("piece of {} bytes does not fit in {capacity}", piece.len()),
            });
        }
        // SAFETY: piece.len() <= capacity bytes of the caller's buffer.
        unsafe { std::ptr::copy_nonoverlapping(piece.as_ptr().cast::<c_char>(), buf, piece.len()) };
        Ok(())
    })
}

/// The model's special tokens: `*bos` and `*eos` get the BOS and (main) EOS ids, -1 when the
/// model has none; up to `capacity` end-of-generation ids (EOS and the special tokens that end
/// a chat turn, such as `<|im_end|>`: `emoe_session_generate` stops at any of them) go to
/// `eog`, and their number to `*n_eog` (`EMOE_STATUS_BUFFER_TOO_SMALL` when `capacity` is
/// smaller; `eog` may then be NULL).
///
/// # Safety
/// `model` NULL or a live handle; `bos`, `eos`, `n_eog` NULL or writable; `eog` NULL or
/// writable for `capacity` ids.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_special_tokens(
    model: *const emoe_model,
    bos: *mut i32,
    eos: *mut i32,
    eog: *mut i32,
    capacity: usize,
    n_eog: *mut usize,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        if bos.is_null() || eos.is_null() || n_eog.is_null() || (eog.is_null() && capacity > 0) {
            return Err(invalid(
                "`bos`, `eos` or `n_eog` is NULL, or `eog` is NULL with a capacity",
            ));
        }
        let t = m.model.tokenizer()?;
        let ids = t.eog_ids();
        // SAFETY: checked non-null; writable by contract.
        unsafe {
            bos.write(t.bos_id().map_or(-1, |b| b as i32));
            eos.write(t.eos_ids().first().map_or(-1, |&e| e as i32));
            n_eog.write(ids.len());
        }
        if ids.len() > capacity {
            return Err(Failure {
                status: emoe_status::EMOE_STATUS_BUFFER_TOO_SMALL,
                message: format!(
                    "{} end-of-generation ids do not fit in {capacity}",
                    ids.len()
                ),
            });
        }
        for (i, &id) in ids.iter().enumerate() {
            // SAFETY: `i < ids.len() <= capacity` ids are writable at `eog`, by contract.
            unsafe { eog.add(i).write(id as i32) };
        }
        Ok(())
    })
}
