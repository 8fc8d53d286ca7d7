//! Helpers shared by the fuzz targets: splitting one input into several files, and a
//! per-process scratch directory for the APIs that read from paths.

use std::path::{Path, PathBuf};

/// Separates the parts of an input that holds several files (a template, then messages, ...).
pub const SEP: &[u8] = b"\n#--#\n";

/// The first `n` parts of `data` split at [`SEP`]; missing parts are empty.
pub fn split(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + SEP.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    while parts.len() < n {
        parts.push(&[]);
    }
    parts
}

/// A scratch directory for this process (in /dev/shm when there is one), emptied of the
/// files a previous iteration wrote.
pub fn scratch(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("edgemoe-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Writes `bytes` to `dir/name`, returning the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("scratch file");
    p
}

/// Token ids read from `bytes` (two bytes each), some beyond any vocabulary.
pub fn ids(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
        .collect()
}
