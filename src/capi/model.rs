//! `emoe_model`: a loaded model.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use super::params::*;
use super::{boundary, cstr_arg, emoe_status, invalid, Failure, LastError};
use crate::engine::{LoadOptions, Model};

/// A loaded model: resident weights, the expert pool and cache, the I/O backend, the tokenizer.
///
/// Owned by the caller from `emoe_model_load*` until `emoe_model_free`. Thread-safe: any number
/// of threads may use one model at once (every function takes `const emoe_model *`); only
/// `emoe_model_set_memory_budget` changes it after load, and it is thread-safe too. Each
/// `emoe_session` keeps its model alive until the session is freed too. Error detail goes to
/// the caller's buffer (`emoe_model_last_error_copy`), never to memory another thread frees.
///
/// Functions: `emoe_model_load`, `emoe_model_load_fd`, `emoe_model_free`, `emoe_model_get_info`,
/// `emoe_model_set_memory_budget`, `emoe_model_stats`, `emoe_model_last_error_copy`,
/// `emoe_model_last_error` (deprecated), `emoe_tokenize`, `emoe_token_to_piece`, `emoe_session_new`.
pub struct emoe_model {
    pub(crate) model: Arc<Model>,
    pub(crate) error: LastError,
}

fn load_options<'a>(p: &emoe_model_params) -> Result<LoadOptions<'a>, Failure> {
    let backend = match p.backend {
        EMOE_BACKEND_AUTO => crate::engine::Backend::Auto,
        EMOE_BACKEND_RESIDENT => crate::engine::Backend::Resident,
        EMOE_BACKEND_IO_URING => crate::engine::Backend::IoUring,
        EMOE_BACKEND_PREAD => crate::engine::Backend::Pread,
        EMOE_BACKEND_MMAP => crate::engine::Backend::Mmap,
        other => return Err(invalid(format!("unknown backend {other}"))),
    };
    use crate::engine::predictor::{PredictionOptions, PredictorKind};
    use crate::stream::PolicyKind;
    let predictor = match p.predictor {
        _ if p.lookahead == 0 => PredictorKind::None,
        EMOE_PREDICTOR_LOOKAHEAD => PredictorKind::LookAhead,
        EMOE_PREDICTOR_STATS => PredictorKind::Stats,
        EMOE_PREDICTOR_NONE => PredictorKind::None,
        other => return Err(invalid(format!("unknown predictor {other}"))),
    };
    let policy = match p.policy {
        EMOE_POLICY_LRU => PolicyKind::Lru,
        EMOE_POLICY_LFU => PolicyKind::Lfu,
        EMOE_POLICY_EDGEMOE => PolicyKind::EdgeMoe,
        EMOE_POLICY_HOBBIT => PolicyKind::Hobbit,
        EMOE_POLICY_FORWARD => PolicyKind::Forward,
        EMOE_POLICY_ADAPTIVE => PolicyKind::Adaptive,
        other => return Err(invalid(format!("unknown policy {other}"))),
    };
    let threshold = p.low_precision_threshold;
    if threshold.is_nan() {
        return Err(invalid("`low_precision_threshold` is NaN"));
    }
    Ok(LoadOptions {
        memory_budget: (p.memory_budget > 0).then_some(p.memory_budget),
        backend,
        threads: p.n_threads as usize,
        mlock: p.use_mlock,
        context_length: (p.context_length > 0).then_some(p.context_length as usize),
        policy,
        prediction: PredictionOptions {
            predictor,
            depth: (p.lookahead as usize).max(1),
            preload_count: (p.preload_count > 0).then_some(p.preload_count as usize),
            ..Default::default()
        },
        low_precision_threshold: (threshold >= 0.0).then_some(threshold),
        fill_ahead: p.fill_ahead,
        budget_aware_preloads: p.budget_aware_preloads,
        ..Default::default()
    })
}

/// Calls the host's progress callback; false cancels.
fn progress_fn(p: &emoe_model_params) -> impl FnMut(f32) -> bool {
    let cb = p.progress;
    let data = p.progress_user_data as usize;
    move |fraction| match cb {
        // SAFETY: the host gave this callback and user data for exactly this use.
        Some(f) => unsafe { f(data as *mut c_void, fraction) },
        None => true,
    }
}

/// Loads the model at `path` (NUL-terminated UTF-8). `params` may be NULL for defaults.
/// On success writes a new handle to `*out_model`. On failure, when `error_buf` is not NULL,
/// writes a NUL-terminated message of at most `error_buf_len` bytes there.
///
/// # Safety
/// Pointers must be NULL or valid for their use as described.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_load(
    path: *const c_char,
    params: *const emoe_model_params,
    out_model: *mut *mut emoe_model,
    error_buf: *mut c_char,
    error_buf_len: usize,
) -> emoe_status {
    let err = LastError::default();
    let status = boundary(Some(&err), || {
        if out_model.is_null() {
            return Err(invalid("`out_model` is NULL"));
        }
        // SAFETY: the caller passes a NUL-terminated string or NULL (checked).
        let path = unsafe { cstr_arg(path, "path") }?;
        // SAFETY: forwarded contract.
        unsafe {
            load_into(params, out_model, |opts| {
                Model::load_with(std::path::Path::new(path), opts)
            })
        }
    });
    // SAFETY: the caller passes NULL or a buffer of `error_buf_len` bytes.
    unsafe { write_error(&err, error_buf, error_buf_len) };
    status
}

/// Loads a model from an open file descriptor: the GGUF file occupies `length` bytes starting
/// at `offset` (for Android assets and content URIs). The descriptor is duplicated; the
/// caller keeps ownership of `fd`. Otherwise as `emoe_model_load`: with a memory budget the
/// experts stream from the region (on Linux through a fresh O_DIRECT open of the same file,
/// so the caller's descriptor flags are untouched).
///
/// # Safety
/// Pointers must be NULL or valid for their use as described.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_load_fd(
    fd: i32,
    offset: u64,
    length: u64,
    params: *const emoe_model_params,
    out_model: *mut *mut emoe_model,
    error_buf: *mut c_char,
    error_buf_len: usize,
) -> emoe_status {
    let err = LastError::default();
    let status = boundary(Some(&err), || {
        if out_model.is_null() {
            return Err(invalid("`out_model` is NULL"));
        }
        if fd < 0 {
            return Err(invalid("`fd` is negative"));
        }
        let file = dup_fd(fd)?;
        // SAFETY: forwarded contract.
        unsafe {
            load_into(params, out_model, |opts| {
                Model::load_region(file, offset, length, opts)
            })
        }
    });
    // SAFETY: the caller passes NULL or a buffer of `error_buf_len` bytes.
    unsafe { write_error(&err, error_buf, error_buf_len) };
    status
}

/// Reads `params`, loads with `load` and writes the new handle to `*out_model`.
///
/// # Safety
/// `params` must be NULL or initialised by `emoe_model_params_default`; `out_model` non-null
/// and writable.
unsafe fn load_into(
    params: *const emoe_model_params,
    out_model: *mut *mut emoe_model,
    load: impl FnOnce(LoadOptions<'_>) -> crate::Result<Model>,
) -> Result<(), Failure> {
    // SAFETY: NULL or a struct initialised by emoe_model_params_default, by contract.
    let p = unsafe { read_versioned(params, "params") }?;
    let mut opts = load_options(&p)?;
    let mut progress = progress_fn(&p);
    opts.progress = Some(&mut progress);
    let handle = Box::new(emoe_model {
        model: Arc::new(load(opts)?),
        error: LastError::default(),
    });
    // SAFETY: non-null (checked by the callers); the caller provides a writable pointer.
    unsafe { out_model.write(Box::into_raw(handle)) };
    Ok(())
}

#[cfg(unix)]
fn dup_fd(fd: i32) -> Result<std::fs::File, Failure> {
    use std::os::fd::{BorrowedFd, OwnedFd};
    // SAFETY: the caller promises `fd` is open for the duration of this call; we only
    // duplicate it and never close the caller's descriptor.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let owned: OwnedFd = borrowed
        .try_clone_to_owned()
        .map_err(|e| Failure::from(crate::Error::io(format!("fd {fd}"), e)))?;
    Ok(std::fs::File::from(owned))
}

#[cfg(not(unix))]
fn dup_fd(_fd: i32) -> Result<std::fs::File, Failure> {
    Err(invalid(
        "loading from a file descriptor needs a Unix platform",
    ))
}

/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
unsafe fn write_error(err: &LastError, buf: *mut c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    let msg = err
        .0
        .lock()
        .as_ref()
        .map(|s| s.as_bytes().to_vec())
        .unwrap_or_default();
    let n = msg.len().min(len - 1);
    // SAFETY: `n + 1 <= len` bytes are written into the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr().cast::<c_char>(), buf, n);
        buf.add(n).write(0);
    }
}

/// Frees a model. NULL is a no-op. Sessions created from it stay valid until they are freed.
///
/// # Safety
/// `model` must be NULL or a handle from `emoe_model_load*` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_free(model: *mut emoe_model) {
    if model.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: a live handle from Box::into_raw, freed exactly once by contract.
        drop(unsafe { Box::from_raw(model) });
    }));
}

/// Deprecated: use `emoe_model_last_error_copy`. The message of the last failed call on
/// `model` ("" after a success or for NULL), as a string with static storage: the pointer stays
/// valid for the life of the process even while other threads use the model (the same text
/// gives the same pointer; after many distinct messages a fixed text asking for
/// `emoe_model_last_error_copy` is returned instead). With several threads failing at once the
/// message may be another thread's. Never free it.
///
/// # Safety
/// `model` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_last_error(model: *const emoe_model) -> *const c_char {
    // SAFETY: NULL or a live handle, by contract.
    match unsafe { model.as_ref() } {
        Some(m) => m.error.interned(),
        None => c"".as_ptr(),
    }
}

/// Writes what the model is into `*out`, whose `struct_size` the caller sets to
/// `sizeof(emoe_model_info)` (versioned by size like `emoe_stats`).
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or writable for `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_get_info(
    model: *const emoe_model,
    out: *mut emoe_model_info,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        let c = &m.model.config;
        let mut info = emoe_model_info::default();
        for (d, s) in info
            .architecture
            .iter_mut()
            .zip(c.family.name.bytes().take(31))
        {
            *d = s as c_char;
        }
        info.n_layers = c.n_layers as u32;
        info.n_experts = c.n_experts as u32;
        info.n_experts_used = c.n_experts_used as u32;
        info.hidden_size = c.hidden as u32;
        info.vocab_size = c.vocab as u32;
        info.context_length = c.context_length as u32;
        info.resident_bytes = m.model.resident_bytes;
        info.expert_bytes = m.model.expert_bytes();
        // SAFETY: NULL (checked inside) or writable for its struct_size, by contract.
        unsafe { write_versioned(out, info, "out") }
    })
}

/// Changes the memory budget of a model loaded with one (an app's memory-pressure callback).
/// Lowering evicts cached experts down to the new pool size before returning. A budget below
/// the minimum gives `EMOE_STATUS_BUDGET_TOO_SMALL` and leaves the model as it was. 0 means no
/// limit, as at load: the pool may hold every expert. A model loaded without a budget gives
/// `EMOE_STATUS_INVALID_ARGUMENT` (load it with one to stream its experts). Thread-safe.
///
/// # Safety
/// `model` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_set_memory_budget(
    model: *const emoe_model,
    memory_budget: u64,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        let budget = match (memory_budget, m.model.budget()) {
            // No limit: room for every expert on top of the fixed parts.
            (0, Some(plan)) => (plan.budget - plan.pool).saturating_add(plan.max_pool),
            _ => memory_budget,
        };
        Ok(m.model.set_memory_budget(budget)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn default_params_give_the_rust_defaults() {
        let o = load_options(&emoe_model_params::default()).unwrap();
        let d = LoadOptions::default();
        assert_eq!(
            (o.fill_ahead, o.budget_aware_preloads),
            (d.fill_ahead, d.budget_aware_preloads)
        );
        assert!(o.fill_ahead && o.budget_aware_preloads);
    }

    #[test]
    fn fill_ahead_and_budget_aware_preloads_reach_the_load_options() {
        for (fill, aware) in [(false, false), (false, true), (true, false), (true, true)] {
            let p = emoe_model_params {
                fill_ahead: fill,
                budget_aware_preloads: aware,
                ..Default::default()
            };
            let o = load_options(&p).unwrap();
            assert_eq!((o.fill_ahead, o.budget_aware_preloads), (fill, aware));
        }
    }

    /// The previous version of `emoe_model_params` ended with `low_precision_threshold`; its
    /// size (tail padding included) is what an older caller passes as `struct_size`. The new
    /// fields lie past it, so they take their defaults for such a caller whatever its padding
    /// bytes held.
    #[test]
    fn new_params_take_their_defaults_for_an_older_caller() {
        let old_size = (offset_of!(emoe_model_params, low_precision_threshold) + 4)
            .next_multiple_of(align_of::<emoe_model_params>());
        assert!(offset_of!(emoe_model_params, fill_ahead) >= old_size);
        assert!(offset_of!(emoe_model_params, budget_aware_preloads) >= old_size);
        let mut p = emoe_model_params {
            fill_ahead: false,
            budget_aware_preloads: false,
            ..Default::default()
        };
        p.struct_size = old_size as u32;
        // SAFETY: a valid struct, readable for its full size.
        let read = unsafe { read_versioned(&p, "params") }.unwrap();
        assert!(read.fill_ahead && read.budget_aware_preloads);
        assert!(size_of::<emoe_model_params>() > old_size);
    }

    /// Version 1 of `emoe_model_params` ended with `context_length`; on 64-bit targets its
    /// tail padding lies under `predictor`. A version-1 caller's garbage there must not
    /// choose a predictor.
    #[test]
    fn the_first_versions_tail_padding_is_not_read() {
        let v1 = offset_of!(emoe_model_params, predictor)
            .next_multiple_of(align_of::<emoe_model_params>());
        let mut p = emoe_model_params {
            predictor: 0xdead_beef,
            preload_count: 77,
            ..Default::default()
        };
        p.struct_size = v1 as u32;
        // SAFETY: a valid struct, readable for its full size.
        let read = unsafe { read_versioned(&p, "params") }.unwrap();
        assert_eq!(read.predictor, EMOE_PREDICTOR_LOOKAHEAD);
        assert_eq!(read.preload_count, 0);
        assert_eq!(read.context_length, p.context_length);
        load_options(&read).unwrap();
        // The current caller's fields are all read.
        p.struct_size = size_of::<emoe_model_params>() as u32;
        // SAFETY: as above.
        let read = unsafe { read_versioned(&p, "params") }.unwrap();
        assert_eq!((read.predictor, read.preload_count), (0xdead_beef, 77));
    }
}
