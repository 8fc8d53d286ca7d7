//! Versioned parameter structs. Each starts with `struct_size`, which the `_default` function
//! sets; fields past the caller's `struct_size` (an older header) take their defaults, so fields
//! can be added at the end without breaking callers.

use std::ffi::{c_char, c_void};

use super::{boundary, emoe_status, invalid, Failure};

/// Pick the best I/O backend available (io_uring on Linux, else a pread pool).
pub const EMOE_BACKEND_AUTO: u32 = 0;
/// Keep every expert in memory (memory-mapped file); no budget.
pub const EMOE_BACKEND_RESIDENT: u32 = 1;
/// io_uring with O_DIRECT and registered buffers (Linux).
pub const EMOE_BACKEND_IO_URING: u32 = 2;
/// A thread pool of positioned reads (all platforms).
pub const EMOE_BACKEND_PREAD: u32 = 3;
/// Copies from a memory map (the llama.cpp way; a baseline).
pub const EMOE_BACKEND_MMAP: u32 = 4;

/// Predict the next layer's experts by applying its router to the current hidden state.
pub const EMOE_PREDICTOR_LOOKAHEAD: u32 = 0;
/// EdgeMoE's routing statistics (the file needs a table written by `edgemoe profile`).
pub const EMOE_PREDICTOR_STATS: u32 = 1;
/// No prediction, no preloading.
pub const EMOE_PREDICTOR_NONE: u32 = 2;

/// Expert-cache eviction policies.
pub const EMOE_POLICY_LRU: u32 = 0;
pub const EMOE_POLICY_LFU: u32 = 1;
/// EdgeMoE: activation frequency weighted by forward layer distance.
pub const EMOE_POLICY_EDGEMOE: u32 = 2;
/// HOBBIT-style mix of recency, frequency and layer distance.
pub const EMOE_POLICY_HOBBIT: u32 = 3;
/// Frequency over the cubed forward layer distance (suits preloading).
pub const EMOE_POLICY_FORWARD: u32 = 4;
/// The default: the most used experts, compared as of the current token's start, ties evicting
/// the running layer's experts first; learns which layers predictions cover.
pub const EMOE_POLICY_ADAPTIVE: u32 = 5;

/// Called during loading with progress in [0, 1]; return false to cancel the load.
/// Called on the loading thread. It must not throw a C++ exception or otherwise unwind into
/// the library: catch inside and return false.
pub type emoe_progress_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, progress: f32) -> bool>;

/// Receives generated text, always whole UTF-8 characters (not NUL-terminated); return false
/// to stop generating. Called on the thread that called `emoe_session_generate`. It must not
/// throw a C++ exception or otherwise unwind into the library (that aborts the process or is
/// undefined behaviour): catch inside, return false, and rethrow after the call returns (as
/// edgemoe.hpp does).
pub type emoe_piece_callback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, piece: *const c_char, len: usize) -> bool>;

/// How to load a model. Initialise with `emoe_model_params_default`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct emoe_model_params {
    /// `sizeof(emoe_model_params)`, set by `emoe_model_params_default`.
    pub struct_size: u32,
    /// One of `EMOE_BACKEND_*`.
    pub backend: u32,
    /// Bytes the model may use in all (resident weights + KV cache + scratch + expert pool);
    /// 0 means no limit (as for `emoe_model_set_memory_budget`).
    pub memory_budget: u64,
    /// Threads for the kernels; 0 means the number of physical cores. At most four per
    /// logical CPU start (a larger count is clamped to that).
    pub n_threads: u32,
    /// Layers of router look-ahead used to preload experts; 0 turns preloading off.
    pub lookahead: u32,
    /// Lock the expert pool in memory where the OS allows.
    pub use_mlock: bool,
    pub progress: emoe_progress_callback,
    pub progress_user_data: *mut c_void,
    /// Tokens of KV cache the memory budget reserves for one session (0: the model's
    /// context length, at most 2048). Sessions should not ask for more.
    pub context_length: u32,
    /// One of `EMOE_PREDICTOR_*`: what chooses the experts preloaded while a layer computes
    /// (`lookahead` layers ahead).
    pub predictor: u32,
    /// Experts preloaded per token per predicted layer; 0: as many as a token uses.
    pub preload_count: u32,
    /// One of `EMOE_POLICY_*`.
    pub policy: u32,
    /// Lower precision on a miss (files converted with low-precision expert copies): a missed
    /// expert whose gate weight is below this share of the token's top-k mass, and that is
    /// not its top-1, is read and computed at low precision. Negative (the default): off.
    pub low_precision_threshold: f32,
    /// Unused. Keeps the fields below past the end of the struct's previous version, whose
    /// tail padding an older caller may have left uninitialised.
    pub reserved0: u32,
    /// Streaming: while the expert pool has empty slots, read the experts of the layers ahead
    /// into them (evicting nothing), overlapped with compute, so a cold cache fills at full
    /// bandwidth. Not with `EMOE_BACKEND_MMAP`. Default true (CLI `--no-fill-ahead` turns it
    /// off); `emoe_stats.fill_reads` counts those reads.
    pub fill_ahead: bool,
    /// Streaming: a predicted expert whose preload would evict another waits until no demand
    /// read is in flight, and is dropped when the device has no idle time for what wrong
    /// predictions waste (`emoe_stats.dropped_preloads`). Default true; false (CLI
    /// `--eager-preloads`): every prediction is preloaded at once, evicting if need be.
    pub budget_aware_preloads: bool,
}

impl Default for emoe_model_params {
    fn default() -> Self {
        let d = crate::engine::LoadOptions::default();
        emoe_model_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            backend: EMOE_BACKEND_AUTO,
            memory_budget: 0,
            n_threads: 0,
            lookahead: 1,
            use_mlock: true,
            progress: None,
            progress_user_data: std::ptr::null_mut(),
            context_length: 0,
            predictor: EMOE_PREDICTOR_LOOKAHEAD,
            preload_count: 0,
            policy: EMOE_POLICY_ADAPTIVE,
            low_precision_threshold: -1.0,
            reserved0: 0,
            fill_ahead: d.fill_ahead,
            budget_aware_preloads: d.budget_aware_preloads,
        }
    }
}

/// How to sample. Initialise with `emoe_sampling_params_default` (greedy). Passed by pointer
/// (`emoe_generate_params.sampling`, `emoe_session_sample`), so fields can be added.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct emoe_sampling_params {
    pub struct_size: u32,
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 turns top-k off.
    pub top_k: u32,
    /// 1 turns top-p off.
    pub top_p: f32,
    /// 0 turns min-p off.
    pub min_p: f32,
    /// 1 turns the repetition penalty off.
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: u32,
    pub seed: u64,
}

impl Default for emoe_sampling_params {
    fn default() -> Self {
        let d = crate::sampling::SamplerParams::default();
        emoe_sampling_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            temperature: d.temperature,
            top_k: d.top_k as u32,
            top_p: d.top_p,
            min_p: d.min_p,
            repeat_penalty: d.repeat_penalty,
            repeat_last_n: d.repeat_last_n as u32,
            seed: d.seed,
        }
    }
}

impl emoe_sampling_params {
    pub(crate) fn to_rust(self) -> crate::sampling::SamplerParams {
        crate::sampling::SamplerParams {
            temperature: self.temperature,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n as usize,
            seed: self.seed,
        }
    }
}

/// What `emoe_session_generate` does. Initialise with `emoe_generate_params_default`.
///
/// ABI 4: the sampling parameters are behind a pointer (they were embedded by value, so
/// `emoe_sampling_params` could never grow). A caller built against an older header still
/// works: its struct, of the old size, is read with the old layout.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct emoe_generate_params {
    pub struct_size: u32,
    /// Most new tokens.
    pub max_tokens: u32,
    /// Add the model's BOS token before the prompt when it uses one.
    pub add_bos: bool,
    /// How to sample: NULL for the defaults of `emoe_sampling_params_default` (greedy), else a
    /// struct initialised by it, read during the call only.
    pub sampling: *const emoe_sampling_params,
    /// `n_stop` NUL-terminated UTF-8 stop strings (may be NULL when `n_stop` is 0).
    pub stop: *const *const c_char,
    pub n_stop: usize,
}

impl Default for emoe_generate_params {
    fn default() -> Self {
        emoe_generate_params {
            struct_size: std::mem::size_of::<Self>() as u32,
            max_tokens: 128,
            add_bos: true,
            sampling: std::ptr::null(),
            stop: std::ptr::null(),
            n_stop: 0,
        }
    }
}

/// `emoe_generate_params` up to ABI 3, with the sampling parameters embedded. Read only.
#[repr(C)]
#[derive(Clone, Copy)]
struct GenerateParamsV1 {
    struct_size: u32,
    max_tokens: u32,
    add_bos: bool,
    sampling: emoe_sampling_params,
    stop: *const *const c_char,
    n_stop: usize,
}

/// `emoe_generate_params` as read from any version of the caller's header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GenerateRequest {
    pub max_tokens: u32,
    pub add_bos: bool,
    pub sampling: emoe_sampling_params,
    pub stop: *const *const c_char,
    pub n_stop: usize,
}

/// Reads `emoe_generate_params` of the current or the ABI-3 layout (told apart by size).
///
/// # Safety
/// `ptr` must be NULL or point to a struct initialised by `emoe_generate_params_default` of
/// some header version, readable for its `struct_size`; its `sampling` NULL or valid.
pub(crate) unsafe fn read_generate_params(
    ptr: *const emoe_generate_params,
) -> Result<GenerateRequest, Failure> {
    if !ptr.is_null() {
        // SAFETY: the first field is a readable u32 size, by contract.
        let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
        if size == std::mem::size_of::<GenerateParamsV1>() {
            // SAFETY: the caller's struct has the old layout and is readable for its size.
            let old = unsafe { ptr.cast::<GenerateParamsV1>().read_unaligned() };
            // SAFETY: the embedded struct is readable for its own struct_size.
            let sampling = unsafe { read_versioned(&old.sampling, "params.sampling") }?;
            return Ok(GenerateRequest {
                max_tokens: old.max_tokens,
                add_bos: old.add_bos,
                sampling,
                stop: old.stop,
                n_stop: old.n_stop,
            });
        }
    }
    // SAFETY: forwarded contract.
    let p = unsafe { read_versioned(ptr, "params") }?;
    // SAFETY: NULL or initialised by emoe_sampling_params_default, by contract.
    let sampling = unsafe { read_versioned(p.sampling, "params.sampling") }?;
    Ok(GenerateRequest {
        max_tokens: p.max_tokens,
        add_bos: p.add_bos,
        sampling,
        stop: p.stop,
        n_stop: p.n_stop,
    })
}

/// Figures of one `emoe_session_generate` call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct emoe_generate_stats {
    pub struct_size: u32,
    pub prompt_tokens: u32,
    pub generated_tokens: u32,
    pub prompt_seconds: f64,
    pub decode_seconds: f64,
    /// 0 end of sequence, 1 max tokens, 2 stop string, 3 context full, 4 callback asked to
    /// stop, 5 cancelled (`emoe_session_cancel`).
    pub stop_reason: u32,
}

/// The byte range `(a, b)` a struct of an older version may give as its size: from the end of
/// its last field `a` to `b`, its size with tail padding or the offset of the next version's
/// first field, whichever is larger.
fn version(last_field_end: usize, next_field: usize, align: usize) -> (usize, usize) {
    (
        last_field_end,
        last_field_end.next_multiple_of(align).max(next_field),
    )
}

/// A versioned struct (parameters read, or results written): its first field is a `u32` size.
pub(crate) trait Versioned: Copy {
    /// The sizes older versions of the struct may give, as ranges (see [`version`]).
    fn older_versions() -> Vec<(usize, usize)> {
        Vec::new()
    }

    /// Whether `size` is the size of a version this library knows (older or current). A size
    /// larger than the current one (a newer header) is checked by the caller.
    fn known_size(size: usize) -> bool {
        size == std::mem::size_of::<Self>()
            || Self::older_versions()
                .iter()
                .any(|&(a, b)| (a..=b).contains(&size))
    }
}

/// A parameter struct read by [`read_versioned`].
pub(crate) trait VersionedParams: Versioned + Default {
    /// Of a caller's `struct_size` bytes, how many hold fields that caller's version has.
    /// The same unless an older version's tail padding lies under a field added later: an
    /// older caller never initialised those bytes, so they must keep the defaults.
    fn known_bytes(struct_size: usize) -> usize {
        struct_size
    }
}

impl Versioned for emoe_model_params {
    fn older_versions() -> Vec<(usize, usize)> {
        use std::mem::offset_of as at;
        let align = std::mem::align_of::<Self>();
        vec![
            // The first version ended with the progress callback's user data.
            version(at!(Self, context_length), at!(Self, context_length), align),
            // Then `context_length`.
            version(at!(Self, context_length) + 4, at!(Self, predictor), align),
            // Then the prediction and cache-policy fields.
            version(
                at!(Self, low_precision_threshold) + 4,
                at!(Self, fill_ahead),
                align,
            ),
        ]
    }
}

impl VersionedParams for emoe_model_params {
    fn known_bytes(struct_size: usize) -> usize {
        // Version 2 ended with `context_length`; on 64-bit targets `predictor` (version 3)
        // sits in version 2's tail padding.
        let first = std::mem::offset_of!(emoe_model_params, predictor);
        let first_size = first.next_multiple_of(std::mem::align_of::<emoe_model_params>());
        if struct_size <= first_size {
            struct_size.min(first)
        } else {
            struct_size
        }
    }
}

impl Versioned for emoe_generate_params {}
impl VersionedParams for emoe_generate_params {}
impl Versioned for emoe_sampling_params {}
impl VersionedParams for emoe_sampling_params {}
impl Versioned for emoe_generate_stats {}
impl Versioned for emoe_model_info {}

/// The size a caller gave in a versioned struct's first field, checked: a version this library
/// knows, or larger than the current one (a newer header).
///
/// # Safety
/// `ptr` must be non-null with a readable `u32` first field.
unsafe fn checked_size<T: Versioned>(ptr: *const T, what: &str) -> Result<usize, Failure> {
    // SAFETY: the first field of every versioned struct is its u32 size, readable by contract.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
    let current = std::mem::size_of::<T>();
    if (size > current && size <= 65536) || T::known_size(size) {
        return Ok(size);
    }
    Err(invalid(format!(
        "`{what}.struct_size` is {size}, not the size of a version of the struct this library \
         knows (now {current}): initialise it with its _default function, or set it to its sizeof"
    )))
}

/// Reads a versioned struct: copies the fields of the caller's version (its first
/// `struct_size` bytes) over the defaults. A size that is not one of a version's is refused;
/// so is a larger one (a newer header) that sets fields this library does not know (its bytes
/// past the current struct are not all zero).
///
/// # Safety
/// `ptr` must be null or point to a struct whose first field is a `u32` size, readable for
/// that many bytes.
pub(crate) unsafe fn read_versioned<T: VersionedParams>(
    ptr: *const T,
    what: &str,
) -> Result<T, Failure> {
    let mut out = T::default();
    if ptr.is_null() {
        return Ok(out);
    }
    // SAFETY: non-null; forwarded contract.
    let size = unsafe { checked_size(ptr, what) }?;
    let current = std::mem::size_of::<T>();
    if size > current {
        // SAFETY: the caller guarantees `size` readable bytes.
        let tail =
            unsafe { std::slice::from_raw_parts(ptr.cast::<u8>().add(current), size - current) };
        if tail.iter().any(|&b| b != 0) {
            return Err(invalid(format!(
                "`{what}` sets fields this library does not know (struct_size {size}, this \
                 library's is {current}): use a library at least as new as the header"
            )));
        }
    }
    let n = T::known_bytes(size).min(current);
    // SAFETY: copying `n` bytes, at most the size of T and at most what the caller says is
    // readable, into a valid T made of plain-old-data fields (integers, floats, bools it set
    // from a T, pointers), as the _default function gave them.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut out as *mut T).cast::<u8>(), n);
    }
    Ok(out)
}

/// Writes a result struct whose first field is a `u32` size the caller set to the size of the
/// struct it allocated (`sizeof` in its header): copies at most that many bytes of `value`, so
/// a caller built against an older header (a shorter struct) gets only the fields it knows,
/// and sets `struct_size` in the caller's struct to the number of bytes written (a caller with
/// a newer header learns which fields this library filled). A size that is not one of a
/// version's (which would cut a field in half) is refused.
///
/// # Safety
/// `out` must be null or point to a struct whose first field is a `u32` size, writable for
/// that many bytes.
pub(crate) unsafe fn write_versioned<T: Versioned>(
    out: *mut T,
    value: T,
    what: &str,
) -> Result<(), Failure> {
    const { assert!(std::mem::size_of::<T>() >= 4) };
    if out.is_null() {
        return Err(invalid(format!("`{what}` is NULL")));
    }
    // SAFETY: non-null; the caller guarantees its first field, a u32 size, is readable.
    let size = unsafe { checked_size(out, what) }?;
    let n = size.min(std::mem::size_of::<T>());
    let mut v = value;
    // SAFETY: every versioned struct starts with its u32 size.
    unsafe { (&mut v as *mut T).cast::<u32>().write_unaligned(n as u32) };
    // SAFETY: `n` bytes, at most the size of T and at most what the caller says is writable.
    unsafe { std::ptr::copy_nonoverlapping((&v as *const T).cast::<u8>(), out.cast::<u8>(), n) };
    Ok(())
}

/// Writes `T::default()` through `out`.
///
/// # Safety
/// `out` must be NULL or writable.
unsafe fn write_default<T: Default>(out: *mut T) -> emoe_status {
    boundary(None, || {
        if out.is_null() {
            return Err(invalid("`out` is NULL"));
        }
        // SAFETY: checked non-null; the caller guarantees it is writable.
        unsafe { out.write(T::default()) };
        Ok(())
    })
}

/// Writes the defaults (and `struct_size`) into `*out`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for the struct.
#[no_mangle]
pub unsafe extern "C" fn emoe_model_params_default(out: *mut emoe_model_params) -> emoe_status {
    // SAFETY: forwarded contract.
    unsafe { write_default(out) }
}

/// Writes the defaults (and `struct_size`) into `*out`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for the struct.
#[no_mangle]
pub unsafe extern "C" fn emoe_sampling_params_default(
    out: *mut emoe_sampling_params,
) -> emoe_status {
    // SAFETY: forwarded contract.
    unsafe { write_default(out) }
}

/// Writes the defaults (and `struct_size`) into `*out`.
///
/// # Safety
/// `out` must be NULL or point to writable memory for the struct.
#[no_mangle]
pub unsafe extern "C" fn emoe_generate_params_default(
    out: *mut emoe_generate_params,
) -> emoe_status {
    // SAFETY: forwarded contract.
    unsafe { write_default(out) }
}

impl Default for emoe_model_info {
    fn default() -> Self {
        emoe_model_info {
            struct_size: std::mem::size_of::<Self>() as u32,
            architecture: [0; 32],
            n_layers: 0,
            n_experts: 0,
            n_experts_used: 0,
            hidden_size: 0,
            vocab_size: 0,
            context_length: 0,
            resident_bytes: 0,
            expert_bytes: 0,
        }
    }
}

/// What a model is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct emoe_model_info {
    pub struct_size: u32,
    /// NUL-terminated family name: "mixtral", "qwen2_moe", "qwen3_moe", "olmoe".
    pub architecture: [c_char; 32],
    pub n_layers: u32,
    pub n_experts: u32,
    pub n_experts_used: u32,
    pub hidden_size: u32,
    pub vocab_size: u32,
    pub context_length: u32,
    /// Bytes of weights kept in memory (everything but the experts).
    pub resident_bytes: u64,
    /// Bytes of all experts.
    pub expert_bytes: u64,
}
