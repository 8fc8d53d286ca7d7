//! Tensors: element types and the numeric kernels over them.

pub mod dtype;
pub mod ops;

pub use dtype::GgmlType;
pub use ops::{Matrix, MatrixRef};
