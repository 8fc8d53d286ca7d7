//! Metadata values.

#![forbid(unsafe_code)]

use super::value_type;

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
    pub(super) fn type_id(&self) -> u32 {
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
