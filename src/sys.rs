//! Facts about the running process from the OS.

#![deny(unsafe_op_in_unsafe_fn)]

/// Peak resident set size of this process in bytes, if the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a complete rusage into the pointer it is given.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: initialised by the successful call above (and zeroed before it).
        let usage = unsafe { usage.assume_init() };
        let max = u64::try_from(usage.ru_maxrss).ok()?;
        // Linux reports KiB, Apple platforms bytes.
        if cfg!(target_vendor = "apple") {
            Some(max)
        } else {
            Some(max * 1024)
        }
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Current resident set size in bytes (Linux), for tests and reports.
pub fn current_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = status.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Parses a byte size such as `512M`, `1.5G`, `4096`, `64k` (binary units).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..].to_ascii_lowercase();
            let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
                "" => 1,
                "k" => 1 << 10,
                "m" => 1 << 20,
                "g" => 1 << 30,
                "t" => 1 << 40,
                _ => return None,
            };
            (&s[..i], mult)
        }
        None => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v >= 0.0 && v.is_finite()).then_some((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_sizes() {
        assert_eq!(super::parse_bytes("512M"), Some(512 << 20));
        assert_eq!(super::parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(super::parse_bytes("4096"), Some(4096));
        assert_eq!(super::parse_bytes("64KiB"), Some(64 << 10));
        assert_eq!(super::parse_bytes("lots"), None);
        assert!(super::peak_rss_bytes().unwrap_or(1) > 0);
    }
}
