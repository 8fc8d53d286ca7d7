//! Compile-time facts about the toolchain.
//!
//! The AVX-512 intrinsics are stable from Rust 1.89, above the crate's minimum (1.80): with an
//! older compiler the AVX-512 kernels are left out (`edgemoe_avx512` unset) and x86_64 builds
//! use the AVX2 ones.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(edgemoe_avx512)");
    println!("cargo:rerun-if-env-changed=RUSTC");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.split_whitespace()
                .nth(1)?
                .split('.')
                .nth(1)?
                .parse::<u32>()
                .ok()
        });
    if minor.is_some_and(|m| m >= 89) {
        println!("cargo:rustc-cfg=edgemoe_avx512");
    }
}
