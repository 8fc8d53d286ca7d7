//! Tensors: element types and the numeric kernels over them.

pub mod dtype;
pub mod ops;
pub mod pool;

pub use dtype::GgmlType;
pub use ops::{Matrix, MatrixRef};
pub use pool::ThreadPool;
