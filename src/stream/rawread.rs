//! The physical limit experts are measured against: sequential, uncached read bandwidth of the
//! model file itself (O_DIRECT on Linux, F_NOCACHE on Apple), in large aligned chunks, the way
//! `fio --rw=read --direct=1` would read it.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::pool::{align_down, align_up, SlotPool, ALIGN};
use super::Source;
use crate::{Error, Result};

/// What one sequential read pass measured.
#[derive(Clone, Debug)]
pub struct SequentialRead {
    pub bytes: u64,
    /// Whole passes over the range (more than one when it is smaller than `min_bytes`).
    pub passes: u64,
    /// The read size used: the chunk asked for, smaller when the range would not keep every
    /// reader busy.
    pub chunk: usize,
    pub elapsed: Duration,
    /// Why the read went through the page cache, when it did (then the figure is not a
    /// storage figure).
    pub cache_note: Option<String>,
}

impl SequentialRead {
    /// Bytes per second.
    pub fn bandwidth(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Reads `len` bytes from `offset` (absolute in the source's file; widened to [`ALIGN`]) in
/// `chunk`-byte reads, `depth` of them in flight (threads taking the next chunk in file order,
/// like `fio --rw=read --iodepth`), bypassing the page cache where the platform allows.
pub fn sequential_read(
    source: &Source,
    offset: u64,
    len: u64,
    chunk: usize,
    depth: usize,
    min_bytes: u64,
) -> Result<SequentialRead> {
    let (file, cache_note) = source.open_uncached()?;
    let start = align_down(offset);
    let end = align_up(offset.saturating_add(len)).min(align_up(source.end()?));
    let span = end.saturating_sub(start);
    let depth = depth.max(1);
    // A range smaller than `depth` chunks is cut finer, so every reader has work.
    let chunk = align_up((chunk as u64).min(span.div_ceil(depth as u64)).max(ALIGN)) as usize;
    let per_pass = span.div_ceil(chunk as u64).max(1);
    // Whole passes until `min_bytes`: a small file read once takes a few milliseconds, too
    // short to measure (reads are uncached, so a second pass goes to the device again).
    let passes = if span == 0 {
        1
    } else {
        min_bytes.div_ceil(span).max(1)
    };
    let buffers = SlotPool::new(chunk, depth, false)?;
    let next = AtomicU64::new(0);
    // The readers start together and the clock starts with them (not with thread creation).
    let start_line = std::sync::Barrier::new(depth + 1);
    let mut t0 = Instant::now();
    let results: Vec<std::io::Result<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..depth)
            .map(|slot| {
                let (file, buffers, next, start_line) = (&file, &buffers, &next, &start_line);
                scope.spawn(move || -> std::io::Result<u64> {
                    start_line.wait();
                    let mut bytes = 0;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= passes * per_pass {
                            return Ok(bytes);
                        }
                        let at = start + (i % per_pass) * chunk as u64;
                        let want = chunk.min((end - at) as usize);
                        bytes += read_at(file, buffers, slot, want, at)? as u64;
                    }
                })
            })
            .collect();
        start_line.wait();
        t0 = Instant::now();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")))
            })
            .collect()
    });
    let elapsed = t0.elapsed();
    let mut bytes = 0;
    for r in results {
        bytes += r.map_err(|e| Error::io(source.name(), e))?;
    }
    Ok(SequentialRead {
        bytes,
        passes,
        chunk,
        elapsed,
        cache_note,
    })
}

/// One positioned read into the start of `slot` (short at the end of the file).
fn read_at(
    file: &File,
    buffers: &SlotPool,
    slot: usize,
    want: usize,
    at: u64,
) -> std::io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let ptr = buffers
        .ptr(slot, 0, want)
        .ok_or_else(|| std::io::Error::other("read larger than the buffer"))?;
    // SAFETY: `ptr..ptr + want` lies inside the pool's mapping (checked by `ptr`), the pool
    // outlives the call and only this thread uses `slot`; it is 4096-aligned as O_DIRECT
    // needs.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, want) };
    loop {
        match file.read_at(buf, at) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_whole_unaligned_range() {
        let dir = std::env::temp_dir().join(format!("emoe-rawread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.bin");
        std::fs::write(&path, vec![7u8; 3 * 4096 + 100]).unwrap();
        let r = sequential_read(&Source::path(&path), 10, 2 * 4096, 4096, 1, 0).unwrap();
        // [0, 3 * 4096) after widening to alignment.
        assert_eq!(r.bytes, 3 * 4096);
        assert_eq!(r.passes, 1);
        assert!(r.bandwidth() > 0.0);
        let all = sequential_read(&Source::path(&path), 0, u64::MAX / 2, 4096, 3, 0).unwrap();
        assert_eq!(all.bytes, 3 * 4096 + 100);
        // Small ranges are read in whole passes up to `min_bytes`, in chunks every reader
        // gets one of.
        let r = sequential_read(&Source::path(&path), 0, 4 * 4096, 1 << 20, 4, 40_000).unwrap();
        assert_eq!((r.passes, r.chunk), (3, 4096));
        assert_eq!(r.bytes, 3 * (3 * 4096 + 100));
        // An empty range is one pass of nothing, whatever `min_bytes` asks.
        let r = sequential_read(&Source::path(&path), 4096, 0, 1 << 20, 4, 1 << 30).unwrap();
        assert_eq!((r.bytes, r.passes), (0, 1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
