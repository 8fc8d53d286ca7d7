//! Writing GGUF v3 files in one pass.

#![forbid(unsafe_code)]

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{align_up, GgufValue, DEFAULT_ALIGNMENT, MAGIC};
use crate::quant::GgmlType;
use crate::{Error, Result};

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
