//! The parsed header: metadata and the tensor directory, every offset checked against the
//! file's length.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::Path;

use super::reader::Reader;
use super::{align_up, GgufValue, DEFAULT_ALIGNMENT, MAGIC, MAX_DIMS};
use crate::quant::GgmlType;
use crate::{Error, Result};

/// Where one tensor lives in a GGUF file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` is the fastest-varying (a row's length).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset from the start of the file (the data section start already added).
    pub offset: u64,
    /// Bytes of tensor data.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Length of one row (`dims[0]`).
    pub fn row_len(&self) -> usize {
        self.dims.first().copied().unwrap_or(1) as usize
    }

    /// Number of rows (the product of all dims after the first).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
}

/// A parsed GGUF header: metadata and tensor directory. Data is not copied.
#[derive(Debug)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Vec<(String, GgufValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Offset of the data section from the start of the file.
    pub data_offset: u64,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl GgufHeader {
    /// Parses the header at the start of `bytes`, the complete contents of `path`
    /// (used only in error messages). Every tensor is checked to lie inside `bytes`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut r = Reader {
            bytes,
            pos: 0,
            path,
        };
        let magic = r.take(4)?;
        if magic != MAGIC {
            return Err(r.error("not a GGUF file (bad magic)"));
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(r.error(format!("unsupported GGUF version {version} (need 2 or 3)")));
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;
        // Each entry takes at least 8+... bytes; reject counts the file cannot hold.
        if n_tensors > r.remaining() as u64 / 8 || n_kv > r.remaining() as u64 / 8 {
            return Err(r.error(format!(
                "header claims {n_tensors} tensors and {n_kv} metadata entries, more than the file holds"
            )));
        }
        let (metadata, meta_index) = read_metadata(&mut r, n_kv)?;
        let alignment = match meta_index.get("general.alignment") {
            Some(&i) => {
                let a = metadata[i].1.as_u64().unwrap_or(0);
                if a == 0 || !a.is_power_of_two() {
                    return Err(r.error(format!("general.alignment {a} is not a power of two")));
                }
                a
            }
            None => DEFAULT_ALIGNMENT,
        };
        let raw = read_directory(&mut r, n_tensors)?;
        let data_offset =
            align_up(r.pos as u64, alignment).ok_or_else(|| r.error("data offset overflows"))?;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::new();
        for entry in raw {
            let info = entry.place(data_offset, alignment, file_len, path)?;
            if tensor_index
                .insert(info.name.clone(), tensors.len())
                .is_some()
            {
                let name = &info.name;
                return Err(Error::invalid_file(
                    path,
                    format!("tensor `{name}`: duplicate tensor name"),
                ));
            }
            tensors.push(info);
        }
        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            meta_index,
            tensor_index,
        })
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// Metadata entries in file order, and the index of each key in them.
type Metadata = (Vec<(String, GgufValue)>, HashMap<String, usize>);

/// The `n_kv` metadata entries, and the index of each key; duplicate keys are an error.
fn read_metadata(r: &mut Reader<'_>, n_kv: u64) -> Result<Metadata> {
    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut meta_index = HashMap::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty, 0)?;
        if meta_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(r.error(format!("duplicate metadata key `{key}`")));
        }
        metadata.push((key, value));
    }
    Ok((metadata, meta_index))
}

/// A tensor directory entry as stored: its offset is relative to the data section.
struct DirectoryEntry {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    rel: u64,
}

/// The `n_tensors` entries of the tensor directory.
fn read_directory(r: &mut Reader<'_>, n_tensors: u64) -> Result<Vec<DirectoryEntry>> {
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(r.error(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64()?);
        }
        let type_id = r.u32()?;
        let ty = GgmlType::from_id(type_id)
            .ok_or_else(|| r.error(format!("tensor `{name}` has unknown type id {type_id}")))?;
        let rel = r.u64()?;
        raw.push(DirectoryEntry {
            name,
            dims,
            ty,
            rel,
        });
    }
    Ok(raw)
}

impl DirectoryEntry {
    /// Where the tensor lies in a file of `file_len` bytes whose data section starts at
    /// `data_offset`: its size must be a whole number of blocks and its bytes inside the file.
    fn place(
        self,
        data_offset: u64,
        alignment: u64,
        file_len: u64,
        path: &Path,
    ) -> Result<TensorInfo> {
        let DirectoryEntry {
            name,
            dims,
            ty,
            rel,
        } = self;
        let err = |reason: String| Error::invalid_file(path, format!("tensor `{name}`: {reason}"));
        let n_elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| err(format!("dimensions {dims:?} overflow")))?;
        let row = dims[0];
        if row % ty.block_len() as u64 != 0 {
            return Err(err(format!(
                "row length {row} is not a multiple of the {ty} block size {}",
                ty.block_len()
            )));
        }
        let size = (n_elements / ty.block_len() as u64)
            .checked_mul(ty.block_bytes() as u64)
            .ok_or_else(|| err("size overflows".into()))?;
        if rel % alignment != 0 {
            return Err(err(format!("offset {rel} is not aligned to {alignment}")));
        }
        let offset = data_offset
            .checked_add(rel)
            .ok_or_else(|| err("offset overflows".into()))?;
        let end = offset
            .checked_add(size)
            .ok_or_else(|| err("end overflows".into()))?;
        if end > file_len {
            return Err(err(format!(
                "data [{offset}, {end}) lies past the end of the file ({file_len} bytes): truncated?"
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ty,
            offset,
            size,
        })
    }
}
