//! The C ABI. The only `extern "C"` code in the crate lives here.
//!
//! Every entry point runs inside `boundary`, which turns a panic into
//! `EMOE_STATUS_INTERNAL` so nothing unwinds into C. Results go to out-parameters, written only
//! on success. Error detail is kept per handle (not per thread: a Swift task may resume on
//! another thread) and read with `emoe_model_last_error` / `emoe_session_last_error`.

#![allow(non_camel_case_types)]

mod chat;
mod errors;
mod model;
mod params;
mod session;
mod stats;
mod vocab;

use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use parking_lot::Mutex;

pub use chat::*;
pub use errors::*;
pub use model::*;
pub use params::*;
pub use session::*;
pub use stats::*;
pub use vocab::*;

use crate::Error;

/// Result of every edgemoe C function. The numbers are stable and never reused. 32 bits wide
/// whatever the C compiler does with enums (`-fshort-enums`): in C the type is `int32_t`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum emoe_status {
    EMOE_STATUS_OK = 0,
    /// A null pointer, a wrong struct size, invalid UTF-8, an out-of-range value.
    EMOE_STATUS_INVALID_ARGUMENT = 1,
    /// Reading a file failed.
    EMOE_STATUS_IO = 2,
    /// The model file is truncated, corrupt or not a model.
    EMOE_STATUS_INVALID_FILE = 3,
    /// The model uses something edgemoe does not support.
    EMOE_STATUS_UNSUPPORTED = 4,
    /// The memory budget is too small to run the model.
    EMOE_STATUS_BUDGET_TOO_SMALL = 5,
    /// The session's context is full.
    EMOE_STATUS_CONTEXT_FULL = 6,
    /// The operation was cancelled (`emoe_session_cancel` or a progress callback).
    EMOE_STATUS_CANCELLED = 7,
    /// Tokenizing or detokenizing failed.
    EMOE_STATUS_TOKENIZER = 8,
    /// The output buffer is too small; the needed size was written where the function says.
    EMOE_STATUS_BUFFER_TOO_SMALL = 9,
    /// A bug in edgemoe (a caught panic). The handle stays valid but its state is unspecified.
    EMOE_STATUS_INTERNAL = 100,
}

use emoe_status::*;

impl From<&Error> for emoe_status {
    fn from(e: &Error) -> Self {
        match e {
            Error::Io { .. } => EMOE_STATUS_IO,
            Error::InvalidFile { .. } => EMOE_STATUS_INVALID_FILE,
            Error::Unsupported(_) => EMOE_STATUS_UNSUPPORTED,
            Error::Shape(_) => EMOE_STATUS_INVALID_FILE,
            Error::InvalidArgument(_) => EMOE_STATUS_INVALID_ARGUMENT,
            Error::Tokenizer(_) => EMOE_STATUS_TOKENIZER,
            Error::ContextFull { .. } => EMOE_STATUS_CONTEXT_FULL,
            Error::Cancelled => EMOE_STATUS_CANCELLED,
            Error::BudgetTooSmall { .. } => EMOE_STATUS_BUDGET_TOO_SMALL,
        }
    }
}

/// The last error of a handle, as a C string.
#[derive(Default)]
pub(crate) struct LastError(Mutex<Option<CString>>);

impl LastError {
    pub(crate) fn set(&self, message: &str) {
        let clean: String = message.chars().filter(|&c| c != '\0').collect();
        *self.0.lock() = CString::new(clean).ok();
    }

    pub(crate) fn clear(&self) {
        *self.0.lock() = None;
    }

    /// Pointer valid until the next call on the same handle.
    pub(crate) fn as_ptr(&self) -> *const c_char {
        match &*self.0.lock() {
            Some(s) => s.as_ptr(),
            None => c"".as_ptr(),
        }
    }
}

/// Runs `f`, turning errors into statuses (recorded in `err` when given) and panics into
/// `EMOE_STATUS_INTERNAL`.
pub(crate) fn boundary(
    err: Option<&LastError>,
    f: impl FnOnce() -> Result<(), Failure>,
) -> emoe_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            if let Some(e) = err {
                e.clear();
            }
            EMOE_STATUS_OK
        }
        Ok(Err(fail)) => {
            if let Some(e) = err {
                e.set(&fail.message);
            }
            fail.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            if let Some(e) = err {
                e.set(&format!("internal error: {what}"));
            }
            EMOE_STATUS_INTERNAL
        }
    }
}

/// A failed call: its status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: emoe_status,
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            status: (&e).into(),
            message: e.to_string(),
        }
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        status: EMOE_STATUS_INVALID_ARGUMENT,
        message: message.into(),
    }
}

/// A `&str` from a pointer and length (`len` bytes, need not be NUL-terminated).
///
/// # Safety
/// `ptr` must be null or point to `len` readable bytes.
pub(crate) unsafe fn str_arg<'a>(
    ptr: *const c_char,
    len: usize,
    what: &str,
) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return if len == 0 {
            Ok("")
        } else {
            Err(invalid(format!("`{what}` is NULL")))
        };
    }
    // SAFETY: the caller guarantees `len` readable bytes at `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
    std::str::from_utf8(bytes).map_err(|e| invalid(format!("`{what}` is not valid UTF-8: {e}")))
}

/// A `&str` from a NUL-terminated C string.
///
/// # Safety
/// `ptr` must be null or a valid NUL-terminated string.
pub(crate) unsafe fn cstr_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(invalid(format!("`{what}` is NULL")));
    }
    // SAFETY: the caller guarantees a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map_err(|e| invalid(format!("`{what}` is not valid UTF-8: {e}")))
}

/// The library version, e.g. "0.1.0". Static storage; never free it.
#[no_mangle]
pub extern "C" fn emoe_version() -> *const c_char {
    static VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(s) => s,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// ABI version of this library; compare with `EMOE_ABI_VERSION` from the header you built with.
#[no_mangle]
pub extern "C" fn emoe_abi_version() -> u32 {
    EMOE_ABI_VERSION
}

/// Bumped whenever a change breaks binary compatibility. 2: `emoe_model_stats` writes only
/// `out->struct_size` bytes, which the caller must set (version 1 ignored it). 3: so do
/// `emoe_model_info`, `emoe_model_preflight` and `emoe_session_generate` (its stats).
/// 4: `emoe_generate_params.sampling` is a pointer (it was embedded); a `struct_size` that is
/// no version's size, or a larger one setting unknown fields, is refused; `emoe_status` is
/// an `int32_t` in C.
pub const EMOE_ABI_VERSION: u32 = 4;

/// A short description of a status, e.g. "invalid argument". Static storage.
#[no_mangle]
pub extern "C" fn emoe_status_string(status: i32) -> *const c_char {
    // Takes an integer: a C caller may pass any value, which a Rust enum could not hold.
    let s: &CStr = match status {
        0 => c"ok",
        1 => c"invalid argument",
        2 => c"I/O error",
        3 => c"invalid model file",
        4 => c"unsupported model",
        5 => c"memory budget too small",
        6 => c"context full",
        7 => c"cancelled",
        8 => c"tokenizer error",
        9 => c"buffer too small",
        100 => c"internal error",
        _ => c"unknown status",
    };
    s.as_ptr()
}
