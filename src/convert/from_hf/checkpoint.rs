//! A checkpoint's safetensors shards, memory-mapped, read tensor by tensor as f32.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// The safetensors shards of a checkpoint, memory-mapped.
pub(super) struct Shards {
    paths: Vec<PathBuf>,
    maps: Vec<memmap2::Mmap>,
}

impl Shards {
    // The one `unsafe` of `convert` (the module denies the rest).
    #[allow(unsafe_code)]
    pub(super) fn open(dir: &Path) -> Result<Shards> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::invalid_file(dir, "no *.safetensors files"));
        }
        let mut maps = Vec::new();
        for p in &paths {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            // SAFETY: read-only private map of a checkpoint that the converter never writes.
            maps.push(unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Error::io(p, e))?);
        }
        Ok(Shards { paths, maps })
    }
}

/// Parsed shards with an index from tensor name to shard.
pub(super) struct Checkpoint<'a> {
    paths: &'a [PathBuf],
    files: Vec<SafeTensors<'a>>,
    index: HashMap<String, usize>,
}

impl<'a> Checkpoint<'a> {
    pub(super) fn new(shards: &'a Shards) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, (map, path)) in shards.maps.iter().zip(&shards.paths).enumerate() {
            let st = SafeTensors::deserialize(map)
                .map_err(|e| Error::invalid_file(path, format!("bad safetensors: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), i);
            }
            files.push(st);
        }
        Ok(Checkpoint {
            paths: &shards.paths,
            files,
            index,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// A tensor as f32, checked to have `shape` (torch order).
    pub(super) fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self.index.get(name).ok_or_else(|| {
            Error::invalid_file(&self.paths[0], format!("missing tensor `{name}`"))
        })?;
        let path = &self.paths[i];
        let t = self.files[i]
            .tensor(name)
            .map_err(|e| Error::invalid_file(path, format!("tensor `{name}`: {e}")))?;
        if t.shape() != shape {
            return Err(Error::invalid_file(
                path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {shape:?}",
                    t.shape()
                ),
            ));
        }
        let data = t.data();
        let out: Vec<f32> = match t.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::Unsupported(format!(
                    "tensor `{name}` has dtype {other:?} (need f32, f16 or bf16)"
                )))
            }
        };
        Ok(out)
    }

    /// Rows `[start, start + rows)` of a 3-D fused expert tensor `[E, R, C]`, expert `e`.
    pub(super) fn read_fused(
        &self,
        name: &str,
        shape: &[usize],
        e: usize,
        start: usize,
        rows: usize,
    ) -> Result<Vec<f32>> {
        let all = self.read(name, shape)?;
        let (r, c) = (shape[1], shape[2]);
        let base = e * r * c + start * c;
        Ok(all[base..base + rows * c].to_vec())
    }
}
