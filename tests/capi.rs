//! The C API called in-process (the same `extern "C"` functions the C header declares):
//! the streaming options of `emoe_model_params` take effect, every counter of `emoe_stats` is
//! filled, and `emoe_stats` is versioned by the caller's `struct_size`. (`tests/c_api.rs`
//! drives the API from C through CMake.)

mod common;

use common::*;
use edgemoe::capi::*;
use edgemoe::convert::{convert, ConvertOptions};
use edgemoe::tensor::GgmlType;
use std::ffi::{c_char, CStr, CString};
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::ptr::{null, null_mut};

use edgemoe::capi::emoe_status::*;

fn demo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/demo.gguf")
}

fn cpath(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn default_params() -> emoe_model_params {
    // SAFETY: a zeroed struct is valid (integers, floats, bools, null pointers, a None
    // callback) and the call overwrites all of it.
    let mut p: emoe_model_params = unsafe { std::mem::zeroed() };
    // SAFETY: writable.
    assert_eq!(unsafe { emoe_model_params_default(&mut p) }, EMOE_STATUS_OK);
    p
}

fn preflight(path: &Path, ctx: u32) -> emoe_preflight {
    let mut pf = emoe_preflight {
        struct_size: size_of::<emoe_preflight>() as u32,
        ..Default::default()
    };
    // SAFETY: a NUL-terminated path and a writable struct.
    let st = unsafe { emoe_model_preflight(cpath(path).as_ptr(), 0, ctx, &mut pf) };
    assert_eq!(st, EMOE_STATUS_OK);
    pf
}

/// An owned `emoe_model`.
struct Model(*mut emoe_model);

impl Model {
    fn load(path: &Path, params: &emoe_model_params) -> Model {
        let mut m = null_mut();
        let mut err = [0 as c_char; 256];
        // SAFETY: valid pointers and lengths.
        let st = unsafe {
            emoe_model_load(
                cpath(path).as_ptr(),
                params,
                &mut m,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        // SAFETY: NUL-terminated by emoe_model_load.
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
        assert_eq!(st, EMOE_STATUS_OK, "{msg:?}");
        Model(m)
    }

    fn stats(&self) -> emoe_stats {
        let mut s = emoe_stats {
            struct_size: size_of::<emoe_stats>() as u32,
            ..Default::default()
        };
        // SAFETY: a live handle, a writable struct of the size given.
        assert_eq!(unsafe { emoe_model_stats(self.0, &mut s) }, EMOE_STATUS_OK);
        assert_eq!(s.struct_size as usize, size_of::<emoe_stats>());
        assert_eq!(
            s.cache_hits + s.preload_hits + s.misses,
            s.expert_fetches,
            "{s:?}"
        );
        assert!(
            s.waits <= s.expert_fetches && s.reads <= s.bytes_read,
            "{s:?}"
        );
        assert_eq!(s.reads > 0, s.bytes_read > 0, "{s:?}");
        assert_eq!(s.reads > 0, s.io_busy_seconds > 0.0, "{s:?}");
        s
    }

    /// Greedy text after "ROMEO:" through `emoe_session_generate`.
    fn generate(&self, max_tokens: u32) -> String {
        let mut s = null_mut();
        // SAFETY: a live handle and a writable pointer.
        assert_eq!(
            unsafe { emoe_session_new(self.0, 64, &mut s) },
            EMOE_STATUS_OK
        );
        let mut gp = emoe_generate_params::default();
        // SAFETY: writable.
        unsafe { emoe_generate_params_default(&mut gp) };
        gp.max_tokens = max_tokens;
        unsafe extern "C" fn collect(
            user: *mut std::ffi::c_void,
            piece: *const c_char,
            len: usize,
        ) -> bool {
            // SAFETY: `user` is the String below; `piece` holds `len` bytes of UTF-8.
            unsafe {
                let text = &mut *user.cast::<String>();
                let bytes = std::slice::from_raw_parts(piece.cast::<u8>(), len);
                text.push_str(std::str::from_utf8(bytes).unwrap());
            }
            true
        }
        let mut text = String::new();
        // SAFETY: valid pointers; the callback gets the String as user data.
        let st = unsafe {
            emoe_session_generate(
                s,
                c"ROMEO:".as_ptr(),
                6,
                &gp,
                Some(collect),
                (&mut text as *mut String).cast(),
                null_mut(),
            )
        };
        assert_eq!(st, EMOE_STATUS_OK);
        // SAFETY: a live session, freed once.
        unsafe { emoe_session_free(s) };
        text
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: a live handle, freed once.
        unsafe { emoe_model_free(self.0) };
    }
}

/// `emoe_model_params.fill_ahead`: on, a streamed model reads experts into the empty pool
/// slots ahead of need (with room for every expert, as `tests/predict.rs` shows for the Rust
/// `LoadOptions`, and at a small budget, as `tests/stream.rs` shows for `StreamConfig`); off,
/// `fill_reads` stays 0. The synchronous mmap backend never fills. Greedy text is the same
/// either way.
#[test]
fn fill_ahead_param_switches_fill_reads() {
    let want = Model::load(&demo(), &default_params()).generate(16);
    let pf = preflight(&demo(), 64);
    let small = pf.min_budget + 4 * (pf.full_budget - pf.min_budget) / 10;
    for (backend, budget) in [
        (EMOE_BACKEND_PREAD, pf.full_budget),
        (EMOE_BACKEND_PREAD, small),
        (EMOE_BACKEND_MMAP, pf.full_budget),
    ] {
        for fill in [true, false] {
            let mut p = default_params();
            assert!(p.fill_ahead, "default on, as LoadOptions");
            p.backend = backend;
            p.memory_budget = budget;
            p.context_length = 64;
            p.use_mlock = false;
            p.fill_ahead = fill;
            let m = Model::load(&demo(), &p);
            assert_eq!(
                m.generate(16),
                want,
                "backend {backend} budget {budget} fill {fill}"
            );
            let s = m.stats();
            assert!(s.bytes_read > 0 && s.read_errors == 0, "{s:?}");
            assert!(s.fill_reads <= s.preloads, "{s:?}");
            if fill && backend != EMOE_BACKEND_MMAP {
                assert!(s.fill_reads > 0, "backend {backend} budget {budget}: {s:?}");
            } else {
                assert_eq!(s.fill_reads, 0, "backend {backend} fill {fill}: {s:?}");
            }
        }
    }
}

/// `emoe_model_params.budget_aware_preloads` is accepted both ways and never changes the
/// output (its mapping to `LoadOptions` is unit-tested in `src/capi/model.rs`); at a small
/// budget with look-ahead preloads, the stats stay consistent.
#[test]
fn budget_aware_preloads_param_loads_and_keeps_output() {
    let want = Model::load(&demo(), &default_params()).generate(16);
    let pf = preflight(&demo(), 64);
    for aware in [true, false] {
        let mut p = default_params();
        assert!(p.budget_aware_preloads, "default on, as LoadOptions");
        p.backend = EMOE_BACKEND_PREAD;
        p.memory_budget = pf.min_budget + (pf.full_budget - pf.min_budget) / 4;
        p.context_length = 64;
        p.use_mlock = false;
        p.budget_aware_preloads = aware;
        let m = Model::load(&demo(), &p);
        assert_eq!(m.generate(16), want, "budget_aware_preloads {aware}");
        let s = m.stats();
        assert!(s.preloads > 0 && s.read_errors == 0, "{s:?}");
        assert!(s.preloads >= s.fill_reads, "{s:?}");
    }
}

/// The mixtral fixture converted to f32 with q4_0 low-precision expert copies.
fn low_precision_file() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgemoe-capi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("mixtral-f32-low-q4_0.gguf");
    let opts = ConvertOptions {
        matrix_type: Some(GgmlType::F32),
        low_expert_type: Some(GgmlType::Q4_0),
        progress: None,
        ..Default::default()
    };
    convert(&fixture("mixtral").join("hf"), &out, &opts).unwrap();
    out
}

/// Runs the first reference prompt and 8 greedy tokens through `emoe_session_eval`.
fn eval_greedy(m: &Model) {
    let prompt = &reference("mixtral").prompts[0];
    let mut s = null_mut();
    // SAFETY: valid handles and pointers throughout.
    unsafe {
        assert_eq!(emoe_session_new(m.0, 64, &mut s), EMOE_STATUS_OK);
        let mut ids: Vec<i32> = prompt.ids.iter().map(|&t| t as i32).collect();
        for _ in 0..8 {
            assert_eq!(
                emoe_session_eval(s, ids.as_ptr(), ids.len()),
                EMOE_STATUS_OK
            );
            let (mut logits, mut n) = (null(), 0usize);
            assert_eq!(emoe_session_logits(s, &mut logits, &mut n), EMOE_STATUS_OK);
            ids = vec![argmax(std::slice::from_raw_parts(logits, n)) as i32];
        }
        emoe_session_free(s);
    }
}

/// Lower precision on a miss (HOBBIT) through the C API: with a pool of one token's experts
/// and the threshold at 1, low-precision fetches, reads and saved bytes reach `emoe_stats`
/// (top-1 experts stay at full precision, so not every fetch is low); with the option off
/// they stay 0.
#[test]
fn low_precision_counters_reach_emoe_stats() {
    let path = low_precision_file();
    let pf = preflight(&path, 64);
    for threshold in [1.0f32, -1.0] {
        let mut p = default_params();
        p.backend = EMOE_BACKEND_PREAD;
        p.memory_budget = pf.min_budget;
        p.context_length = 64;
        p.use_mlock = false;
        p.lookahead = 0;
        p.low_precision_threshold = threshold;
        let m = Model::load(&path, &p);
        eval_greedy(&m);
        let s = m.stats();
        if threshold >= 0.0 {
            assert!(
                s.low_precision_fetches > 0
                    && s.low_precision_reads > 0
                    && s.low_precision_bytes_saved > 0,
                "{s:?}"
            );
            assert!(s.low_precision_fetches < s.expert_fetches, "{s:?}");
        } else {
            assert_eq!(
                (
                    s.low_precision_fetches,
                    s.low_precision_reads,
                    s.low_precision_bytes_saved
                ),
                (0, 0, 0),
                "{s:?}"
            );
        }
        assert_eq!(s.cancelled_reads, 0, "{s:?}");
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

/// `emoe_model_stats` writes at most the caller's `struct_size` bytes and reports what it
/// wrote; NULL pointers and unset sizes are typed errors with a message, never a panic or a
/// write.
#[test]
fn stats_struct_size_and_null_pointers() {
    let pf = preflight(&demo(), 64);
    let mut p = default_params();
    p.backend = EMOE_BACKEND_PREAD;
    p.memory_budget = pf.min_budget;
    p.context_length = 64;
    p.use_mlock = false;
    let m = Model::load(&demo(), &p);
    m.generate(8);
    let full = m.stats();
    assert!(full.bytes_read > 0 && full.pool_bytes > 0, "{full:?}");

    // SAFETY: every pointer passed is NULL or valid as the contract asks.
    unsafe {
        let mut s = emoe_stats {
            struct_size: size_of::<emoe_stats>() as u32,
            ..Default::default()
        };
        assert_eq!(
            emoe_model_stats(null(), &mut s),
            EMOE_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            emoe_model_stats(m.0, null_mut()),
            EMOE_STATUS_INVALID_ARGUMENT
        );
        let msg = CStr::from_ptr(emoe_model_last_error(m.0)).to_str().unwrap();
        assert!(msg.contains("NULL"), "{msg}");
        for size in [0u32, 1, 3, 65537, u32::MAX] {
            let mut s = emoe_stats {
                struct_size: size,
                ..Default::default()
            };
            assert_eq!(emoe_model_stats(m.0, &mut s), EMOE_STATUS_INVALID_ARGUMENT);
            assert_eq!((s.struct_size, s.expert_fetches), (size, 0));
            let msg = CStr::from_ptr(emoe_model_last_error(m.0)).to_str().unwrap();
            assert!(msg.contains("struct_size"), "{msg}");
        }

        // A caller built against the previous header: the struct ended at `pool_bytes`.
        let old = offset_of!(emoe_stats, cancelled_reads);
        let mut buf = vec![0xabu8; size_of::<emoe_stats>() + 16];
        buf[..4].copy_from_slice(&(old as u32).to_ne_bytes());
        assert_eq!(
            emoe_model_stats(m.0, buf.as_mut_ptr().cast()),
            EMOE_STATUS_OK
        );
        assert!(
            buf[old..].iter().all(|&b| b == 0xab),
            "wrote past struct_size"
        );
        let got = buf.as_ptr().cast::<emoe_stats>().read_unaligned();
        assert_eq!(got.struct_size as usize, old);
        assert_eq!(
            (got.bytes_read, got.pool_bytes),
            (full.bytes_read, full.pool_bytes)
        );

        // A caller with a newer header (a longer struct): this library's fields, its size.
        let newer = size_of::<emoe_stats>() + 16;
        let mut buf = vec![0xabu8; newer];
        buf[..4].copy_from_slice(&(newer as u32).to_ne_bytes());
        assert_eq!(
            emoe_model_stats(m.0, buf.as_mut_ptr().cast()),
            EMOE_STATUS_OK
        );
        assert!(buf[size_of::<emoe_stats>()..].iter().all(|&b| b == 0xab));
        let got = buf.as_ptr().cast::<emoe_stats>().read_unaligned();
        assert_eq!(got.struct_size as usize, size_of::<emoe_stats>());
        // Every field was written (the sentinel bytes are gone).
        let sentinel = u64::from_ne_bytes([0xab; 8]);
        for v in [
            got.cancelled_reads,
            got.fill_reads,
            got.dropped_preloads,
            got.low_precision_fetches,
            got.low_precision_reads,
            got.low_precision_bytes_saved,
        ] {
            assert_ne!(v, sentinel, "{got:?}");
        }

        // A model loaded without a budget: every figure 0, the struct still versioned.
        let resident = Model::load(&demo(), &default_params());
        let s = resident.stats();
        assert_eq!((s.expert_fetches, s.fill_reads, s.pool_bytes), (0, 0, 0));

        // Model params: an unset size is a typed error, NULL params mean the defaults.
        let mut bad = default_params();
        bad.struct_size = 0;
        let mut out = null_mut();
        let path = cpath(&demo());
        let st = emoe_model_load(path.as_ptr(), &bad, &mut out, null_mut(), 0);
        assert_eq!((st, out), (EMOE_STATUS_INVALID_ARGUMENT, null_mut()));
        assert_eq!(
            emoe_model_load(path.as_ptr(), null(), &mut out, null_mut(), 0),
            EMOE_STATUS_OK
        );
        emoe_model_free(out);
    }
}

/// `emoe_model_last_error_copy` writes into the caller's buffer: truncated and NUL-terminated
/// when it is small, the full length reported; "" after a success; the length alone for a
/// NULL buffer of length 0. `emoe_model_last_error` gives the same text, from storage that
/// stays valid.
#[test]
fn model_errors_are_copied_into_caller_memory() {
    let model = Model::load(&demo(), &default_params());
    let mut piece = [0 as c_char; 8];
    let mut n = 0usize;
    // SAFETY: a live model and writable buffers.
    let st = unsafe { emoe_token_to_piece(model.0, -5, piece.as_mut_ptr(), piece.len(), &mut n) };
    assert_eq!(st, EMOE_STATUS_INVALID_ARGUMENT);
    let mut len = 0usize;
    // SAFETY: a NULL buffer of length 0 asks for the length.
    let st = unsafe { emoe_model_last_error_copy(model.0, null_mut(), 0, &mut len) };
    assert_eq!(st, EMOE_STATUS_OK);
    let mut full = vec![0 as c_char; len + 1];
    // SAFETY: writable for its length.
    let st =
        unsafe { emoe_model_last_error_copy(model.0, full.as_mut_ptr(), full.len(), null_mut()) };
    assert_eq!(st, EMOE_STATUS_OK);
    // SAFETY: NUL-terminated by the call.
    let text = unsafe { CStr::from_ptr(full.as_ptr()) }
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(text.len(), len);
    assert!(text.contains("-5"), "{text}");
    // SAFETY: a live model; the pointer stays valid.
    let interned = unsafe { CStr::from_ptr(emoe_model_last_error(model.0)) };
    assert_eq!(interned.to_str().unwrap(), text);
    let mut small = [0x7f as c_char; 5];
    let mut reported = 0usize;
    // SAFETY: writable for its length.
    let st = unsafe {
        emoe_model_last_error_copy(model.0, small.as_mut_ptr(), small.len(), &mut reported)
    };
    assert_eq!((st, reported), (EMOE_STATUS_OK, len));
    assert_eq!(small[4], 0);
    // SAFETY: NUL-terminated by the call.
    assert_eq!(
        unsafe { CStr::from_ptr(small.as_ptr()) }.to_bytes(),
        &text.as_bytes()[..4]
    );
    // SAFETY: a NULL buffer with a length is refused, a NULL model too.
    unsafe {
        assert_eq!(
            emoe_model_last_error_copy(model.0, null_mut(), 4, null_mut()),
            EMOE_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            emoe_model_last_error_copy(null(), small.as_mut_ptr(), 5, null_mut()),
            EMOE_STATUS_INVALID_ARGUMENT
        );
    }
    // A success clears it.
    let mut info = emoe_model_info {
        struct_size: size_of::<emoe_model_info>() as u32,
        ..Default::default()
    };
    // SAFETY: a live model and a writable struct.
    assert_eq!(
        unsafe { emoe_model_get_info(model.0, &mut info) },
        EMOE_STATUS_OK
    );
    // SAFETY: as above.
    let st = unsafe {
        emoe_model_last_error_copy(model.0, small.as_mut_ptr(), small.len(), &mut reported)
    };
    assert_eq!((st, reported, small[0]), (EMOE_STATUS_OK, 0, 0));
}

/// `emoe_session_truncate` and `emoe_session_tokens`: the session reports the tokens in its
/// cache; after truncating, evaluating the dropped tokens again gives bit-identical logits
/// (an undo-and-regenerate equals the uninterrupted session).
#[test]
fn truncate_and_token_history() {
    let m = Model::load(&demo(), &default_params());
    let ids: Vec<i32> = vec![1, 40, 41, 42, 43, 44, 45];
    let mut s = null_mut();
    // SAFETY: valid handles and pointers throughout.
    unsafe {
        assert_eq!(emoe_session_new(m.0, 32, &mut s), EMOE_STATUS_OK);
        assert_eq!(emoe_session_eval(s, ids.as_ptr(), 4), EMOE_STATUS_OK);
        assert_eq!(emoe_session_eval(s, ids[4..].as_ptr(), 3), EMOE_STATUS_OK);
        let logits = |s| {
            let (mut p, mut n) = (null(), 0usize);
            assert_eq!(emoe_session_logits(s, &mut p, &mut n), EMOE_STATUS_OK);
            std::slice::from_raw_parts(p, n).to_vec()
        };
        let first = logits(s);
        let mut n = 0usize;
        assert_eq!(
            emoe_session_tokens(s, null_mut(), 0, &mut n),
            EMOE_STATUS_BUFFER_TOO_SMALL
        );
        assert_eq!(n, 7);
        let mut got = vec![0i32; 7];
        assert_eq!(
            emoe_session_tokens(s, got.as_mut_ptr(), 7, &mut n),
            EMOE_STATUS_OK
        );
        assert_eq!(got, ids);
        // Undo the last three tokens, then evaluate other tokens, then the same ones again.
        assert_eq!(emoe_session_truncate(s, 4), EMOE_STATUS_OK);
        let mut pos = 0usize;
        assert_eq!(emoe_session_position(s, &mut pos), EMOE_STATUS_OK);
        assert_eq!(pos, 4);
        assert_eq!(emoe_session_eval(s, [50, 51].as_ptr(), 2), EMOE_STATUS_OK);
        assert_eq!(emoe_session_truncate(s, 4), EMOE_STATUS_OK);
        assert_eq!(emoe_session_eval(s, ids[4..].as_ptr(), 3), EMOE_STATUS_OK);
        assert_eq!(logits(s), first, "not bit-identical after truncate");
        assert_eq!(
            emoe_session_tokens(s, got.as_mut_ptr(), 7, &mut n),
            EMOE_STATUS_OK
        );
        assert_eq!(got, ids);
        // Truncating past the end changes nothing; NULL handles are refused.
        assert_eq!(emoe_session_truncate(s, 100), EMOE_STATUS_OK);
        assert_eq!(emoe_session_position(s, &mut pos), EMOE_STATUS_OK);
        assert_eq!(pos, 7);
        assert_eq!(
            emoe_session_truncate(null_mut(), 0),
            EMOE_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            emoe_session_tokens(s, null_mut(), 0, null_mut()),
            EMOE_STATUS_INVALID_ARGUMENT
        );
        emoe_session_free(s);
    }
}

/// `emoe_model_special_tokens`: BOS, EOS and the end-of-generation set of the model.
#[test]
fn special_tokens_of_the_model() {
    let m = Model::load(&demo(), &default_params());
    let (mut bos, mut eos, mut n) = (0i32, 0i32, 0usize);
    let mut eog = [0i32; 8];
    // SAFETY: valid handles and pointers throughout.
    unsafe {
        assert_eq!(
            emoe_model_special_tokens(m.0, &mut bos, &mut eos, null_mut(), 0, &mut n),
            EMOE_STATUS_BUFFER_TOO_SMALL
        );
        assert!(n >= 1);
        assert_eq!(
            emoe_model_special_tokens(m.0, &mut bos, &mut eos, eog.as_mut_ptr(), 8, &mut n),
            EMOE_STATUS_OK
        );
        assert_eq!(eog[0], eos, "EOS comes first");
        assert!(eos >= 0);
        assert_eq!(
            emoe_model_special_tokens(null(), &mut bos, &mut eos, null_mut(), 0, &mut n),
            EMOE_STATUS_INVALID_ARGUMENT
        );
        assert_eq!(
            emoe_model_special_tokens(m.0, null_mut(), &mut eos, null_mut(), 0, &mut n),
            EMOE_STATUS_INVALID_ARGUMENT
        );
    }
}
