//! Tensors: element types and the numeric kernels over them.

pub mod dtype;

pub use dtype::GgmlType;
