//! Compile-time facts about the toolchain.
//!
//! The AVX-512 intrinsics are stable from Rust 1.89, above the crate's minimum (1.80): with an
//! older compiler the AVX-512 kernels are left out (`edgemoe_avx512` unset) and x86_64 builds
//! use the AVX2 ones.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(edgemoe_avx512)");
    println!("cargo:rerun-if-env-changed=RUSTC");
    soname();
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

/// On Linux and Android the shared library's SONAME carries the ABI version
/// (`libedgemoe.so.N`, N = `EMOE_ABI_VERSION` in src/capi/mod.rs), so a program linked against
/// one ABI never loads a library of another.
fn soname() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/capi/mod.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" && os != "android" {
        return;
    }
    let capi = std::fs::read_to_string("src/capi/mod.rs").expect("src/capi/mod.rs");
    let abi = capi
        .lines()
        .find_map(|l| l.trim().strip_prefix("pub const EMOE_ABI_VERSION: u32 = "))
        .and_then(|rest| rest.trim_end_matches(';').trim().parse::<u32>().ok())
        .expect("src/capi/mod.rs defines `pub const EMOE_ABI_VERSION: u32 = N;`");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libedgemoe.so.{abi}");
}
