//! GGUF v3 reader and writer (spec: ggml `docs/gguf.md`).
//!
//! The reader parses a byte slice (normally a read-only memory map) and checks every count,
//! length and offset against the bytes that are really there, so a truncated or corrupt file
//! gives [`Error::InvalidFile`] naming the file, never a panic or an out-of-bounds read.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::quant::GgmlType;
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of tensor data when a file does not say (`general.alignment`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;

/// Type ids of metadata values.
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// An array; `elem_type` is the GGUF value type id of its items (kept so it can be rewritten).
    Array {
        elem_type: u32,
        items: Vec<GgufValue>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => value_type::U8,
            GgufValue::I8(_) => value_type::I8,
            GgufValue::U16(_) => value_type::U16,
            GgufValue::I16(_) => value_type::I16,
            GgufValue::U32(_) => value_type::U32,
            GgufValue::I32(_) => value_type::I32,
            GgufValue::F32(_) => value_type::F32,
            GgufValue::Bool(_) => value_type::BOOL,
            GgufValue::String(_) => value_type::STRING,
            GgufValue::Array { .. } => value_type::ARRAY,
            GgufValue::U64(_) => value_type::U64,
            GgufValue::I64(_) => value_type::I64,
            GgufValue::F64(_) => value_type::F64,
        }
    }

    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    /// An array of strings.
    pub fn string_array<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Self {
        GgufValue::Array {
            elem_type: value_type::STRING,
            items: items
                .into_iter()
                .map(|s| GgufValue::String(s.into()))
                .collect(),
        }
    }

    /// An array of f32.
    pub fn f32_array(items: impl IntoIterator<Item = f32>) -> Self {
        GgufValue::Array {
            elem_type: value_type::F32,
            items: items.into_iter().map(GgufValue::F32).collect(),
        }
    }

    /// An array of u32.
    pub fn u32_array(items: impl IntoIterator<Item = u32>) -> Self {
        GgufValue::Array {
            elem_type: value_type::U32,
            items: items.into_iter().map(GgufValue::U32).collect(),
        }
    }

    /// An array of i32.
    pub fn i32_array(items: impl IntoIterator<Item = i32>) -> Self {
        GgufValue::Array {
            elem_type: value_type::I32,
            items: items.into_iter().map(GgufValue::I32).collect(),
        }
    }
}

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
            let offset = r.u64()?;
            raw.push((name, dims, ty, offset));
        }
        let data_offset =
            align_up(r.pos as u64, alignment).ok_or_else(|| r.error("data offset overflows"))?;
        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::new();
        for (name, dims, ty, rel) in raw {
            let err =
                |reason: String| Error::invalid_file(path, format!("tensor `{name}`: {reason}"));
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
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(err("duplicate tensor name".into()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
                size,
            });
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

/// Rounds `x` up to a multiple of `align` (a power of two).
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// A bounds-checked cursor over the header bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::invalid_file(
            self.path,
            format!("{} (at byte {})", reason.into(), self.pos),
        )
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "unexpected end of file: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > self.remaining() as u64 {
            return Err(self.error(format!(
                "string of {len} bytes runs past the end of the file"
            )));
        }
        let s = self.take(len as usize)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.error("string is not valid UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue> {
        use value_type as t;
        Ok(match ty {
            t::U8 => GgufValue::U8(self.array::<1>()?[0]),
            t::I8 => GgufValue::I8(self.array::<1>()?[0] as i8),
            t::U16 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            t::I16 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            t::U32 => GgufValue::U32(self.u32()?),
            t::I32 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            t::F32 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            t::BOOL => match self.array::<1>()?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.error(format!("bool value {b} is neither 0 nor 1"))),
            },
            t::STRING => GgufValue::String(self.string()?),
            t::ARRAY => {
                if depth > 2 {
                    return Err(self.error("arrays nested too deeply"));
                }
                let elem_type = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least one byte.
                if n > self.remaining() as u64 {
                    return Err(
                        self.error(format!("array of {n} items runs past the end of the file"))
                    );
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem_type, depth + 1)?);
                }
                GgufValue::Array { elem_type, items }
            }
            t::U64 => GgufValue::U64(self.u64()?),
            t::I64 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            t::F64 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(self.error(format!("unknown metadata value type {other}"))),
        })
    }
}

/// A tensor to be written: its name, ggml-order dims and type. Data comes later, in order.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    /// Bytes of this tensor's data.
    pub fn size(&self) -> Result<u64> {
        let row = self.dims.first().copied().unwrap_or(1) as usize;
        let rows: u64 = self.dims.iter().skip(1).product();
        Ok(self.ty.row_bytes(row)? as u64 * rows)
    }
}

/// Writes a GGUF v3 file in one pass: header first, then each tensor's data in the order
/// the specs were given, each padded to the alignment.
pub struct GgufWriter {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
    specs: Vec<TensorSpec>,
    offsets: Vec<u64>,
    next: usize,
    alignment: u64,
    data_start: u64,
}

impl GgufWriter {
    /// Creates `path` and writes the header. `metadata` should include `general.alignment`
    /// when an alignment other than 32 is wanted; it is read from there.
    pub fn create(
        path: &Path,
        metadata: &[(String, GgufValue)],
        specs: Vec<TensorSpec>,
    ) -> Result<Self> {
        let io = |e| Error::io(path, e);
        let alignment = metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT);
        if !alignment.is_power_of_two() {
            return Err(Error::InvalidArgument(format!(
                "alignment {alignment} is not a power of two"
            )));
        }
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut header = Vec::new();
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(specs.len() as u64).to_le_bytes());
        header.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (key, value) in metadata {
            put_string(&mut header, key);
            header.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut header, value);
        }
        let mut offsets = Vec::with_capacity(specs.len());
        let mut rel = 0u64;
        for spec in &specs {
            put_string(&mut header, &spec.name);
            header.extend_from_slice(&(spec.dims.len() as u32).to_le_bytes());
            for d in &spec.dims {
                header.extend_from_slice(&d.to_le_bytes());
            }
            header.extend_from_slice(&(spec.ty as u32).to_le_bytes());
            header.extend_from_slice(&rel.to_le_bytes());
            offsets.push(rel);
            rel = align_up(rel + spec.size()?, alignment)
                .ok_or_else(|| Error::InvalidArgument("file too large".into()))?;
        }
        let data_start = align_up(header.len() as u64, alignment).unwrap_or(u64::MAX);
        header.resize(data_start as usize, 0);
        out.write_all(&header).map_err(io)?;
        Ok(GgufWriter {
            out,
            path: path.to_owned(),
            specs,
            offsets,
            next: 0,
            alignment,
            data_start,
        })
    }

    /// Absolute file offset where tensor `i`'s data will start.
    pub fn tensor_offset(&self, i: usize) -> u64 {
        self.data_start + self.offsets[i]
    }

    /// The alignment in use.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Writes the data of the next tensor; `data` must be exactly its size.
    pub fn write_tensor(&mut self, data: &[u8]) -> Result<()> {
        let spec = self
            .specs
            .get(self.next)
            .ok_or_else(|| Error::InvalidArgument("more tensor data than tensors".into()))?;
        let size = spec.size()?;
        if data.len() as u64 != size {
            return Err(Error::Shape(format!(
                "tensor `{}` needs {size} bytes of {} data, got {}",
                spec.name,
                spec.ty,
                data.len()
            )));
        }
        let io = |e| Error::io(&self.path, e);
        self.out.write_all(data).map_err(io)?;
        let padded = align_up(size, self.alignment).unwrap_or(size);
        let pad = (padded - size) as usize;
        if pad > 0 && self.next + 1 < self.specs.len() {
            self.out.write_all(&vec![0u8; pad]).map_err(io)?;
        }
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written and flushes the file.
    pub fn finish(mut self) -> Result<()> {
        if self.next != self.specs.len() {
            return Err(Error::InvalidArgument(format!(
                "{} of {} tensors written",
                self.next,
                self.specs.len()
            )));
        }
        let io = |e| Error::io(&self.path, e);
        self.out.flush().map_err(io)?;
        self.out.get_mut().sync_all().map_err(io)?;
        Ok(())
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_string(out, s),
        GgufValue::Array { elem_type, items } => {
            out.extend_from_slice(&elem_type.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
        GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}

/// An open GGUF file: the header plus a read-only memory map of the whole file.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: GgufHeader,
    map: memmap2::Mmap,
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this process; edgemoe never writes a
        // model file it has open. A file truncated by another process underneath the map is
        // outside what a memory map can guard against (as for every mmap-based loader).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = GgufHeader::parse(&map, path)?;
        Ok(GgufFile {
            path: path.to_owned(),
            header,
            map,
        })
    }

    /// Maps and parses the `len` bytes at `offset` of an open file. Offsets in the result are
    /// relative to `offset`.
    pub fn from_region(file: std::fs::File, offset: u64, len: u64) -> Result<Self> {
        let path = PathBuf::from(format!("<descriptor region {offset}+{len}>"));
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if offset.checked_add(len).map_or(true, |end| end > file_len) || len == 0 {
            return Err(Error::invalid_file(
                &path,
                format!("region lies outside the {file_len}-byte file"),
            ));
        }
        // SAFETY: as in `open`: a read-only private map of a file edgemoe never writes.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len as usize)
                .map(&file)
        }
        .map_err(|e| Error::io(&path, e))?;
        let header = GgufHeader::parse(&map, &path)?;
        Ok(GgufFile { path, header, map })
    }

    /// Tells the OS it may drop the mapped pages (they are read back from the file if touched
    /// again), so weights already copied out stop counting against the process's memory.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        // SAFETY: a read-only private file mapping: dropping its pages loses nothing, later
        // accesses fault them back in from the file.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// Like `release_pages`, for the `len` bytes at `offset` of the file only: called as
    /// resident weights are copied out, so loading never holds a weight twice (mapped and
    /// copied). Offsets past the end are ignored.
    pub fn release_range(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.map.len());
        if offset >= end {
            return;
        }
        #[cfg(unix)]
        // SAFETY: as in `release_pages`; the range lies inside the mapping (clamped above),
        // and memmap2 rounds its start down to the page that holds it.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                offset,
                end - offset,
            )
        };
    }

    /// A copy of a tensor's data, made a few MiB at a time with each piece's mapped pages
    /// released once copied: the process never holds more than one piece twice.
    pub fn copy_tensor_data(&self, info: &TensorInfo) -> Vec<u8> {
        const PIECE: usize = 4 << 20;
        let data = self.data(info);
        let mut out = Vec::with_capacity(data.len());
        for (i, piece) in data.chunks(PIECE).enumerate() {
            out.extend_from_slice(piece);
            self.release_range(info.offset as usize + i * PIECE, piece.len());
        }
        out
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// A tensor's data (bounds were checked at parse time).
    pub fn data(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset as usize..(info.offset + info.size) as usize]
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.header.get(key)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("t.gguf");
        let meta = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("llama".into()),
            ),
            ("general.alignment".to_string(), GgufValue::U32(64)),
            ("x.list".to_string(), GgufValue::string_array(["a", "bé"])),
            ("x.f".to_string(), GgufValue::F32(1.5)),
        ];
        let specs = vec![
            TensorSpec {
                name: "a".into(),
                dims: vec![3, 2],
                ty: GgmlType::F32,
            },
            TensorSpec {
                name: "b".into(),
                dims: vec![32],
                ty: GgmlType::Q8_0,
            },
        ];
        let mut w = GgufWriter::create(&path, &meta, specs).unwrap();
        let a: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        w.write_tensor(&a).unwrap();
        w.write_tensor(&[7u8; 34]).unwrap();
        w.finish().unwrap();
        path
    }

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("emoe-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = sample(&dir);
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.header.alignment, 64);
        assert_eq!(
            f.get("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        assert_eq!(
            f.get("x.list").unwrap().as_array().unwrap()[1].as_str(),
            Some("bé")
        );
        let a = f.tensor("a").unwrap();
        assert_eq!(a.offset % 64, 0);
        assert_eq!(f.data(a)[4..8], 1f32.to_le_bytes());
        assert_eq!(f.data(f.tensor("b").unwrap()), &[7u8; 34]);
        // Every truncation is an error, never a panic.
        let bytes = std::fs::read(&path).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                GgufHeader::parse(&bytes[..cut], &path).is_err(),
                "cut at {cut}"
            );
        }
        // Random corruption of the header never panics.
        let mut state = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut b = bytes.clone();
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (state >> 33) as usize % 200.min(b.len());
            b[i] = (state >> 20) as u8;
            let _ = GgufHeader::parse(&b, &path);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
