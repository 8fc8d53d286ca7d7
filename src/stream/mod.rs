//! Expert streaming: experts are read from storage into a fixed, pinned pool of slots that is
//! also the expert cache (the EdgeMoE design), so a model larger than memory runs within a
//! fixed budget.
//!
//! [`StreamedExperts`] implements [`crate::expert::ExpertSource`]. Each expert has a precomputed *read plan*:
//! one aligned read of its span in edgemoe's packed layout, or three (gate, up, down) in
//! llama.cpp's merged layout, each the 4096-aligned superset of the bytes wanted, laid out in
//! the slot so a view can start at the right offset inside it.
//!
//! Concurrency: one mutex over the cache state, never held while waiting for I/O; a second
//! mutex serialises consumption of completions (whoever waits for a read holds it, others
//! reap opportunistically with `try_lock`), so no completion is lost between threads.

pub mod backend;
pub mod cache;
mod config;
mod fetch;
mod mmap;
pub mod pool;
mod pread;
pub mod rawread;
pub mod source;
mod state;
mod streamed;
#[cfg(all(target_os = "linux", not(target_os = "android")))]
mod uring;

pub use backend::{open_backend, Backend, BackendKind, Completion, ReadRequest};
pub use cache::{
    belady, compare_policies, compare_policies_with_preloads, replay, replay_with_preloads,
    AccessInfo, EvictionPolicy, FutureMin, Key, PolicyContext, PolicyKind, ReplayStats, ReplayStep,
};
pub use pool::{SlotPool, ALIGN};
pub use source::Source;

pub use crate::expert::{min_pool_bytes, slot_bytes};
pub use config::{StreamConfig, StreamStats};
pub use streamed::StreamedExperts;
