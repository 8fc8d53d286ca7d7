//! NEON dot-product kernels for aarch64.
//!
//! Two levels, selected by `quant::kernel` from run-time detection: base NEON
//! (every aarch64 CPU) and NEON + `dotprod` (SDOT; Armv8.2+ cores such as
//! Cortex-A55/A76 and Apple M1+). Every kernel is an `unsafe fn` with the
//! [`DotFn`] contract: `row` holds exactly `act.n` elements of the weight type
//! and `act` was prepared as its `vec_dot_type`, so every pointer offset below
//! stays inside `row`, `act.qs`, `act.d`, `act.s` or `act.x`. Loads go through
//! byte pointers (`vld1q_u8` / `vld1q_s8`), which need no alignment.
//!
//! The integer kernels are written once (`legacy.rs`, `kquants.rs`, joined by
//! `int_kernels!`) over a
//! dot-accumulate step: base NEON uses 8x8-bit widening multiplies with
//! pairwise accumulation into i32 lanes, the dotprod level one SDOT per 16
//! bytes. Both form exact integer sums per block (per super-block for the
//! K-quants) and apply the scales exactly as the scalar kernels in `dot.rs`
//! do, so their results are bit-identical to each other and to the scalar
//! ones. The float kernels (base NEON at both levels) differ from the scalar
//! ones only by summation order.

#[macro_use]
mod kquants;
#[macro_use]
mod legacy;

use std::arch::aarch64::*;
use std::arch::asm;

use super::dot::{k4_min_sum, k4_scales_mins};
use super::reference::{f16_at, q3k_scales, QK_K};
use super::GgmlType;
use super::{Activation, Dot4Fn, DotFn};

/// The base-NEON kernel for `t`, if there is one.
pub(crate) fn kernel(t: GgmlType) -> Option<DotFn> {
    Some(match t {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::BF16 => dot_bf16,
        _ => return base::kernel(t),
    })
}

/// The base-NEON four-activation kernel for `t`, where one exists.
pub(crate) fn kernel4(t: GgmlType) -> Option<Dot4Fn> {
    base::kernel4(t)
}

/// The NEON + dotprod four-activation kernel for `t`, where one exists.
pub(crate) fn kernel4_dotprod(t: GgmlType) -> Option<Dot4Fn> {
    sdot::kernel4(t)
}

/// The NEON + dotprod kernel for `t`, if there is one (float types: the base-NEON ones).
pub(crate) fn kernel_dotprod(t: GgmlType) -> Option<DotFn> {
    sdot::kernel(t).or_else(|| kernel(t))
}

// ---------------------------------------------------------------------------
// Helpers. Callers guarantee NEON and pointer validity.
// ---------------------------------------------------------------------------

/// `$acc` plus the products of the 16 signed bytes of `$x` and `$y`, summed
/// pairwise into 4 i32 lanes, with base NEON. Exact (|product| <= 2^14 fits i16).
macro_rules! dot_acc_neon {
    ($acc:expr, $x:expr, $y:expr) => {{
        let (x, y): (int8x16_t, int8x16_t) = ($x, $y);
        let p0 = vmull_s8(vget_low_s8(x), vget_low_s8(y));
        vpadalq_s16(vpadalq_s16($acc, p0), vmull_high_s8(x, y))
    }};
}

/// `$acc` plus the products of the 16 signed bytes of `$x` and `$y`, each lane
/// summing 4 consecutive products: one SDOT. `vdotq_s32` is still unstable
/// (`stdarch_neon_dotprod`) on the rustc used here (1.95), hence `asm!`; it
/// only assembles inside functions compiled with the `dotprod` feature.
macro_rules! dot_acc_sdot {
    ($acc:expr, $x:expr, $y:expr) => {{
        let mut acc: int32x4_t = $acc;
        let (x, y): (int8x16_t, int8x16_t) = ($x, $y);
        // SAFETY: SDOT only reads and writes these three vector registers; the
        // enclosing kernel is compiled with, and only selected on CPUs with, `dotprod`.
        // (The kernels invoke this inside their own `unsafe` block, which makes this one
        // redundant there; it stays so that the step is sound wherever it is expanded.)
        #[allow(unused_unsafe)]
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {x:v}.16b, {y:v}.16b",
                acc = inout(vreg) acc,
                x = in(vreg) x,
                y = in(vreg) y,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        acc
    }};
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld_u8(p: *const u8) -> uint8x16_t {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { vld1q_u8(p) }
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld_i8(p: *const i8) -> int8x16_t {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { vld1q_s8(p) }
}

/// Four fp16 values (as u16 lanes) to f32, exactly: the exponent/mantissa bits
/// are moved into an f32 and rescaled by 2^112 (exact, subnormals included);
/// infinities and NaNs get an all-ones exponent.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let w = vmovl_u16(h);
        let sign = vshlq_n_u32::<16>(vandq_u32(w, vdupq_n_u32(0x8000)));
        let em = vandq_u32(w, vdupq_n_u32(0x7fff));
        let shifted = vshlq_n_u32::<13>(em);
        let scaled = vmulq_f32(
            vreinterpretq_f32_u32(shifted),
            vdupq_n_f32(f32::from_bits(0x7780_0000)),
        );
        let special = vcgeq_u32(em, vdupq_n_u32(0x7c00));
        let infnan = vorrq_u32(shifted, vdupq_n_u32(0x7f80_0000));
        let r = vbslq_u32(special, infnan, vreinterpretq_u32_f32(scaled));
        vreinterpretq_f32_u32(vorrq_u32(r, sign))
    }
}

/// For each byte value, 8 bytes holding 0x10 where the corresponding bit is set.
const BIT_TO_0X10: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut v = 0;
    while v < 256 {
        let mut k = 0;
        while k < 8 {
            if (v >> k) & 1 == 1 {
                t[v] |= 0x10u64 << (8 * k);
            }
            k += 1;
        }
        v += 1;
    }
    t
};

/// The 32 bits at `p` as two vectors of 16 bytes, 0x10 where the bit is set.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn high_bits32(p: *const u8) -> (uint8x16_t, uint8x16_t) {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let lo = [BIT_TO_0X10[*p as usize], BIT_TO_0X10[*p.add(1) as usize]];
        let hi = [
            BIT_TO_0X10[*p.add(2) as usize],
            BIT_TO_0X10[*p.add(3) as usize],
        ];
        (
            vld1q_u8(lo.as_ptr() as *const u8),
            vld1q_u8(hi.as_ptr() as *const u8),
        )
    }
}

// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "neon")]
unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { vreinterpretq_s8_u8(v) }
}

// ---------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------

/// Sum over `0..$n` of `$load(i) * x[i]` (4 lanes at a time, four
/// accumulators), `$scalar(i) * x[i]` for the tail. A macro so that the loads
/// are compiled with the kernel's target features.
macro_rules! float_dot {
    ($n:expr, $x:expr, |$i:ident| $load:expr, |$j:ident| $scalar:expr) => {{
        let n: usize = $n;
        let x: *const f32 = $x;
        let mut a0 = vdupq_n_f32(0.0);
        let mut a1 = vdupq_n_f32(0.0);
        let mut a2 = vdupq_n_f32(0.0);
        let mut a3 = vdupq_n_f32(0.0);
        let mut base = 0usize;
        while base + 16 <= n {
            let $i = base;
            a0 = vfmaq_f32(a0, $load, vld1q_f32(x.add(base)));
            let $i = base + 4;
            a1 = vfmaq_f32(a1, $load, vld1q_f32(x.add(base + 4)));
            let $i = base + 8;
            a2 = vfmaq_f32(a2, $load, vld1q_f32(x.add(base + 8)));
            let $i = base + 12;
            a3 = vfmaq_f32(a3, $load, vld1q_f32(x.add(base + 12)));
            base += 16;
        }
        while base + 4 <= n {
            let $i = base;
            a0 = vfmaq_f32(a0, $load, vld1q_f32(x.add(base)));
            base += 4;
        }
        let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
        while base < n {
            let $j = base;
            s += $scalar * *x.add(base);
            base += 1;
        }
        s
    }};
}

/// # Safety
/// [`DotFn`] contract; NEON available.
#[target_feature(enable = "neon")]
unsafe fn dot_f32(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        float_dot!(
            act.n,
            act.x.as_ptr(),
            |i| vreinterpretq_f32_u8(ld_u8(w.add(4 * i))),
            |i| (w.add(4 * i) as *const f32).read_unaligned()
        )
    }
}

/// # Safety
/// [`DotFn`] contract; NEON available.
#[target_feature(enable = "neon")]
unsafe fn dot_f16(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        float_dot!(
            act.n,
            act.x.as_ptr(),
            |i| f16x4_to_f32(vreinterpret_u16_u8(vld1_u8(w.add(2 * i)))),
            |i| f16_at(row, 2 * i)
        )
    }
}

/// # Safety
/// [`DotFn`] contract; NEON available.
#[target_feature(enable = "neon")]
unsafe fn dot_bf16(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        float_dot!(
            act.n,
            act.x.as_ptr(),
            |i| vreinterpretq_f32_u32(vshll_n_u16::<16>(vreinterpret_u16_u8(vld1_u8(
                w.add(2 * i)
            )))),
            |i| f32::from_bits(((w.add(2 * i) as *const u16).read_unaligned() as u32) << 16)
        )
    }
}

// ---------------------------------------------------------------------------
// Integer kernels, instantiated for base NEON and for NEON + dotprod
// ---------------------------------------------------------------------------

/// Defines the integer kernels and their `kernel` lookup, compiled with the
/// target features `$feat` and the dot-accumulate step `$dot` (a macro name).
macro_rules! int_kernels {
    ($feat:literal, $dot:ident) => {
        /// The kernel for `t`, if it is an integer type.
        pub(super) fn kernel(t: GgmlType) -> Option<DotFn> {
            Some(match t {
                GgmlType::Q4_0 => dot_q4_0,
                GgmlType::Q4_1 => dot_q4_1,
                GgmlType::Q5_0 => dot_q5_0,
                GgmlType::Q5_1 => dot_q5_1,
                GgmlType::Q8_0 => dot_q8_0,
                GgmlType::Q2K => dot_q2_k,
                GgmlType::Q3K => dot_q3_k,
                GgmlType::Q4K => dot_q4_k,
                GgmlType::Q5K => dot_q5_k,
                GgmlType::Q6K => dot_q6_k,
                _ => return None,
            })
        }

        /// The four-activation kernel for `t`, where one exists (see [`Dot4Fn`]).
        pub(super) fn kernel4(t: GgmlType) -> Option<Dot4Fn> {
            Some(match t {
                GgmlType::Q8_0 => dot4_q8_0,
                GgmlType::Q4K => dot4_q4_k,
                GgmlType::Q5K => dot4_q5_k,
                GgmlType::Q6K => dot4_q6_k,
                _ => return None,
            })
        }

        legacy_kernels!($feat, $dot);
        kquant_kernels!($feat, $dot);
    };
}

/// Base NEON (no `dotprod`).
mod base {
    use super::*;
    int_kernels!("neon", dot_acc_neon);
}

/// NEON + `dotprod` (SDOT).
mod sdot {
    use super::*;
    int_kernels!("neon,dotprod", dot_acc_sdot);
}
