//! Model file formats: GGUF (ours and llama.cpp's).

#![deny(unsafe_op_in_unsafe_fn)]

pub mod gguf;

pub use gguf::{GgufFile, GgufHeader, GgufValue, GgufWriter, TensorInfo, TensorSpec};
