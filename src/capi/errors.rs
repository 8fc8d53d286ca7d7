//! Error detail of a handle shared across threads (the model), read without a race.
//!
//! A model's last error is replaced by any thread's next failing call, so a pointer into it
//! would dangle. `emoe_model_last_error_copy` copies the message into the caller's buffer under
//! the handle's lock; the older `emoe_model_last_error` returns an interned copy that lives as
//! long as the process (a bounded number of distinct messages; past that a fixed text).

use std::collections::HashSet;
use std::ffi::{c_char, CStr, CString};

use parking_lot::Mutex;

use super::{emoe_model, emoe_status, LastError};

/// Distinct messages kept by the interner before it answers with [`OVERFLOW`].
const MAX_INTERNED: usize = 1024;
/// Bytes of messages kept by the interner before it answers with [`OVERFLOW`].
const MAX_INTERNED_BYTES: usize = 256 * 1024;
const OVERFLOW: &CStr = c"(error detail unavailable here: read it with emoe_model_last_error_copy)";

struct Interner {
    set: HashSet<&'static CStr>,
    bytes: usize,
}

static INTERNED: Mutex<Option<Interner>> = Mutex::new(None);

/// A copy of `message` that is never freed: the same pointer for the same text.
fn intern(message: &CStr) -> *const c_char {
    if message.is_empty() {
        return c"".as_ptr();
    }
    let mut guard = INTERNED.lock();
    let table = guard.get_or_insert_with(|| Interner {
        set: HashSet::new(),
        bytes: 0,
    });
    if let Some(s) = table.set.get(message) {
        return s.as_ptr();
    }
    let len = message.to_bytes_with_nul().len();
    if table.set.len() >= MAX_INTERNED || table.bytes + len > MAX_INTERNED_BYTES {
        return OVERFLOW.as_ptr();
    }
    // Leaked on purpose: the pointer was handed to C with the promise that it stays valid.
    let leaked: &'static CStr = Box::leak(CString::from(message).into_boxed_c_str());
    table.set.insert(leaked);
    table.bytes += len;
    leaked.as_ptr()
}

impl LastError {
    /// The current message, interned (valid for the life of the process).
    pub(crate) fn interned(&self) -> *const c_char {
        match &*self.0.lock() {
            Some(s) => intern(s),
            None => c"".as_ptr(),
        }
    }

    /// Copies the current message into `buf` (`len` bytes, NUL-terminated, truncated to fit)
    /// under the lock; returns the message's full length.
    ///
    /// # Safety
    /// `buf` must be NULL or writable for `len` bytes.
    pub(crate) unsafe fn copy_to(&self, buf: *mut c_char, len: usize) -> usize {
        let guard = self.0.lock();
        let msg = guard.as_deref().map_or(&[][..], CStr::to_bytes);
        if !buf.is_null() && len > 0 {
            let n = msg.len().min(len - 1);
            // SAFETY: `n + 1 <= len` bytes of the caller's buffer.
            unsafe {
                std::ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), buf, n);
                buf.add(n).write(0);
            }
        }
        msg.len()
    }
}

/// Copies the message of the last failed call on `model` into `buf` (at most `buf_len` bytes,
/// always NUL-terminated when `buf_len > 0`, truncated to fit) and writes its full length
/// (without the NUL) to `*out_len` when `out_len` is not NULL. "" after a success. `buf` may be
/// NULL with `buf_len` 0 to ask for the length. Safe while other threads use the model; with
/// several threads failing at once the message may be another thread's.
///
/// # Safety
/// `model` must be NULL or a live handle; `buf` NULL or writable for `buf_len` bytes; `out_len`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_last_error_copy(
    model: *const emoe_model,
    buf: *mut c_char,
    buf_len: usize,
    out_len: *mut usize,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    if buf.is_null() && buf_len > 0 {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    }
    let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: NULL or writable for `buf_len` bytes, by contract.
        unsafe { m.error.copy_to(buf, buf_len) }
    }));
    match copied {
        Ok(n) => {
            if !out_len.is_null() {
                // SAFETY: non-null and writable, by contract.
                unsafe { out_len.write(n) };
            }
            emoe_status::EMOE_STATUS_OK
        }
        Err(_) => emoe_status::EMOE_STATUS_INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_interns_to_the_same_pointer_and_the_table_is_bounded() {
        let a = intern(c"errors-test: one");
        assert_eq!(a, intern(c"errors-test: one"));
        // SAFETY: interned strings live for the process.
        assert_eq!(unsafe { CStr::from_ptr(a) }, c"errors-test: one");
        let mut last = a;
        for i in 0..MAX_INTERNED + 10 {
            let s = CString::new(format!("errors-test: {i}")).unwrap();
            last = intern(&s);
        }
        assert_eq!(last, OVERFLOW.as_ptr());
    }
}
