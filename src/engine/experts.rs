//! Where experts live and how the engine reaches them.
//!
//! The forward pass never touches expert bytes directly: it asks an [`ExpertSource`] for a
//! view of one expert. The resident source serves views straight from the mapped file; a
//! streaming source (reading experts from storage into a fixed buffer pool) implements the
//! same trait, which is what lets one forward pass serve both.

use std::path::Path;
use std::sync::Arc;

use super::config::ModelConfig;
use crate::format::{GgufFile, GgufHeader};
use crate::tensor::{GgmlType, MatrixRef};
use crate::{Error, Result};

/// Where one expert matrix lies in the model file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatrixLoc {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Absolute offset in the file.
    pub offset: u64,
    pub len: u64,
}

/// Where the three matrices of one expert lie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertLoc {
    pub gate: MatrixLoc,
    pub up: MatrixLoc,
    pub down: MatrixLoc,
}

impl ExpertLoc {
    /// The byte range `[start, end)` covering all three matrices. In edgemoe's layout they are
    /// back to back, so this is one read; in llama.cpp's merged layout it is far larger.
    pub fn span(&self) -> (u64, u64) {
        let mats = [self.gate, self.up, self.down];
        let start = mats.iter().map(|m| m.offset).min().unwrap_or(0);
        let end = mats.iter().map(|m| m.offset + m.len).max().unwrap_or(0);
        (start, end)
    }

    /// Bytes of weights in this expert.
    pub fn bytes(&self) -> u64 {
        self.gate.len + self.up.len + self.down.len
    }

    /// Whether the three matrices are contiguous up to alignment padding, so one read of
    /// [`ExpertLoc::span`] fetches the expert without reading other experts' bytes.
    pub fn is_packed(&self) -> bool {
        let (start, end) = self.span();
        end - start < self.bytes() + 3 * 4096
    }
}

/// Every expert's location, computed at load from the tensor directory.
#[derive(Clone, Debug)]
pub struct ExpertDirectory {
    pub n_layers: usize,
    pub n_experts: usize,
    entries: Vec<ExpertLoc>,
}

impl ExpertDirectory {
    /// Builds the directory from either layout, checking every expert's shape and type.
    pub fn from_gguf(h: &GgufHeader, cfg: &ModelConfig, path: &Path) -> Result<Self> {
        let (hid, ffn) = (cfg.hidden, cfg.expert_ffn);
        let mut entries = Vec::with_capacity(cfg.n_layers * cfg.n_experts);
        for l in 0..cfg.n_layers {
            let packed = h.tensor(&format!("blk.{l}.ffn_gate.0.weight")).is_some();
            for e in 0..cfg.n_experts {
                let loc = |kind: &str, rows: usize, cols: usize| -> Result<MatrixLoc> {
                    if packed {
                        let name = format!("blk.{l}.ffn_{kind}.{e}.weight");
                        let t = h.tensor(&name).ok_or_else(|| {
                            Error::invalid_file(path, format!("missing tensor `{name}`"))
                        })?;
                        if t.dims != [cols as u64, rows as u64] {
                            return Err(Error::invalid_file(
                                path,
                                format!(
                                    "`{name}` has dims {:?}, expected [{cols}, {rows}]",
                                    t.dims
                                ),
                            ));
                        }
                        Ok(MatrixLoc {
                            ty: t.ty,
                            rows,
                            cols,
                            offset: t.offset,
                            len: t.size,
                        })
                    } else {
                        let name = format!("blk.{l}.ffn_{kind}_exps.weight");
                        let t = h.tensor(&name).ok_or_else(|| {
                            Error::invalid_file(path, format!("missing tensor `{name}`"))
                        })?;
                        let want = [cols as u64, rows as u64, cfg.n_experts as u64];
                        if t.dims != want {
                            return Err(Error::invalid_file(
                                path,
                                format!("`{name}` has dims {:?}, expected {want:?}", t.dims),
                            ));
                        }
                        let len = t.size / cfg.n_experts as u64;
                        Ok(MatrixLoc {
                            ty: t.ty,
                            rows,
                            cols,
                            offset: t.offset + e as u64 * len,
                            len,
                        })
                    }
                };
                entries.push(ExpertLoc {
                    gate: loc("gate", ffn, hid)?,
                    up: loc("up", ffn, hid)?,
                    down: loc("down", hid, ffn)?,
                });
            }
        }
        Ok(ExpertDirectory {
            n_layers: cfg.n_layers,
            n_experts: cfg.n_experts,
            entries,
        })
    }

    /// The location of expert `expert` of layer `layer`.
    pub fn get(&self, layer: usize, expert: usize) -> Result<&ExpertLoc> {
        if layer >= self.n_layers || expert >= self.n_experts {
            return Err(Error::InvalidArgument(format!(
                "expert {expert} of layer {layer} does not exist ({} layers x {} experts)",
                self.n_layers, self.n_experts
            )));
        }
        Ok(&self.entries[layer * self.n_experts + expert])
    }

    /// Every expert, layer-major.
    pub fn iter(&self) -> impl Iterator<Item = &ExpertLoc> {
        self.entries.iter()
    }

    /// Bytes of all experts.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(ExpertLoc::bytes).sum()
    }
}

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

/// How the forward pass reaches experts.
pub trait ExpertSource: Send + Sync {
    /// A view of one expert; may block until its bytes are in memory.
    fn get(&self, layer: usize, expert: usize) -> Result<ExpertView<'_>>;

    /// Whether `get` would return without waiting for I/O, so the forward pass can compute
    /// experts already in memory while the others are still being read.
    fn is_ready(&self, _layer: usize, _expert: usize) -> bool {
        true
    }

    /// Like `get`, but gives up with [`crate::Error::Cancelled`] instead of waiting on (or
    /// re-issuing) a read once `cancel` is set.
    fn get_or_cancel(
        &self,
        layer: usize,
        expert: usize,
        _cancel: &std::sync::atomic::AtomicBool,
    ) -> Result<ExpertView<'_>> {
        self.get(layer, expert)
    }

    /// Stops reads in flight where the source can (a session was cancelled).
    fn cancel_reads(&self) {}

    /// A hint that these experts of `layer` will be needed soon. Asked for the layer named by
    /// the last [`ExpertSource::begin_layer`], they are that layer's demand, read early.
    fn prefetch(&self, _layer: usize, _experts: &[usize]) {}

    /// The forward pass starts layer `layer` (before its experts are prefetched and fetched),
    /// so eviction policies measure layer distances from it.
    fn begin_layer(&self, _layer: usize) {}

    /// A short name for reports (`resident`, `streamed`, ...).
    fn name(&self) -> &'static str;

    /// One line of figures (cache hits, bytes read, ...) for reports, if the source keeps any.
    fn stats_line(&self) -> Option<String> {
        None
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
    fn get(&self, layer: usize, expert: usize) -> Result<ExpertView<'_>> {
        let loc = self.directory.get(layer, expert)?;
        ExpertView::new(loc, 0, self.file.bytes(), None)
    }

    fn name(&self) -> &'static str {
        "resident"
    }
}
