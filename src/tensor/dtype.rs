//! Element types of tensors: [`GgmlType`] lives with the quantised formats in
//! [`crate::quant`]; this path keeps `tensor::dtype::GgmlType` working.

#![forbid(unsafe_code)]

pub use crate::quant::GgmlType;
