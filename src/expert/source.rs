//! How the forward pass reaches experts.
//!
//! The forward pass never touches expert bytes directly: it asks an [`ExpertSource`] for a
//! view of one expert. The resident source serves views straight from the mapped file; the
//! streaming source (`crate::stream`, reading experts from storage into a fixed buffer pool)
//! implements the same trait, which is what lets one forward pass serve both.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::layout::{ExpertDirectory, ExpertLoc, MatrixLoc, Precision};
use crate::format::GgufFile;
use crate::tensor::MatrixRef;
use crate::{Error, Result};

/// A view of one expert's three matrices, valid while it is held.
pub struct ExpertView<'a> {
    pub gate: MatrixRef<'a>,
    pub up: MatrixRef<'a>,
    pub down: MatrixRef<'a>,
    /// Keeps the expert's buffer pinned (for sources that reuse buffers).
    _pin: Option<Box<dyn Send + 'a>>,
}

impl<'a> ExpertView<'a> {
    /// A view over `bytes`, where `loc`'s offsets are relative to `base` (the file offset at
    /// which `bytes` starts). `pin` is dropped when the view is.
    pub fn new(
        loc: &ExpertLoc,
        base: u64,
        bytes: &'a [u8],
        pin: Option<Box<dyn Send + 'a>>,
    ) -> Result<Self> {
        let slice = |m: &MatrixLoc| -> Result<MatrixRef<'a>> {
            let start = m
                .offset
                .checked_sub(base)
                .ok_or_else(|| Error::Shape("expert matrix lies before its buffer".into()))?
                as usize;
            let end = start
                .checked_add(m.len as usize)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| Error::Shape("expert matrix lies past its buffer".into()))?;
            MatrixRef::new(m.ty, m.rows, m.cols, &bytes[start..end])
        };
        Ok(ExpertView {
            gate: slice(&loc.gate)?,
            up: slice(&loc.up)?,
            down: slice(&loc.down)?,
            _pin: pin,
        })
    }
}

/// Why reads are started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadKind {
    /// The running layer needs these experts now: start every read at once, so the forward
    /// pass can compute the experts in memory while the rest arrive. A later fetch counts as a
    /// miss.
    Demand,
    /// A prediction: read when room allows, protected from eviction until its layer has run.
    Preload,
}

/// How the forward pass reaches experts: the few operations it needs, each with the copy
/// (precision) it wants.
pub trait ExpertSource: Send + Sync {
    /// A short name for reports (`resident`, `streamed`, ...).
    fn name(&self) -> &'static str;

    /// Whether [`Precision::Low`] copies can be fetched.
    fn has_low_precision(&self) -> bool {
        false
    }

    /// The forward pass starts layer `layer` (before its experts are requested and fetched),
    /// so eviction policies measure layer distances from it.
    fn begin_layer(&self, _layer: usize) {}

    /// Starts reads of experts of `layer`: `high` at high and `low` at low precision, in one
    /// submission where the source has a device queue.
    fn request(&self, _layer: usize, _high: &[usize], _low: &[usize], _kind: ReadKind) {}

    /// Whether the expert's high-precision copy is in memory or being read, so fetching it
    /// costs no new read. Sources without a cache hold every expert.
    fn is_cached(&self, _layer: usize, _expert: usize) -> bool {
        true
    }

    /// Whether [`ExpertSource::get`] would return without waiting for I/O, so the forward
    /// pass can compute experts already in memory while the others are still being read.
    fn is_ready(&self, _layer: usize, _expert: usize, _precision: Precision) -> bool {
        true
    }

    /// A view of one expert's copy at `precision`; may block until its bytes are in memory.
    /// Gives up with [`Error::Cancelled`] instead of waiting on (or re-issuing) a read once
    /// `cancel` is set.
    fn get(
        &self,
        layer: usize,
        expert: usize,
        precision: Precision,
        cancel: &AtomicBool,
    ) -> Result<ExpertView<'_>>;

    /// Stops reads in flight where the source can (a session was cancelled).
    fn cancel_reads(&self) {}

    /// One line of figures (cache hits, bytes read, ...) for reports, if the source keeps any.
    fn stats_line(&self) -> Option<String> {
        None
    }
}

/// A shared source serves as a source, so a host can keep a handle (for statistics and a
/// new pool size) after giving one to a model.
impl<T: ExpertSource + ?Sized> ExpertSource for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn has_low_precision(&self) -> bool {
        (**self).has_low_precision()
    }
    fn begin_layer(&self, layer: usize) {
        (**self).begin_layer(layer)
    }
    fn request(&self, layer: usize, high: &[usize], low: &[usize], kind: ReadKind) {
        (**self).request(layer, high, low, kind)
    }
    fn is_cached(&self, layer: usize, expert: usize) -> bool {
        (**self).is_cached(layer, expert)
    }
    fn is_ready(&self, layer: usize, expert: usize, precision: Precision) -> bool {
        (**self).is_ready(layer, expert, precision)
    }
    fn get(
        &self,
        layer: usize,
        expert: usize,
        precision: Precision,
        cancel: &AtomicBool,
    ) -> Result<ExpertView<'_>> {
        (**self).get(layer, expert, precision, cancel)
    }
    fn cancel_reads(&self) {
        (**self).cancel_reads()
    }
    fn stats_line(&self) -> Option<String> {
        (**self).stats_line()
    }
}

/// Serves every expert from the memory-mapped model file.
pub struct ResidentExperts {
    file: Arc<GgufFile>,
    directory: Arc<ExpertDirectory>,
}

impl ResidentExperts {
    pub fn new(file: Arc<GgufFile>, directory: Arc<ExpertDirectory>) -> Self {
        ResidentExperts { file, directory }
    }
}

impl ExpertSource for ResidentExperts {
    fn name(&self) -> &'static str {
        "resident"
    }

    fn has_low_precision(&self) -> bool {
        self.directory.low_precision_type().is_some()
    }

    fn get(
        &self,
        layer: usize,
        expert: usize,
        precision: Precision,
        _cancel: &AtomicBool,
    ) -> Result<ExpertView<'_>> {
        let loc = self.directory.get_at(layer, expert, precision)?;
        ExpertView::new(loc, 0, self.file.bytes(), None)
    }
}
