//! Kernel selection: the instruction-set level detected at run time (or capped by the
//! `EDGEMOE_FORCE_*` variables) and the dot-product kernel of each weight type at a level.

#![forbid(unsafe_code)]

use std::sync::OnceLock;

#[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
use super::avx512;
#[cfg(target_arch = "aarch64")]
use super::neon;
#[cfg(target_arch = "x86_64")]
use super::x86;
use super::{dot, Activation, GgmlType};

/// Instruction-set level of the dot-product kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F/BW/VL + VNNI (on top of AVX2): the types in `avx512/`, AVX2 for the rest.
    #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
    /// NEON + dotprod (SDOT): the integer types in `neon/`'s `sdot`, base NEON for the rest.
    #[cfg(target_arch = "aarch64")]
    NeonDot,
}

/// Whether a value of `EDGEMOE_FORCE_SCALAR` (or `_AVX2`, `_NEON`) asks for it:
/// anything but unset, empty or `0`.
pub(super) fn force_scalar(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// The level to use: the best one detected, unless `EDGEMOE_FORCE_SCALAR` asks for the
/// portable code, `EDGEMOE_FORCE_AVX2` caps x86_64 at AVX2 or `EDGEMOE_FORCE_NEON` caps
/// aarch64 at base NEON (so every SIMD path can be exercised on one machine).
fn detect() -> Level {
    let env = |k: &str| std::env::var(k).ok();
    choose(
        best_level(),
        force_scalar(env("EDGEMOE_FORCE_SCALAR").as_deref()),
        force_scalar(env("EDGEMOE_FORCE_AVX2").as_deref()),
        force_scalar(env("EDGEMOE_FORCE_NEON").as_deref()),
    )
}

pub(super) fn choose(best: Level, scalar: bool, avx2: bool, neon: bool) -> Level {
    if scalar {
        return Level::Scalar;
    }
    #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
    if avx2 && best == Level::Avx512 {
        return Level::Avx2;
    }
    #[cfg(target_arch = "aarch64")]
    if neon && best == Level::NeonDot {
        return Level::Neon;
    }
    let _ = (avx2, neon);
    best
}

/// The best level this CPU supports, ignoring the environment.
pub(crate) fn best_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            #[cfg(edgemoe_avx512)]
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
            {
                return Level::Avx512;
            }
            return Level::Avx2;
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            if std::arch::is_aarch64_feature_detected!("dotprod") {
                return Level::NeonDot;
            }
            return Level::Neon;
        }
    }
    Level::Scalar
}

/// Every SIMD level this CPU supports (for tests: each is checked against the scalar code).
#[cfg(test)]
pub(crate) fn supported_levels() -> Vec<Level> {
    let best = best_level();
    let mut levels = vec![best];
    #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
    if best == Level::Avx512 {
        levels.push(Level::Avx2);
    }
    #[cfg(target_arch = "aarch64")]
    if best == Level::NeonDot {
        levels.push(Level::Neon);
    }
    levels.retain(|&l| l != Level::Scalar);
    levels
}

pub(super) fn level() -> Level {
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(detect)
}

/// Name of the dot-product kernels in use: `"avx512"`, `"avx2"`, `"neon-dotprod"`, `"neon"`
/// or `"scalar"`.
pub fn kernel_name() -> &'static str {
    level_name(level())
}

pub(super) fn level_name(level: Level) -> &'static str {
    match level {
        Level::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => "avx2",
        #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
        Level::Avx512 => "avx512",
        #[cfg(target_arch = "aarch64")]
        Level::Neon => "neon",
        #[cfg(target_arch = "aarch64")]
        Level::NeonDot => "neon-dotprod",
    }
}

/// A dot-product kernel.
///
/// # Safety
/// The caller guarantees that `row` holds exactly `act.n` elements of the
/// kernel's weight type, that `act` was prepared as that type's
/// [`vec_dot_type`], and that the CPU supports the kernel's instruction set.
pub(crate) type DotFn = unsafe fn(&[u8], &Activation) -> f32;

/// A dot-product kernel taking one weight row and four activations: the four results are
/// bit-identical to four calls of the type's [`DotFn`] at the same level (each activation
/// gets the same operations; only the weight decoding is shared).
///
/// # Safety
/// The [`DotFn`] contract for each of the four activations.
pub(crate) type Dot4Fn = unsafe fn(&[u8], &[&Activation; 4]) -> [f32; 4];

/// The four-activation kernel for `weight_type` at `level`, where one exists.
pub(crate) fn kernel4(weight_type: GgmlType, level: Level) -> Option<Dot4Fn> {
    match level {
        #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
        Level::Avx512 => avx512::kernel4(weight_type),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86::kernel4(weight_type),
        #[cfg(target_arch = "aarch64")]
        Level::Neon => neon::kernel4(weight_type),
        #[cfg(target_arch = "aarch64")]
        Level::NeonDot => neon::kernel4_dotprod(weight_type),
        _ => {
            let _ = weight_type;
            None
        }
    }
}

/// The kernel for `weight_type` at `level`.
pub(crate) fn kernel(weight_type: GgmlType, level: Level) -> DotFn {
    match level {
        #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
        Level::Avx512 => {
            if let Some(f) = avx512::kernel(weight_type).or_else(|| x86::kernel(weight_type)) {
                return f;
            }
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => {
            if let Some(f) = x86::kernel(weight_type) {
                return f;
            }
        }
        #[cfg(target_arch = "aarch64")]
        Level::Neon => {
            if let Some(f) = neon::kernel(weight_type) {
                return f;
            }
        }
        #[cfg(target_arch = "aarch64")]
        Level::NeonDot => {
            if let Some(f) = neon::kernel_dotprod(weight_type) {
                return f;
            }
        }
        Level::Scalar => {}
    }
    dot::kernel(weight_type)
}
