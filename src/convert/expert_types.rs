//! Per-expert quantisation types: the table `edgemoe calibrate` writes and `edgemoe convert
//! --expert-types FILE` applies, and its copy in a converted model's metadata.
//!
//! The file is JSON:
//!
//! ```json
//! {
//!   "format": "edgemoe.expert-types/1",
//!   "layers": [
//!     ["q4_0", "q8_0", "q5_0", ...],
//!     ...
//!   ],
//!   "tolerance": "held-out perplexity within +1% of q8_0 experts",
//!   "calibration": "tinyshakespeare.txt, 4096 tokens, ..."
//! }
//! ```
//!
//! `layers[l][e]` is the type of all three matrices (gate, up, down) of expert `e` of layer `l`,
//! named as `--type` names types (`q4_k`, `q8_0`, `f16`, ...). `tolerance` and `calibration` are
//! optional free text saying what the table was calibrated for.
//!
//! In a GGUF file the table is stored under `edgemoe.bitwidth.*`: `format` (the string above),
//! `layer.{L}` (an i32 array of ggml type ids, one per expert: the type asked for; the tensors'
//! own types say what was written, which differs where a row is not a whole number of blocks),
//! and `tolerance` / `calibration` when known.

#![forbid(unsafe_code)]

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::format::{GgufHeader, GgufValue};
use crate::tensor::GgmlType;
use crate::{Error, Result};

/// The `format` value of the current version.
pub const FORMAT: &str = "edgemoe.expert-types/1";

/// A per-expert type table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertTypes {
    /// `layers[l][e]`: the type of expert `e` of layer `l`.
    pub layers: Vec<Vec<GgmlType>>,
    /// What quality loss the table was calibrated to allow.
    pub tolerance: Option<String>,
    /// How it was calibrated (text, tokens, method).
    pub calibration: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct FileRepr {
    format: String,
    layers: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tolerance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    calibration: Option<String>,
}

impl ExpertTypes {
    /// Every expert of `n_layers x n_experts` at `ty`.
    pub fn uniform(n_layers: usize, n_experts: usize, ty: GgmlType) -> Self {
        ExpertTypes {
            layers: vec![vec![ty; n_experts]; n_layers],
            tolerance: None,
            calibration: None,
        }
    }

    /// Parses the JSON form; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        let bad = |reason: String| Error::invalid_file(origin, reason);
        let repr: FileRepr = serde_json::from_str(text)
            .map_err(|e| bad(format!("not an expert-types file: {e}")))?;
        if repr.format != FORMAT {
            return Err(bad(format!("format `{}` is not `{FORMAT}`", repr.format)));
        }
        let layers = repr
            .layers
            .iter()
            .map(|l| l.iter().map(|n| GgmlType::from_name(n)).collect())
            .collect::<Result<Vec<Vec<GgmlType>>>>()
            .map_err(|e| bad(e.to_string()))?;
        let table = ExpertTypes {
            layers,
            tolerance: repr.tolerance,
            calibration: repr.calibration,
        };
        table.check_types().map_err(|e| bad(e.to_string()))?;
        Ok(table)
    }

    /// Reads a file written by [`ExpertTypes::write`] (or by hand).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// The JSON form, one layer per line.
    pub fn to_json(&self) -> String {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let layers: Vec<String> = self
            .layers
            .iter()
            .map(|l| {
                let names: Vec<String> = l.iter().map(|t| quote(t.name())).collect();
                format!("    [{}]", names.join(", "))
            })
            .collect();
        let mut out = format!(
            "{{\n  \"format\": {},\n  \"layers\": [\n{}\n  ]",
            quote(FORMAT),
            layers.join(",\n")
        );
        for (key, value) in [
            ("tolerance", &self.tolerance),
            ("calibration", &self.calibration),
        ] {
            if let Some(v) = value {
                out.push_str(&format!(",\n  \"{key}\": {}", quote(v)));
            }
        }
        out.push_str("\n}\n");
        out
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json()).map_err(|e| Error::io(path, e))
    }

    /// Types a model can compute with (not the activation-only Q8_1 / Q8_K).
    fn check_types(&self) -> Result<()> {
        for (l, layer) in self.layers.iter().enumerate() {
            if let Some(t) = layer.iter().find(|t| !crate::tensor::ops::supported(**t)) {
                return Err(Error::InvalidArgument(format!(
                    "layer {l}: experts cannot be stored as {t}"
                )));
            }
        }
        Ok(())
    }

    /// An error unless the table has exactly `n_layers` layers of `n_experts` experts.
    pub fn check_shape(&self, n_layers: usize, n_experts: usize) -> Result<()> {
        let ok = self.layers.len() == n_layers && self.layers.iter().all(|l| l.len() == n_experts);
        if !ok {
            return Err(Error::InvalidArgument(format!(
                "the expert-types table has {} layers of {:?} experts; the model has {n_layers} layers of {n_experts}",
                self.layers.len(),
                self.layers.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        Ok(())
    }

    /// The `edgemoe.bitwidth.*` metadata keys describing this table.
    pub fn gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        let mut meta = vec![(
            "edgemoe.bitwidth.format".to_string(),
            GgufValue::String(FORMAT.into()),
        )];
        for (l, layer) in self.layers.iter().enumerate() {
            meta.push((
                format!("edgemoe.bitwidth.layer.{l}"),
                GgufValue::i32_array(layer.iter().map(|&t| t as i32)),
            ));
        }
        for (key, value) in [
            ("tolerance", &self.tolerance),
            ("calibration", &self.calibration),
        ] {
            if let Some(v) = value {
                meta.push((
                    format!("edgemoe.bitwidth.{key}"),
                    GgufValue::String(v.clone()),
                ));
            }
        }
        meta
    }

    /// The table stored in a model's metadata, `None` when it has none.
    pub fn from_gguf(header: &GgufHeader, path: &Path) -> Result<Option<Self>> {
        let Some(format) = header.get("edgemoe.bitwidth.format") else {
            return Ok(None);
        };
        let bad = |reason: String| Error::invalid_file(path, reason);
        if format.as_str() != Some(FORMAT) {
            return Err(bad(format!("edgemoe.bitwidth.format is not `{FORMAT}`")));
        }
        let mut layers = Vec::new();
        while let Some(v) = header.get(&format!("edgemoe.bitwidth.layer.{}", layers.len())) {
            let items = v.as_array().ok_or_else(|| {
                bad(format!(
                    "edgemoe.bitwidth.layer.{} is not an array",
                    layers.len()
                ))
            })?;
            let layer = items
                .iter()
                .map(|x| {
                    x.as_i64()
                        .and_then(|id| u32::try_from(id).ok())
                        .and_then(GgmlType::from_id)
                        .ok_or_else(|| bad(format!("unknown type id {x:?} in edgemoe.bitwidth")))
                })
                .collect::<Result<Vec<_>>>()?;
            layers.push(layer);
        }
        let text = |k: &str| {
            header
                .get(&format!("edgemoe.bitwidth.{k}"))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        Ok(Some(ExpertTypes {
            layers,
            tolerance: text("tolerance"),
            calibration: text("calibration"),
        }))
    }

    /// How many experts are of each type, most common first.
    pub fn histogram(&self) -> Vec<(GgmlType, usize)> {
        let mut counts: Vec<(GgmlType, usize)> = Vec::new();
        for &t in self.layers.iter().flatten() {
            match counts.iter_mut().find(|(x, _)| *x == t) {
                Some((_, n)) => *n += 1,
                None => counts.push((t, 1)),
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then((a.0 as u32).cmp(&(b.0 as u32))));
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_errors() {
        let t = ExpertTypes {
            layers: vec![
                vec![GgmlType::Q4K, GgmlType::Q8_0],
                vec![GgmlType::Q2K, GgmlType::F16],
            ],
            tolerance: Some("ppl +1%".into()),
            calibration: None,
        };
        let p = Path::new("t.json");
        assert_eq!(ExpertTypes::parse(&t.to_json(), p).unwrap(), t);
        assert!(t.check_shape(2, 2).is_ok());
        assert!(t.check_shape(2, 3).is_err());
        let wrong = t.to_json().replace(FORMAT, "other/1");
        assert!(ExpertTypes::parse(&wrong, p).is_err());
        let unknown = t.to_json().replace("q2_k", "q9_k");
        assert!(ExpertTypes::parse(&unknown, p).is_err());
        let activation_only = t.to_json().replace("q2_k", "q8_k");
        assert!(ExpertTypes::parse(&activation_only, p).is_err());
        assert!(ExpertTypes::parse("{", p).is_err());
        assert_eq!(t.histogram().len(), 4);
    }
}
