//! Where every expert lies in a model file: the expert directory, built from the tensor
//! directory of either layout (edgemoe's packed one, llama.cpp's merged one).

use std::path::Path;

use crate::format::GgufHeader;
use crate::tensor::GgmlType;
use crate::{Error, Result};

/// The shape of a model's routed experts: what the directory checks every tensor against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpertShape {
    pub n_layers: usize,
    pub n_experts: usize,
    /// Experts one token uses in a layer (the smallest pool holds that many).
    pub n_experts_used: usize,
    /// Model width: the experts' input and output size.
    pub hidden: usize,
    /// The experts' intermediate size.
    pub ffn: usize,
}

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

/// Which stored copy of an expert to use. Files converted with a low-precision type hold a
/// second copy of every expert (HOBBIT: a missed expert with a small gate weight is read at
/// the low precision, a smaller read).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// The expert's own type (every file has it).
    High,
    /// The low-precision copy (`blk.L.ffn_{gate,up,down}.E.low.weight`).
    Low,
}

/// Metadata key holding the ggml type id of the low-precision expert copies; present exactly
/// when the file has them.
pub const LOW_PRECISION_TYPE_KEY: &str = "edgemoe.low_precision.type";

/// Name of a low-precision copy: the packed layout's expert name with `.low` before
/// `.weight`, e.g. `blk.3.ffn_up.7.low.weight`.
pub fn low_precision_name(layer: usize, kind: &str, expert: usize) -> String {
    format!("blk.{layer}.ffn_{kind}.{expert}.low.weight")
}

/// Whether `name` is a low-precision expert copy (see [`low_precision_name`]).
pub fn is_low_precision_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts.len() == 6
        && parts[0] == "blk"
        && parts[2].starts_with("ffn_")
        && parts[3].parse::<usize>().is_ok()
        && parts[4] == "low"
        && parts[5] == "weight"
}

/// The low-precision copies of every expert.
#[derive(Clone, Debug)]
struct LowCopies {
    ty: GgmlType,
    entries: Vec<ExpertLoc>,
}

/// Every expert's location, computed at load from the tensor directory.
#[derive(Clone, Debug)]
pub struct ExpertDirectory {
    pub n_layers: usize,
    pub n_experts: usize,
    /// Experts one token uses in a layer.
    pub n_experts_used: usize,
    entries: Vec<ExpertLoc>,
    low: Option<LowCopies>,
}

impl ExpertDirectory {
    /// Builds the directory from either layout, checking every expert's shape and type.
    pub fn from_gguf(h: &GgufHeader, shape: impl Into<ExpertShape>, path: &Path) -> Result<Self> {
        let cfg = shape.into();
        let (hid, ffn) = (cfg.hidden, cfg.ffn);
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
        let low = Self::low_copies(h, &cfg, path)?;
        Ok(ExpertDirectory {
            n_layers: cfg.n_layers,
            n_experts: cfg.n_experts,
            n_experts_used: cfg.n_experts_used,
            entries,
            low,
        })
    }

    /// The low-precision copies, when [`LOW_PRECISION_TYPE_KEY`] says the file has them:
    /// every one must exist with the expert's shape and the declared type.
    fn low_copies(h: &GgufHeader, cfg: &ExpertShape, path: &Path) -> Result<Option<LowCopies>> {
        let Some(v) = h.get(LOW_PRECISION_TYPE_KEY) else {
            if let Some(t) = h.tensors.iter().find(|t| is_low_precision_name(&t.name)) {
                return Err(Error::invalid_file(
                    path,
                    format!(
                        "tensor `{}` is a low-precision expert copy but `{LOW_PRECISION_TYPE_KEY}` is missing",
                        t.name
                    ),
                ));
            }
            return Ok(None);
        };
        let ty = v
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .and_then(GgmlType::from_id)
            .ok_or_else(|| {
                Error::invalid_file(
                    path,
                    format!("`{LOW_PRECISION_TYPE_KEY}` is not a known ggml type id: {v:?}"),
                )
            })?;
        let (hid, ffn) = (cfg.hidden, cfg.ffn);
        let mut entries = Vec::with_capacity(cfg.n_layers * cfg.n_experts);
        for l in 0..cfg.n_layers {
            for e in 0..cfg.n_experts {
                let loc = |kind: &str, rows: usize, cols: usize| -> Result<MatrixLoc> {
                    let name = low_precision_name(l, kind, e);
                    let t = h.tensor(&name).ok_or_else(|| {
                        Error::invalid_file(path, format!("missing tensor `{name}`"))
                    })?;
                    if t.dims != [cols as u64, rows as u64] || t.ty != ty {
                        return Err(Error::invalid_file(
                            path,
                            format!(
                                "`{name}` is {} {:?}, expected {ty} [{cols}, {rows}]",
                                t.ty, t.dims
                            ),
                        ));
                    }
                    Ok(MatrixLoc {
                        ty,
                        rows,
                        cols,
                        offset: t.offset,
                        len: t.size,
                    })
                };
                entries.push(ExpertLoc {
                    gate: loc("gate", ffn, hid)?,
                    up: loc("up", ffn, hid)?,
                    down: loc("down", hid, ffn)?,
                });
            }
        }
        Ok(Some(LowCopies { ty, entries }))
    }

    /// The type of the low-precision copies, when the file has them.
    pub fn low_precision_type(&self) -> Option<GgmlType> {
        self.low.as_ref().map(|l| l.ty)
    }

    /// The location of one expert's copy at `precision`; an error for [`Precision::Low`] when
    /// the file has no low-precision copies.
    pub fn get_at(&self, layer: usize, expert: usize, precision: Precision) -> Result<&ExpertLoc> {
        let loc = self.get(layer, expert)?;
        match precision {
            Precision::High => Ok(loc),
            Precision::Low => self
                .low
                .as_ref()
                .map(|low| &low.entries[layer * self.n_experts + expert])
                .ok_or_else(|| {
                    Error::InvalidArgument("the model has no low-precision expert copies".into())
                }),
        }
    }

    /// The low-precision copies, layer-major (empty when the file has none).
    pub fn iter_low(&self) -> impl Iterator<Item = &ExpertLoc> {
        self.low.iter().flat_map(|l| l.entries.iter())
    }

    /// Bytes of the low-precision copies (0 when the file has none).
    pub fn low_precision_bytes(&self) -> u64 {
        self.iter_low().map(ExpertLoc::bytes).sum()
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

    /// Bytes of all experts (their own type; low-precision copies not included).
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(ExpertLoc::bytes).sum()
    }
}
