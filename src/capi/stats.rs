//! What a model needs (`emoe_model_preflight`, from the header alone) and what its expert
//! streaming did (`emoe_model_stats`).

use std::ffi::c_char;

use super::model::emoe_model;
use super::params::*;
use super::{boundary, cstr_arg, emoe_status, invalid};

/// What a model file needs, from its header alone (no weights are read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct emoe_preflight {
    pub struct_size: u32,
    /// Bytes of non-expert weights, always in memory.
    pub resident_bytes: u64,
    /// Bytes of all experts.
    pub expert_bytes: u64,
    /// KV cache for the context length asked for.
    pub kv_cache_bytes: u64,
    /// Working memory.
    pub scratch_bytes: u64,
    /// The smallest budget that runs the model with that context.
    pub min_budget: u64,
    /// A budget that holds every expert (nothing is read twice).
    pub full_budget: u64,
    /// The expert pool a budget of `memory_budget` would get (0 when below the minimum).
    pub pool_bytes: u64,
}

/// Tells, before loading, how much memory the model at `path` needs for `context_length`
/// tokens (0: the model's context, at most 2048), and the pool `memory_budget` would give.
///
/// Versioned by size like `emoe_stats`: set `out->struct_size` to `sizeof(emoe_preflight)`.
///
/// # Safety
/// `path` must be NULL or NUL-terminated; `out` NULL or writable for `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_preflight(
    path: *const c_char,
    memory_budget: u64,
    context_length: u32,
    out: *mut emoe_preflight,
) -> emoe_status {
    boundary(None, || {
        if out.is_null() {
            return Err(invalid("`out` is NULL"));
        }
        // SAFETY: NULL or NUL-terminated, by contract.
        let path = unsafe { cstr_arg(path, "path") }?;
        let ctx = (context_length > 0).then_some(context_length as usize);
        let p = crate::engine::model::preflight(std::path::Path::new(path), memory_budget, ctx)?;
        let r = emoe_preflight {
            struct_size: std::mem::size_of::<emoe_preflight>() as u32,
            resident_bytes: p.resident,
            expert_bytes: p.expert_bytes,
            kv_cache_bytes: p.kv_cache,
            scratch_bytes: p.scratch,
            min_budget: p.min_budget(),
            full_budget: p.full_budget(),
            pool_bytes: if memory_budget >= p.min_budget() {
                p.pool
            } else {
                0
            },
        };
        // SAFETY: NULL (checked inside) or writable for its struct_size, by contract.
        unsafe { write_versioned(out, r, "out") }
    })
}

/// Expert streaming figures since load (all zero for a model loaded without a budget).
///
/// Versioned by size: set `struct_size` to `sizeof(emoe_stats)` before calling
/// `emoe_model_stats`, which writes at most that many bytes (a caller built against an older,
/// shorter version gets the fields it knows) and sets `struct_size` to the number of bytes it
/// wrote (fields past it were not written: a library older than the caller's header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct emoe_stats {
    /// Set by the caller to `sizeof(emoe_stats)`; on return, the bytes written.
    pub struct_size: u32,
    /// Expert fetches by the forward pass: hits + preload_hits + misses.
    pub expert_fetches: u64,
    pub cache_hits: u64,
    pub preload_hits: u64,
    pub misses: u64,
    pub preloads: u64,
    pub wasted_preloads: u64,
    pub bytes_read: u64,
    pub read_errors: u64,
    /// Seconds the forward pass waited on I/O.
    pub io_wait_seconds: f64,
    /// Bytes per second while reads were in flight.
    pub read_bandwidth: f64,
    /// Bytes of the expert pool now.
    pub pool_bytes: u64,
    /// Reads stopped by a cancellation (`emoe_session_cancel`) before they finished.
    pub cancelled_reads: u64,
    /// Of `preloads`, experts read into empty pool slots ahead of need
    /// (`emoe_model_params.fill_ahead`).
    pub fill_reads: u64,
    /// Predicted experts not preloaded: put off while demand reads ran until their layer came,
    /// or not worth evicting another expert for (`emoe_model_params.budget_aware_preloads`).
    pub dropped_preloads: u64,
    /// Fetches of low-precision expert copies (lower precision on a miss fired,
    /// `emoe_model_params.low_precision_threshold`); counted in `expert_fetches` and in
    /// `cache_hits`/`misses` like any fetch.
    pub low_precision_fetches: u64,
    /// Low-precision copies read (a miss, or a preload of one).
    pub low_precision_reads: u64,
    /// Bytes those reads saved over reading the same experts at full precision.
    pub low_precision_bytes_saved: u64,
    /// Read requests completed (`bytes_read` is their aligned total).
    pub reads: u64,
    /// Fetches that had to wait for a read (a miss, or a preload still in flight).
    pub waits: u64,
    /// Seconds with at least one read in flight (`read_bandwidth` is `bytes_read` over it).
    pub io_busy_seconds: f64,
}

/// Writes the model's expert-streaming figures to `*out`, whose `struct_size` the caller sets
/// (see `emoe_stats`). A NULL `out` or a `struct_size` below 4 or above 65536 gives
/// `EMOE_STATUS_INVALID_ARGUMENT`.
///
/// # Safety
/// `model` must be NULL or a live handle; `out` NULL or writable for `out->struct_size` bytes.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_stats(
    model: *const emoe_model,
    out: *mut emoe_stats,
) -> emoe_status {
    // SAFETY: NULL or a live handle, by contract.
    let Some(m) = (unsafe { model.as_ref() }) else {
        return emoe_status::EMOE_STATUS_INVALID_ARGUMENT;
    };
    boundary(Some(&m.error), || {
        let mut r = emoe_stats::default();
        if let Some(st) = m.model.streamed() {
            let s = st.stats();
            r.expert_fetches = s.gets;
            r.cache_hits = s.hits;
            r.preload_hits = s.preload_hits;
            r.misses = s.misses;
            r.preloads = s.preloads;
            r.wasted_preloads = s.wasted_preloads;
            r.bytes_read = s.bytes_read;
            r.read_errors = s.read_errors;
            r.io_wait_seconds = s.io_wait.as_secs_f64();
            r.read_bandwidth = s.read_bandwidth();
            r.pool_bytes = st.pool_bytes();
            r.cancelled_reads = s.cancelled_reads;
            r.fill_reads = s.fill_reads;
            r.dropped_preloads = s.dropped_preloads;
            r.low_precision_fetches = s.low_gets;
            r.low_precision_reads = s.low_reads;
            r.low_precision_bytes_saved = s.low_bytes_saved;
            r.reads = s.reads;
            r.waits = s.waits;
            r.io_busy_seconds = s.io_busy.as_secs_f64();
        }
        // SAFETY: NULL (checked inside) or writable for its struct_size, by contract.
        unsafe { write_versioned(out, r, "out") }
    })
}

impl super::params::Versioned for emoe_preflight {}

impl super::params::Versioned for emoe_stats {
    fn older_versions() -> Vec<(usize, usize)> {
        use std::mem::offset_of as at;
        // ABI 2 ended with `pool_bytes`; then the low-precision counters were the last.
        vec![
            (at!(Self, cancelled_reads), at!(Self, cancelled_reads)),
            (at!(Self, reads), at!(Self, reads)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// `write_versioned` writes at most `struct_size` bytes and reports what it wrote.
    #[test]
    fn stats_are_written_up_to_the_callers_size() {
        let value = emoe_stats {
            expert_fetches: 1,
            low_precision_bytes_saved: 7,
            ..Default::default()
        };
        // An older caller: the struct up to `pool_bytes`, the previous version.
        let old = offset_of!(emoe_stats, cancelled_reads);
        let mut out = emoe_stats {
            struct_size: old as u32,
            cancelled_reads: 99,
            low_precision_bytes_saved: 99,
            ..Default::default()
        };
        // SAFETY: a valid, writable struct.
        unsafe { write_versioned(&mut out, value, "out") }.unwrap();
        assert_eq!(out.struct_size as usize, old);
        assert_eq!((out.expert_fetches, out.cancelled_reads), (1, 99));
        assert_eq!(out.low_precision_bytes_saved, 99);
        // The current caller, and one with a newer (larger) struct.
        for size in [size_of::<emoe_stats>(), size_of::<emoe_stats>() + 64] {
            let mut buf = vec![0xabu8; size_of::<emoe_stats>() + 64];
            buf[..4].copy_from_slice(&(size as u32).to_ne_bytes());
            let ptr = buf.as_mut_ptr().cast::<emoe_stats>();
            // SAFETY: writable for `size` bytes.
            unsafe { write_versioned(ptr, value, "out") }.unwrap();
            // SAFETY: the buffer holds a whole emoe_stats (possibly unaligned).
            let got = unsafe { ptr.read_unaligned() };
            assert_eq!(got.struct_size as usize, size_of::<emoe_stats>());
            assert_eq!(got.low_precision_bytes_saved, 7);
            assert!(buf[size_of::<emoe_stats>()..].iter().all(|&b| b == 0xab));
        }
        for size in [0u32, 3, 65537, u32::MAX] {
            let mut out = emoe_stats {
                struct_size: size,
                ..Default::default()
            };
            // SAFETY: a valid, writable struct.
            let r = unsafe { write_versioned(&mut out, value, "out") };
            assert!(matches!(r, Err(f) if f.status == emoe_status::EMOE_STATUS_INVALID_ARGUMENT));
            assert_eq!(out.expert_fetches, 0, "nothing written on failure");
        }
    }
}
