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
//! The integer kernels are written once (`int_kernels!`) over a
//! dot-accumulate step: base NEON uses 8x8-bit widening multiplies with
//! pairwise accumulation into i32 lanes, the dotprod level one SDOT per 16
//! bytes. Both form exact integer sums per block (per super-block for the
//! K-quants) and apply the scales exactly as the scalar kernels in `dot.rs`
//! do, so their results are bit-identical to each other and to the scalar
//! ones. The float kernels (base NEON at both levels) differ from the scalar
//! ones only by summation order.

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
    vld1q_u8(p)
}

#[inline]
#[target_feature(enable = "neon")]
unsafe fn ld_i8(p: *const i8) -> int8x16_t {
    vld1q_s8(p)
}

/// Four fp16 values (as u16 lanes) to f32, exactly: the exponent/mantissa bits
/// are moved into an f32 and rescaled by 2^112 (exact, subnormals included);
/// infinities and NaNs get an all-ones exponent.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn f16x4_to_f32(h: uint16x4_t) -> float32x4_t {
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

#[inline]
#[target_feature(enable = "neon")]
unsafe fn s8(v: uint8x16_t) -> int8x16_t {
    vreinterpretq_s8_u8(v)
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
    let w = row.as_ptr();
    float_dot!(
        act.n,
        act.x.as_ptr(),
        |i| vreinterpretq_f32_u8(ld_u8(w.add(4 * i))),
        |i| (w.add(4 * i) as *const f32).read_unaligned()
    )
}

/// # Safety
/// [`DotFn`] contract; NEON available.
#[target_feature(enable = "neon")]
unsafe fn dot_f16(row: &[u8], act: &Activation) -> f32 {
    let w = row.as_ptr();
    float_dot!(
        act.n,
        act.x.as_ptr(),
        |i| f16x4_to_f32(vreinterpret_u16_u8(vld1_u8(w.add(2 * i)))),
        |i| f16_at(row, 2 * i)
    )
}

/// # Safety
/// [`DotFn`] contract; NEON available.
#[target_feature(enable = "neon")]
unsafe fn dot_bf16(row: &[u8], act: &Activation) -> f32 {
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

        // ---------------------------------------------------------------------------
        // Legacy 32-element formats
        // ---------------------------------------------------------------------------

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q8_0(row: &[u8], act: &Activation) -> f32 {
            q8_0_tile::<1>(row, &[act])[0]
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q8_0(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            q8_0_tile::<4>(row, acts)
        }

        /// Q8_0 rows times `T` activations, each with the operations it gets alone.
        ///
        /// # Safety
        /// [`DotFn`] contract for every activation; the CPU has the kernel's features.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q8_0_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
            let mut sumf = [0f32; T];
            for (ib, blk) in row.chunks_exact(34).enumerate() {
                let b = blk.as_ptr();
                let (x0, x1) = (ld_i8(b.add(2) as *const i8), ld_i8(b.add(18) as *const i8));
                let d = f16_at(blk, 0);
                for t in 0..T {
                    let yb = acts[t].qs.as_ptr().add(32 * ib);
                    let acc = $dot!($dot!(vdupq_n_s32(0), x0, ld_i8(yb)), x1, ld_i8(yb.add(16)));
                    let sumi = vaddvq_s32(acc);
                    sumf[t] += sumi as f32 * (d * acts[t].d[ib]);
                }
            }
            sumf
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_0(row: &[u8], act: &Activation) -> f32 {
            let y = act.qs.as_ptr();
            let m4 = vdupq_n_u8(0x0F);
            let eight = vdupq_n_s8(8);
            let mut sumf = 0f32;
            for (ib, blk) in row.chunks_exact(18).enumerate() {
                let q = ld_u8(blk.as_ptr().add(2));
                let lo = vsubq_s8(s8(vandq_u8(q, m4)), eight);
                let hi = vsubq_s8(s8(vshrq_n_u8::<4>(q)), eight);
                let yb = y.add(32 * ib);
                let sumi = vaddvq_s32($dot!(
                    $dot!(vdupq_n_s32(0), lo, ld_i8(yb)),
                    hi,
                    ld_i8(yb.add(16))
                ));
                sumf += sumi as f32 * f16_at(blk, 0) * act.d[ib];
            }
            sumf
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_1(row: &[u8], act: &Activation) -> f32 {
            let y = act.qs.as_ptr();
            let m4 = vdupq_n_u8(0x0F);
            let mut sumf = 0f32;
            for (ib, blk) in row.chunks_exact(20).enumerate() {
                let q = ld_u8(blk.as_ptr().add(4));
                let lo = s8(vandq_u8(q, m4));
                let hi = s8(vshrq_n_u8::<4>(q));
                let yb = y.add(32 * ib);
                let sumi = vaddvq_s32($dot!(
                    $dot!(vdupq_n_s32(0), lo, ld_i8(yb)),
                    hi,
                    ld_i8(yb.add(16))
                ));
                sumf += (f16_at(blk, 0) * act.d[ib]) * sumi as f32 + f16_at(blk, 2) * act.s[ib];
            }
            sumf
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_0(row: &[u8], act: &Activation) -> f32 {
            let y = act.qs.as_ptr();
            let m4 = vdupq_n_u8(0x0F);
            let m16 = vdupq_n_s8(16);
            let mut sumf = 0f32;
            for (ib, blk) in row.chunks_exact(22).enumerate() {
                let b = blk.as_ptr();
                let (h0, h1) = high_bits32(b.add(2));
                let q = ld_u8(b.add(6));
                let lo = vsubq_s8(s8(vorrq_u8(vandq_u8(q, m4), h0)), m16);
                let hi = vsubq_s8(s8(vorrq_u8(vshrq_n_u8::<4>(q), h1)), m16);
                let yb = y.add(32 * ib);
                let sumi = vaddvq_s32($dot!(
                    $dot!(vdupq_n_s32(0), lo, ld_i8(yb)),
                    hi,
                    ld_i8(yb.add(16))
                ));
                sumf += (f16_at(blk, 0) * act.d[ib]) * sumi as f32;
            }
            sumf
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_1(row: &[u8], act: &Activation) -> f32 {
            let y = act.qs.as_ptr();
            let m4 = vdupq_n_u8(0x0F);
            let mut sumf = 0f32;
            for (ib, blk) in row.chunks_exact(24).enumerate() {
                let b = blk.as_ptr();
                let (h0, h1) = high_bits32(b.add(4));
                let q = ld_u8(b.add(8));
                let lo = s8(vorrq_u8(vandq_u8(q, m4), h0));
                let hi = s8(vorrq_u8(vshrq_n_u8::<4>(q), h1));
                let yb = y.add(32 * ib);
                let sumi = vaddvq_s32($dot!(
                    $dot!(vdupq_n_s32(0), lo, ld_i8(yb)),
                    hi,
                    ld_i8(yb.add(16))
                ));
                sumf += (f16_at(blk, 0) * act.d[ib]) * sumi as f32 + f16_at(blk, 2) * act.s[ib];
            }
            sumf
        }

        // ---------------------------------------------------------------------------
        // K-quants (activations Q8_K); bit-identical to dot.rs
        // ---------------------------------------------------------------------------

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q2_k(row: &[u8], act: &Activation) -> f32 {
            let m3 = vdupq_n_u8(3);
            let mut sumf = 0f32;
            for (i, blk) in row.chunks_exact(84).enumerate() {
                let b = blk.as_ptr();
                let y = act.qs.as_ptr().add(QK_K * i);
                let sc = &blk[..16];
                let bsums = &act.bsums[16 * i..16 * i + 16];
                let mut summs = 0i32;
                for j in 0..16 {
                    summs += bsums[j] as i32 * (sc[j] >> 4) as i32;
                }
                let mut acc = vdupq_n_s32(0);
                for h in 0..2 {
                    let qa = ld_u8(b.add(16 + 32 * h));
                    let qb = ld_u8(b.add(16 + 32 * h + 16));
                    for s in 0..4 {
                        let sh = vdupq_n_s8(-2 * s as i8);
                        let a = s8(vandq_u8(vshlq_u8(qa, sh), m3));
                        let c = s8(vandq_u8(vshlq_u8(qb, sh), m3));
                        let yb = y.add(128 * h + 32 * s);
                        let is = 8 * h + 2 * s;
                        acc = vmlaq_n_s32(
                            acc,
                            $dot!(vdupq_n_s32(0), a, ld_i8(yb)),
                            (sc[is] & 0xF) as i32,
                        );
                        acc = vmlaq_n_s32(
                            acc,
                            $dot!(vdupq_n_s32(0), c, ld_i8(yb.add(16))),
                            (sc[is + 1] & 0xF) as i32,
                        );
                    }
                }
                let isum = vaddvq_s32(acc);
                let yd = act.d[i];
                let dall = yd * f16_at(blk, 80);
                let dmin = yd * f16_at(blk, 82);
                sumf += dall * isum as f32 - dmin * summs as f32;
            }
            sumf
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q3_k(row: &[u8], act: &Activation) -> f32 {
            let m3 = vdupq_n_u8(3);
            let four = vdupq_n_u8(4);
            let mut sumf = 0f32;
            for (i, blk) in row.chunks_exact(110).enumerate() {
                let b = blk.as_ptr();
                let y = act.qs.as_ptr().add(QK_K * i);
                let sc = q3k_scales(&blk[96..108]);
                let hm = [ld_u8(b), ld_u8(b.add(16))];
                let mut acc = vdupq_n_s32(0);
                for h in 0..2 {
                    let q = [ld_u8(b.add(32 + 32 * h)), ld_u8(b.add(48 + 32 * h))];
                    for s in 0..4 {
                        let sh = vdupq_n_s8(-2 * s as i8);
                        let mask = vdupq_n_u8(1 << (4 * h + s));
                        for part in 0..2 {
                            let lo = vandq_u8(vshlq_u8(q[part], sh), m3);
                            // lo + 4 when the high bit is set; the value is that minus 4.
                            let hb = vandq_u8(vtstq_u8(hm[part], mask), four);
                            let v = vsubq_s8(s8(vorrq_u8(lo, hb)), vdupq_n_s8(4));
                            let yb = y.add(128 * h + 32 * s + 16 * part);
                            acc = vmlaq_n_s32(
                                acc,
                                $dot!(vdupq_n_s32(0), v, ld_i8(yb)),
                                sc[8 * h + 2 * s + part] as i32,
                            );
                        }
                    }
                }
                let isum = vaddvq_s32(acc);
                let d = f16_at(blk, 108) * act.d[i];
                sumf += d * isum as f32;
            }
            sumf
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_k(row: &[u8], act: &Activation) -> f32 {
            k4_tile::<1, false>(row, &[act])[0]
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q4_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            k4_tile::<4, false>(row, acts)
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_k(row: &[u8], act: &Activation) -> f32 {
            k4_tile::<1, true>(row, &[act])[0]
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q5_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            k4_tile::<4, true>(row, acts)
        }

        /// Q4_K (or, with `Q5`, Q5_K) rows times `T` activations, each with the operations
        /// it gets alone: the exact integer sum of each super-block, then the scales in the
        /// scalar kernels' order (so the same bits as `dot.rs`).
        ///
        /// # Safety
        /// [`DotFn`] contract for every activation; the CPU has the kernel's features.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn k4_tile<const T: usize, const Q5: bool>(
            row: &[u8],
            acts: &[&Activation; T],
        ) -> [f32; T] {
            let (block, quants) = if Q5 { (176, 48) } else { (144, 16) };
            let m4 = vdupq_n_u8(0x0F);
            let m16 = vdupq_n_u8(0x10);
            let mut sumf = [0f32; T];
            for (i, blk) in row.chunks_exact(block).enumerate() {
                let b = blk.as_ptr();
                let (scales, mins) = k4_scales_mins(&blk[4..16]);
                let qh = if Q5 {
                    [ld_u8(b.add(16)), ld_u8(b.add(32))]
                } else {
                    [vdupq_n_u8(0); 2]
                };
                let mut acc = [vdupq_n_s32(0); T];
                for c in 0..4 {
                    let q = [
                        ld_u8(b.add(quants + 32 * c)),
                        ld_u8(b.add(quants + 16 + 32 * c)),
                    ];
                    let mut l = [vdupq_n_s8(0); 2];
                    let mut h = [vdupq_n_s8(0); 2];
                    for part in 0..2 {
                        let mut lo = vandq_u8(q[part], m4);
                        let mut hi = vshrq_n_u8::<4>(q[part]);
                        if Q5 {
                            // Bit 2c of qh[l] is the fifth bit of low-nibble value l, bit
                            // 2c + 1 of the high-nibble one.
                            let u1 = vdupq_n_u8(1 << (2 * c));
                            let u2 = vdupq_n_u8(2 << (2 * c));
                            lo = vorrq_u8(lo, vandq_u8(vtstq_u8(qh[part], u1), m16));
                            hi = vorrq_u8(hi, vandq_u8(vtstq_u8(qh[part], u2), m16));
                        }
                        l[part] = s8(lo);
                        h[part] = s8(hi);
                    }
                    for t in 0..T {
                        let yb = acts[t].qs.as_ptr().add(QK_K * i + 64 * c);
                        let lo = $dot!(
                            $dot!(vdupq_n_s32(0), l[0], ld_i8(yb)),
                            l[1],
                            ld_i8(yb.add(16))
                        );
                        let hi = $dot!(
                            $dot!(vdupq_n_s32(0), h[0], ld_i8(yb.add(32))),
                            h[1],
                            ld_i8(yb.add(48))
                        );
                        acc[t] = vmlaq_n_s32(acc[t], lo, scales[2 * c] as i32);
                        acc[t] = vmlaq_n_s32(acc[t], hi, scales[2 * c + 1] as i32);
                    }
                }
                let (d, dmin) = (f16_at(blk, 0), f16_at(blk, 2));
                for t in 0..T {
                    let a = acts[t];
                    let summ = k4_min_sum(&a.bsums[16 * i..16 * i + 16], &mins);
                    let isum = vaddvq_s32(acc[t]);
                    let yd = a.d[i];
                    sumf[t] += (d * yd) * isum as f32;
                    sumf[t] -= (dmin * yd) * summ as f32;
                }
            }
            sumf
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q6_k(row: &[u8], act: &Activation) -> f32 {
            q6_k_tile::<1>(row, &[act])[0]
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q6_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            q6_k_tile::<4>(row, acts)
        }

        /// Q6_K rows times `T` activations, each with the operations it gets alone.
        ///
        /// # Safety
        /// [`DotFn`] contract for every activation; the CPU has the kernel's features.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
            let m4 = vdupq_n_u8(0x0F);
            let m3 = vdupq_n_u8(3);
            let m32 = vdupq_n_s8(32);
            let mut sumf = [0f32; T];
            for (i, blk) in row.chunks_exact(210).enumerate() {
                let b = blk.as_ptr();
                let sc = &blk[192..208];
                let mut acc = [vdupq_n_s32(0); T];
                for c in 0..2 {
                    for k in 0..2 {
                        let ql0 = ld_u8(b.add(64 * c + 16 * k));
                        let ql1 = ld_u8(b.add(64 * c + 32 + 16 * k));
                        let qh = ld_u8(b.add(128 + 32 * c + 16 * k));
                        let q = [
                            vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8::<4>(vandq_u8(qh, m3))),
                            vorrq_u8(
                                vandq_u8(ql1, m4),
                                vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(qh), m3)),
                            ),
                            vorrq_u8(
                                vshrq_n_u8::<4>(ql0),
                                vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(qh), m3)),
                            ),
                            vorrq_u8(vshrq_n_u8::<4>(ql1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh))),
                        ];
                        for (m, qm) in q.into_iter().enumerate() {
                            let v = vsubq_s8(s8(qm), m32);
                            let scale = (sc[8 * c + 2 * m + k] as i8) as i32;
                            for t in 0..T {
                                let y = acts[t].qs.as_ptr().add(QK_K * i);
                                let yb = y.add(128 * c + 32 * m + 16 * k);
                                let p = $dot!(vdupq_n_s32(0), v, ld_i8(yb));
                                acc[t] = vmlaq_n_s32(acc[t], p, scale);
                            }
                        }
                    }
                }
                let d = f16_at(blk, 208);
                for t in 0..T {
                    let isum = vaddvq_s32(acc[t]);
                    sumf[t] += (d * acts[t].d[i]) * isum as f32;
                }
            }
            sumf
        }
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
