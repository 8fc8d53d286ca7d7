//! A bounds-checked cursor over header bytes, and the decoding of metadata values.

#![forbid(unsafe_code)]

use std::path::Path;

use super::{value_type, GgufValue};
use crate::{Error, Result};

/// A bounds-checked cursor over the header bytes.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
    pub(super) path: &'a Path,
}

impl<'a> Reader<'a> {
    pub(super) fn error(&self, reason: impl Into<String>) -> Error {
        Error::invalid_file(
            self.path,
            format!("{} (at byte {})", reason.into(), self.pos),
        )
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
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

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    pub(super) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(super) fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        if len > self.remaining() as u64 {
            return Err(self.error(format!(
                "string of {len} bytes runs past the end of the file"
            )));
        }
        let s = self.take(len as usize)?;
        String::from_utf8(s.to_vec()).map_err(|_| self.error("string is not valid UTF-8"))
    }

    pub(super) fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue> {
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
