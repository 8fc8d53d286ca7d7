//! How to stream experts ([`StreamConfig`]) and what streaming did ([`StreamStats`]).

#![forbid(unsafe_code)]

use std::time::Duration;

use super::backend::BackendKind;
use super::cache::PolicyKind;

/// How to stream experts.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Bytes of the expert pool (rounded down to whole slots).
    pub pool_bytes: u64,
    pub backend: BackendKind,
    pub policy: PolicyKind,
    /// Reads in flight at once (io_uring uses at least 8; the pread pool uses up to 4
    /// threads).
    pub queue_depth: usize,
    /// Pin the pool in RAM where `RLIMIT_MEMLOCK` allows.
    pub mlock: bool,
    /// While the pool has empty slots, keep reading the experts of the layers ahead into them
    /// (a read into an empty slot evicts nothing), so a cold cache fills at full bandwidth,
    /// overlapped with compute. Not with synchronous backends (mmap).
    pub fill_ahead: bool,
    /// Preloads that would evict another expert wait until no demand read is in flight (a
    /// speculative read only competes with demand reads that keep the device busy), and are
    /// dropped when a layer pass leaves the device no idle time for what wrong predictions
    /// waste. Off: every prediction is preloaded at once, evicting if need be.
    pub budget_aware_preloads: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            pool_bytes: 256 << 20,
            backend: BackendKind::Auto,
            policy: PolicyKind::default(),
            queue_depth: 16,
            mlock: true,
            fill_ahead: true,
            budget_aware_preloads: true,
        }
    }
}

/// What streaming did, cumulative since open or the last [`super::StreamedExperts::reset_stats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamStats {
    /// Expert fetches by the forward pass: `hits + preload_hits + misses`.
    pub gets: u64,
    /// Fetches served by the cache: the expert stayed loaded since an earlier use.
    pub hits: u64,
    /// Fetches served by a preload (already loaded or still in flight).
    pub preload_hits: u64,
    /// Fetches that issued a demand read.
    pub misses: u64,
    /// Fetches that had to wait for a read (a miss, or a preload still in flight).
    pub waits: u64,
    /// Experts read because of `prefetch`.
    pub preloads: u64,
    /// Preloaded experts evicted without being used. (A prediction that missed its layer but
    /// whose expert a later pass uses counts as a preload hit then: the read was needed.)
    pub wasted_preloads: u64,
    /// Of `preloads`, experts read into empty slots ahead of need ([`StreamConfig::fill_ahead`]).
    pub fill_reads: u64,
    /// Predicted experts not preloaded: put off while demand reads ran until their layer came,
    /// or not worth evicting another expert for ([`StreamConfig::budget_aware_preloads`]).
    pub dropped_preloads: u64,
    /// Completed read requests and their bytes (aligned, as read from storage).
    pub reads: u64,
    pub bytes_read: u64,
    /// Reads that failed.
    pub read_errors: u64,
    /// Reads stopped by a cancellation before they finished.
    pub cancelled_reads: u64,
    /// Fetches of low-precision copies (lower precision on a miss fired): counted in `gets`
    /// and in `hits`/`misses` like any fetch.
    pub low_gets: u64,
    /// Low-precision copies read (a miss, or a preload of one).
    pub low_reads: u64,
    /// Bytes those reads saved over reading the same experts at high precision.
    pub low_bytes_saved: u64,
    /// Time the forward pass spent blocked on I/O.
    pub io_wait: Duration,
    /// Wall time with at least one read in flight.
    pub io_busy: Duration,
}

impl StreamStats {
    /// Fraction of fetches the cache served without reading (preloads excluded).
    pub fn hit_rate(&self) -> f64 {
        if self.gets == 0 {
            0.0
        } else {
            self.hits as f64 / self.gets as f64
        }
    }

    /// Achieved read bandwidth in bytes per second (bytes read over time with reads in
    /// flight).
    pub fn read_bandwidth(&self) -> f64 {
        let t = self.io_busy.as_secs_f64();
        if t > 0.0 {
            self.bytes_read as f64 / t
        } else {
            0.0
        }
    }
}
