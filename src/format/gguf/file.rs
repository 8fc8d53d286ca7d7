//! An open GGUF file: the parsed header over a read-only memory map.

use std::path::{Path, PathBuf};

use super::{GgufHeader, GgufValue, TensorInfo};
use crate::{Error, Result};

/// An open GGUF file: the header plus a read-only memory map of the whole file.
pub struct GgufFile {
    pub path: PathBuf,
    pub header: GgufHeader,
    map: memmap2::Mmap,
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and private to this process; edgemoe never writes a
        // model file it has open. A file truncated by another process underneath the map is
        // outside what a memory map can guard against (as for every mmap-based loader).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = GgufHeader::parse(&map, path)?;
        Ok(GgufFile {
            path: path.to_owned(),
            header,
            map,
        })
    }

    /// Maps and parses the `len` bytes at `offset` of an open file. Offsets in the result are
    /// relative to `offset`.
    pub fn from_region(file: std::fs::File, offset: u64, len: u64) -> Result<Self> {
        let path = PathBuf::from(format!("<descriptor region {offset}+{len}>"));
        let file_len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if offset.checked_add(len).map_or(true, |end| end > file_len) || len == 0 {
            return Err(Error::invalid_file(
                &path,
                format!("region lies outside the {file_len}-byte file"),
            ));
        }
        // SAFETY: as in `open`: a read-only private map of a file edgemoe never writes.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len as usize)
                .map(&file)
        }
        .map_err(|e| Error::io(&path, e))?;
        let header = GgufHeader::parse(&map, &path)?;
        Ok(GgufFile { path, header, map })
    }

    /// Tells the OS it may drop the mapped pages (they are read back from the file if touched
    /// again), so weights already copied out stop counting against the process's memory.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        // SAFETY: a read-only private file mapping: dropping its pages loses nothing, later
        // accesses fault them back in from the file.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// Like `release_pages`, for the `len` bytes at `offset` of the file only: called as
    /// resident weights are copied out, so loading never holds a weight twice (mapped and
    /// copied). Offsets past the end are ignored.
    pub fn release_range(&self, offset: usize, len: usize) {
        let end = offset.saturating_add(len).min(self.map.len());
        if offset >= end {
            return;
        }
        #[cfg(unix)]
        // SAFETY: as in `release_pages`; the range lies inside the mapping (clamped above),
        // and memmap2 rounds its start down to the page that holds it.
        let _ = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                offset,
                end - offset,
            )
        };
    }

    /// A copy of a tensor's data, made a few MiB at a time with each piece's mapped pages
    /// released once copied: the process never holds more than one piece twice.
    pub fn copy_tensor_data(&self, info: &TensorInfo) -> Vec<u8> {
        const PIECE: usize = 4 << 20;
        let data = self.data(info);
        let mut out = Vec::with_capacity(data.len());
        for (i, piece) in data.chunks(PIECE).enumerate() {
            out.extend_from_slice(piece);
            self.release_range(info.offset as usize + i * PIECE, piece.len());
        }
        out
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// A tensor's data (bounds were checked at parse time).
    pub fn data(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset as usize..(info.offset + info.size) as usize]
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.header.get(key)
    }

    /// A tensor by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }
}
