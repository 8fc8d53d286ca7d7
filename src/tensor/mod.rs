//! Tensors: element types and the numeric kernels over them.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod dtype;
pub mod ops;
pub mod pool;

pub use crate::quant::GgmlType;
pub use ops::{Matrix, MatrixRef};
pub use pool::ThreadPool;
