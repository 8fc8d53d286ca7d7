//! GGUF v3 reader and writer (spec: ggml `docs/gguf.md`).
//!
//! The reader parses a byte slice (normally a read-only memory map) and checks every count,
//! length and offset against the bytes that are really there, so a truncated or corrupt file
//! gives [`crate::Error::InvalidFile`] naming the file, never a panic or an out-of-bounds read.

#![deny(unsafe_op_in_unsafe_fn)]

mod file;
mod header;
mod reader;
mod value;
mod writer;

pub use file::GgufFile;
pub use header::{GgufHeader, TensorInfo};
pub use value::GgufValue;
pub use writer::{GgufWriter, TensorSpec};

const MAGIC: &[u8; 4] = b"GGUF";
/// Alignment of tensor data when a file does not say (`general.alignment`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a ggml tensor has.
const MAX_DIMS: u32 = 4;

/// Type ids of metadata values.
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// Rounds `x` up to a multiple of `align` (a power of two).
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::quant::GgmlType;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("t.gguf");
        let meta = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("llama".into()),
            ),
            ("general.alignment".to_string(), GgufValue::U32(64)),
            ("x.list".to_string(), GgufValue::string_array(["a", "bé"])),
            ("x.f".to_string(), GgufValue::F32(1.5)),
        ];
        let specs = vec![
            TensorSpec {
                name: "a".into(),
                dims: vec![3, 2],
                ty: GgmlType::F32,
            },
            TensorSpec {
                name: "b".into(),
                dims: vec![32],
                ty: GgmlType::Q8_0,
            },
        ];
        let mut w = GgufWriter::create(&path, &meta, specs).unwrap();
        let a: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        w.write_tensor(&a).unwrap();
        w.write_tensor(&[7u8; 34]).unwrap();
        w.finish().unwrap();
        path
    }

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("emoe-gguf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = sample(&dir);
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.header.alignment, 64);
        assert_eq!(
            f.get("general.architecture").unwrap().as_str(),
            Some("llama")
        );
        assert_eq!(
            f.get("x.list").unwrap().as_array().unwrap()[1].as_str(),
            Some("bé")
        );
        let a = f.tensor("a").unwrap();
        assert_eq!(a.offset % 64, 0);
        assert_eq!(f.data(a)[4..8], 1f32.to_le_bytes());
        assert_eq!(f.data(f.tensor("b").unwrap()), &[7u8; 34]);
        // Every truncation is an error, never a panic.
        let bytes = std::fs::read(&path).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                GgufHeader::parse(&bytes[..cut], &path).is_err(),
                "cut at {cut}"
            );
        }
        // Random corruption of the header never panics.
        let mut state = 0x1234_5678_u64;
        for _ in 0..2000 {
            let mut b = bytes.clone();
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (state >> 33) as usize % 200.min(b.len());
            b[i] = (state >> 20) as u8;
            let _ = GgufHeader::parse(&b, &path);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
