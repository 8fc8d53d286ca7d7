//! Where a model's bytes live: a whole file named by a path, or a region of a descriptor the
//! host opened (an Android asset, a content URI). Backends open their own handle through this
//! type, so every backend streams from either kind the same way.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::GgufFile;
use crate::{Error, Result};

/// The file (or file region) experts are read from. Offsets given to backends are absolute
/// file offsets: `base()` plus the offset inside the model.
#[derive(Clone, Debug)]
pub struct Source {
    name: PathBuf,
    region: Option<Region>,
}

#[derive(Clone, Debug)]
struct Region {
    file: Arc<File>,
    base: u64,
    len: u64,
}

impl Source {
    /// A whole file.
    pub fn path(path: &Path) -> Source {
        Source {
            name: path.to_path_buf(),
            region: None,
        }
    }

    /// `len` bytes at `base` of an open file; the descriptor is shared, never closed early.
    pub fn region(file: Arc<File>, base: u64, len: u64) -> Source {
        Source {
            name: PathBuf::from(format!("<descriptor region {base}+{len}>")),
            region: Some(Region { file, base, len }),
        }
    }

    /// The name used in messages (the path, or a description of the region).
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Where the model starts in the file.
    pub fn base(&self) -> u64 {
        self.region.as_ref().map_or(0, |r| r.base)
    }

    /// The model's length in bytes.
    pub fn len(&self) -> Result<u64> {
        match &self.region {
            Some(r) => Ok(r.len),
            None => Ok(std::fs::metadata(&self.name)
                .map_err(|e| Error::io(&self.name, e))?
                .len()),
        }
    }

    /// Whether the model is empty (never true for a parsed model).
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Parses the model's GGUF header (and maps it).
    pub fn gguf(&self) -> Result<GgufFile> {
        match &self.region {
            None => GgufFile::open(&self.name),
            Some(r) => GgufFile::from_region(self.clone_descriptor(&r.file)?, r.base, r.len),
        }
    }

    /// A plain (page-cached) handle.
    pub fn open(&self) -> Result<File> {
        match &self.region {
            None => File::open(&self.name).map_err(|e| Error::io(&self.name, e)),
            Some(r) => self.clone_descriptor(&r.file),
        }
    }

    fn clone_descriptor(&self, file: &File) -> Result<File> {
        file.try_clone().map_err(|e| Error::io(&self.name, e))
    }

    /// A handle that bypasses the page cache where the platform allows (O_DIRECT on Linux,
    /// F_NOCACHE on Apple); falls back to a cached handle and says why.
    pub fn open_uncached(&self) -> Result<(File, Option<String>)> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // A descriptor's flags are shared with the host's handle, so O_DIRECT goes on a
            // fresh open of the same file through /proc rather than on the host's descriptor.
            let path = match &self.region {
                None => self.name.clone(),
                Some(r) => {
                    use std::os::fd::AsRawFd;
                    PathBuf::from(format!("/proc/self/fd/{}", r.file.as_raw_fd()))
                }
            };
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
            {
                Ok(f) => return Ok((f, None)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.region.is_none() => {
                    return Err(Error::io(&self.name, e))
                }
                Err(e) => {
                    return Ok((
                        self.open()?,
                        Some(format!("O_DIRECT refused ({e}); reads use the page cache")),
                    ))
                }
            }
        }
        #[cfg(any(target_os = "macos", target_os = "ios"))]
        {
            use std::os::fd::AsRawFd;
            let f = self.open()?;
            // SAFETY: fcntl on a descriptor we own; F_NOCACHE takes an int argument.
            let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_NOCACHE, 1) };
            let note = (rc != 0).then(|| {
                format!(
                    "F_NOCACHE refused ({}); reads use the page cache",
                    io::Error::last_os_error()
                )
            });
            return Ok((f, note));
        }
        #[allow(unreachable_code)]
        Ok((
            self.open()?,
            Some("no uncached reads on this platform".into()),
        ))
    }

    /// Asks the OS to drop this model's pages from the page cache (for cold-cache benchmarks;
    /// only clean, unmapped pages go). A no-op where the platform has no such call.
    pub fn drop_page_cache(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Ok(f) = self.open() {
            use std::os::fd::AsRawFd;
            let (base, len) = (self.base() as i64, self.len().unwrap_or(0) as i64);
            // SAFETY: posix_fadvise only reads its arguments; the descriptor is open.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), base, len, libc::POSIX_FADV_DONTNEED);
            }
        }
    }

    /// The end of the model as an absolute file offset: reads stop there.
    pub fn end(&self) -> Result<u64> {
        Ok(self.base() + self.len()?)
    }
}
