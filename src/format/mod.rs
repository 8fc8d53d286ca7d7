//! Model file formats: GGUF (ours and llama.cpp's).

pub mod gguf;

pub use gguf::{GgufFile, GgufHeader, GgufValue, GgufWriter, TensorInfo, TensorSpec};
