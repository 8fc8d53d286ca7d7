//! AVX-512 (F, BW, VL) + VNNI dot-product kernels for x86_64.
//!
//! Selected by `quant::kernel` only when those features (and AVX2, FMA, F16C) were detected
//! at run time; types without a kernel here use the AVX2 ones. Every kernel is an `unsafe fn`
//! with the [`DotFn`] contract: `row` holds exactly `act.n` elements of the weight type and
//! `act` was prepared as its `vec_dot_type`, so every pointer offset below stays inside `row`,
//! `act.qs`, `act.d`, `act.bsums` or `act.x`. All loads are unaligned (or masked) loads.
//!
//! Integer products use VNNI: `vpdpbusd` (unsigned bytes times signed bytes, summed in fours
//! into i32 without saturation) for the 32-element formats, `vpmaddubsw` + `vpdpwssd` (16-bit
//! products times the sub-block scales, accumulated in i32) for the K-quants. Each block's
//! integer sums are exact; they are scaled into float lanes and summed horizontally once per
//! row, so results differ from the scalar kernels by float summation order only. The `_tile`
//! forms take several activations per weight row (prompts) and give each the same operations
//! as a single call: bit-identical whatever the batch.

use std::arch::asm;
use std::arch::x86_64::*;

use super::dot::k4_scales_mins_packed;
use super::reference::QK_K;
use super::GgmlType;
use super::{Activation, Dot4Fn, DotFn};

/// The AVX-512 kernel for `t`, if there is one.
pub(crate) fn kernel(t: GgmlType) -> Option<DotFn> {
    Some(match t {
        GgmlType::F32 => dot_f32,
        GgmlType::F16 => dot_f16,
        GgmlType::Q4_0 => dot_q4_0,
        GgmlType::Q8_0 => dot_q8_0,
        GgmlType::Q4K => dot_q4_k,
        GgmlType::Q5K => dot_q5_k,
        GgmlType::Q6K => dot_q6_k,
        _ => return None,
    })
}

/// The AVX-512 kernel taking four activations at once for `t`, if there is one.
pub(crate) fn kernel4(t: GgmlType) -> Option<Dot4Fn> {
    Some(match t {
        GgmlType::Q8_0 => dot4_q8_0,
        GgmlType::Q4K => dot4_q4_k,
        GgmlType::Q5K => dot4_q5_k,
        GgmlType::Q6K => dot4_q6_k,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------
// Helpers. Callers guarantee the target features and pointer validity.
// ---------------------------------------------------------------------------

/// `acc + pairwise(a * b)` as one `vpdpwssd`. LLVM, tuning for a generic x86-64, splits the
/// intrinsic into `vpmaddwd` + `vpaddd`: two vector-port instructions instead of one, in the
/// K-quant kernels' busiest loop: Q4_K four-token tiles ran 4% faster with the single
/// instruction, in-process A/B on Cascade Lake.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let mut acc = acc;
        // SAFETY: register-only instruction; callers run with AVX-512 VNNI enabled.
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}

/// The fp16 at `p` (2 readable bytes) as f32; exact.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn f16_load(p: *const u8) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let h = (p as *const u16).read_unaligned();
        // Moved in with `vmovd`, which writes the whole register. From the intrinsics alone LLVM
        // emits a `vpinsrw` from memory that merges into whatever register it picks, often a
        // loop's accumulator, so every block waited for the previous block's FMA (q8_0 matvec ran
        // at a third of its speed).
        let v: __m128i;
        // SAFETY: `vmovd` only moves a general register into a vector register (AVX is enabled);
        // it touches no memory and no flags.
        asm!("vmovd {v}, {h:e}", h = in(reg) u32::from(h), v = out(xmm_reg) v,
            options(pure, nomem, nostack, preserves_flags));
        _mm_cvtss_f32(_mm_cvtph_ps(v))
    }
}

/// Sums of four products of `|x|` and `y * sign(x)`: the signed byte dot product of `x` and
/// `y` in 16 i32 lanes. Exact for every `x` (|-128| is 128 as an unsigned byte) and for `y`
/// without -128 (activations are in [-127, 127]).
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_i8(x: __m512i, y: __m512i) -> __m512i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let zero = _mm512_setzero_si512();
        let negative = _mm512_movepi8_mask(x);
        let sy = _mm512_mask_sub_epi8(y, negative, zero, y);
        _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(x), sy)
    }
}

/// The 256-bit form of [`dot_i8`], for a single 32-element block.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_i8_256(x: __m256i, y: __m256i) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let sy = _mm256_sign_epi8(y, x);
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(x, x), sy)
    }
}

/// Two 256-bit halves as one 512-bit vector (`lo` in the low half).
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi) }
}

/// 16 f32 lanes: `a` in the low 8, `b` in the high 8.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn halves_ps(a: f32, b: f32) -> __m512 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(a), _mm512_set1_ps(b)) }
}

// ---------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------

/// Sum over `0..$n` of `$load(i, mask) * x[i]`, 16 lanes at a time with four accumulators;
/// the tail is one masked step. A macro so that the loads compile with the kernel's features.
macro_rules! float_dot {
    ($n:expr, $x:expr, |$i:ident, $m:ident| $load:expr) => {{
        let n: usize = $n;
        let x: *const f32 = $x;
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut base = 0usize;
        let $m: __mmask16 = 0xFFFF;
        while base + 64 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let $i = base + 16 * k;
                *a = _mm512_fmadd_ps($load, _mm512_loadu_ps(x.add($i)), *a);
            }
            base += 64;
        }
        while base + 16 <= n {
            let $i = base;
            acc[0] = _mm512_fmadd_ps($load, _mm512_loadu_ps(x.add($i)), acc[0]);
            base += 16;
        }
        if base < n {
            let $i = base;
            let $m: __mmask16 = (1u32 << (n - base)) as u16 - 1;
            acc[1] = _mm512_fmadd_ps($load, _mm512_maskz_loadu_ps($m, x.add($i)), acc[1]);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ))
    }};
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_f32(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr() as *const f32;
        float_dot!(act.n, act.x.as_ptr(), |i, m| _mm512_maskz_loadu_ps(
            m,
            w.add(i)
        ))
    }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_f16(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr() as *const i16;
        float_dot!(act.n, act.x.as_ptr(), |i, m| _mm512_cvtph_ps(
            _mm256_maskz_loadu_epi16(m, w.add(i))
        ))
    }
}

// ---------------------------------------------------------------------------
// Legacy 32-element formats: two blocks per 512-bit step
// ---------------------------------------------------------------------------

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q8_0(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q8_0_tile::<1>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot4_q8_0(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q8_0_tile::<4>(row, acts) }
}

/// `row · acts[t]` for `T` activations: each pair of weight blocks is loaded and its signs
/// split off once for all of them. Every activation gets exactly the operations it would get
/// alone, so the results do not depend on `T`.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q8_0_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let w = row.as_ptr();
        let nb = acts[0].n / 32;
        let zero = _mm512_setzero_si512();
        let bias = _mm512_set1_epi8(-128);
        let halves = _mm512_loadu_si512(HALVES.as_ptr() as *const _);
        let mut acc = [_mm512_setzero_ps(); T];
        let mut ib = 0;
        while ib + 2 <= nb {
            let (b0, b1) = (w.add(34 * ib), w.add(34 * ib + 34));
            let x = join(
                _mm256_loadu_si256(b0.add(2) as *const __m256i),
                _mm256_loadu_si256(b1.add(2) as *const __m256i),
            );
            // vpdpbusd multiplies unsigned by signed bytes: the activations come biased by 128,
            // so each group of four starts from -128 times the sum of its weights (exact in i32).
            let start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, bias, x));
            let wd = halves_ps(f16_load(b0), f16_load(b1));
            for (a, acc) in acts.iter().zip(acc.iter_mut()) {
                let y = _mm512_loadu_si512(a.biased.as_ptr().add(32 * ib) as *const _);
                let p = _mm512_dpbusd_epi32(start, y, x);
                // The two blocks' activation scales, each in 8 lanes.
                let yd = _mm_castsi128_ps(_mm_loadl_epi64(a.d.as_ptr().add(ib) as *const __m128i));
                let yd = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(yd));
                *acc = _mm512_fmadd_ps(_mm512_mul_ps(wd, yd), _mm512_cvtepi32_ps(p), *acc);
            }
            ib += 2;
        }
        let mut out = [0f32; T];
        for (o, (a, acc)) in out.iter_mut().zip(acts.iter().zip(acc)) {
            *o = _mm512_reduce_add_ps(acc);
            if ib < nb {
                let b = w.add(34 * ib);
                let p = dot_i8_256(
                    _mm256_loadu_si256(b.add(2) as *const __m256i),
                    _mm256_loadu_si256(a.qs.as_ptr().add(32 * ib) as *const __m256i),
                );
                let s = _mm512_reduce_add_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(p)));
                *o += s * (f16_load(b) * a.d[ib]);
            }
        }
        out
    }
}

/// 32 nibbles of the 16 bytes at `p`: low nibbles then high nibbles, as 32 bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe {
        let lo = _mm_loadu_si128(p as *const __m128i);
        let hi = _mm_srli_epi16::<4>(lo);
        _mm256_and_si256(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(0x0F))
    }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q4_0(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (w, y, d) = (row.as_ptr(), act.qs.as_ptr(), act.d.as_ptr());
        let nb = act.n / 32;
        let eight = _mm512_set1_epi8(8);
        let mut acc = _mm512_setzero_ps();
        let mut ib = 0;
        while ib + 2 <= nb {
            let (b0, b1) = (w.add(18 * ib), w.add(18 * ib + 18));
            let x = _mm512_sub_epi8(join(nibbles32(b0.add(2)), nibbles32(b1.add(2))), eight);
            let p = dot_i8(x, _mm512_loadu_si512(y.add(32 * ib) as *const _));
            let dd = halves_ps(f16_load(b0) * *d.add(ib), f16_load(b1) * *d.add(ib + 1));
            acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(p), acc);
            ib += 2;
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        if ib < nb {
            let b = w.add(18 * ib);
            let x = _mm256_sub_epi8(nibbles32(b.add(2)), _mm256_set1_epi8(8));
            let p = dot_i8_256(x, _mm256_loadu_si256(y.add(32 * ib) as *const __m256i));
            let s = _mm512_reduce_add_ps(_mm512_zextps256_ps512(_mm256_cvtepi32_ps(p)));
            sum += s * (f16_load(b) * *d.add(ib));
        }
        sum
    }
}

// ---------------------------------------------------------------------------
// K-quants (activations Q8_K)
//
// Each super-block's integer products are formed exactly in i32 lanes (`vpmaddubsw` pairs,
// then `vpdpwssd` with the sub-block scales) and scaled into float lanes; one horizontal sum
// per row. The lanes make the float summation order differ from `dot.rs` (a tolerance in the
// tests), and the `_tile` forms decode each weight block once for several activations while
// giving each activation the same operations as alone: bit-identical for any batch.
// ---------------------------------------------------------------------------

/// `vpermps` indices putting element 0 in lanes 0..8 and element 1 in lanes 8..16.
static HALVES: [i32; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];

/// Sum of the 8 f32 lanes of `v`.
// The `std::arch` calls below are safe here from Rust 1.87 on; the crate's minimum (1.80)
// still needs the `unsafe` block.
#[allow(unused_unsafe)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn hsum256_ps(v: __m256) -> f32 {
    // SAFETY: the caller runs this on a CPU with its target features, and every byte read
    // through a pointer argument is readable (this function's contract).
    unsafe { _mm512_reduce_add_ps(_mm512_zextps256_ps512(v)) }
}

/// Index vectors for `vpermw` picking a Q4_K/Q5_K chunk's two scales out of the 16 i16
/// lanes (8 scales, 8 mins): chunk `c`'s 64 products (as 32 i16 pair sums) take scale `2c`
/// in lanes 0..16 (low nibbles) and `2c + 1` in lanes 16..32 (high nibbles).
static K4_PICK: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut c = 0;
    while c < 4 {
        let mut l = 0;
        while l < 32 {
            t[c][l] = (2 * c + l / 16) as i16;
            l += 1;
        }
        c += 1;
    }
    t
};

/// `vpermw` indices duplicating the mins (lanes 8..16) pairwise, to meet the 16 bsums.
static K4_DUP_MINS: [i16; 16] = [8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15];

/// Index vectors picking Q6_K scales: in group `g` (64 values, 32 i16 pair sums) lanes
/// `8j..8j + 8` take scale `4g + j`.
static Q6K_PICK: [[i16; 32]; 4] = {
    let mut t = [[0i16; 32]; 4];
    let mut g = 0;
    while g < 4 {
        let mut l = 0;
        while l < 32 {
            t[g][l] = (4 * g + l / 8) as i16;
            l += 1;
        }
        g += 1;
    }
    t
};

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q4_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<1, false>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot4_q4_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<4, false>(row, acts) }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q5_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<1, true>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot4_q5_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { k4_tile::<4, true>(row, acts) }
}

/// Q4_K (`Q5 = false`, 144-byte blocks) or Q5_K (`Q5 = true`, 176-byte blocks with a fifth
/// bit plane) rows times `T` activations.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn k4_tile<const T: usize, const Q5: bool>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let (block, quants) = if Q5 { (176, 48) } else { (144, 16) };
        let m4 = _mm512_set1_epi8(0x0F);
        let sixteen = _mm512_set1_epi8(16);
        let pick = K4_PICK.map(|p| _mm512_loadu_si512(p.as_ptr() as *const _));
        let dup_mins = _mm256_loadu_si256(K4_DUP_MINS.as_ptr() as *const __m256i);
        let mut acc = [_mm512_setzero_ps(); T];
        let mut acc_min = [_mm256_setzero_ps(); T];
        for (i, blk) in row.chunks_exact(block).enumerate() {
            let b = blk.as_ptr();
            let (scales, mins) = k4_scales_mins_packed(&*(b.add(4) as *const [u8; 12]));
            // 16 i16 lanes: the 8 scales, then the 8 mins.
            let sm = _mm256_cvtepu8_epi16(_mm_set_epi64x(mins as i64, scales as i64));
            let mins = _mm256_permutexvar_epi16(dup_mins, sm);
            let sm = _mm512_castsi256_si512(sm);
            // [d, dmin] as f32.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128((b as *const i32).read_unaligned()));
            let qh = if Q5 {
                let h = _mm256_loadu_si256(b.add(16) as *const __m256i);
                join(h, h)
            } else {
                _mm512_setzero_si512()
            };
            let mut q = [_mm512_setzero_si512(); 4];
            let mut sc = [_mm512_setzero_si512(); 4];
            for c in 0..4 {
                // 32 bytes hold 64 values: low nibbles (scale 2c) then high nibbles (2c + 1),
                // matching the 64 activations at 64c.
                let bits = _mm256_loadu_si256(b.add(quants + 32 * c) as *const __m256i);
                q[c] = _mm512_and_si512(join(bits, _mm256_srli_epi16::<4>(bits)), m4);
                if Q5 {
                    // Bit 2c of qh[l] is the fifth bit of the low-nibble value l, bit 2c + 1 of
                    // the high-nibble one.
                    let sel = join(
                        _mm256_set1_epi8((1u8 << (2 * c)) as i8),
                        _mm256_set1_epi8((2u8 << (2 * c)) as i8),
                    );
                    let high = _mm512_test_epi8_mask(qh, sel);
                    q[c] = _mm512_mask_add_epi8(q[c], high, q[c], sixteen);
                }
                sc[c] = _mm512_permutexvar_epi16(pick[c], sm);
            }
            for t in 0..T {
                let a = acts[t];
                let y = a.qs.as_ptr().add(QK_K * i);
                let mut sumi = _mm512_setzero_si512();
                for c in 0..4 {
                    // u5 x i8 pair sums fit i16 (at most 2 * 31 * 127).
                    let p =
                        _mm512_maddubs_epi16(q[c], _mm512_loadu_si512(y.add(64 * c) as *const _));
                    sumi = dpwssd(sumi, p, sc[c]);
                }
                let bsums = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i) as *const __m256i);
                let summ = _mm256_madd_epi16(bsums, mins);
                let dmy = _mm_mul_ps(dm, _mm_set1_ps(*a.d.get_unchecked(i)));
                acc[t] =
                    _mm512_fmadd_ps(_mm512_broadcastss_ps(dmy), _mm512_cvtepi32_ps(sumi), acc[t]);
                acc_min[t] = _mm256_fmadd_ps(
                    _mm256_broadcastss_ps(_mm_movehdup_ps(dmy)),
                    _mm256_cvtepi32_ps(summ),
                    acc_min[t],
                );
            }
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = _mm512_reduce_add_ps(acc[t]) - hsum256_ps(acc_min[t]);
        }
        out
    }
}

/// # Safety
/// [`DotFn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_q6_k(row: &[u8], act: &Activation) -> f32 {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q6_k_tile::<1>(row, &[act])[0] }
}

/// # Safety
/// [`Dot4Fn`] contract; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot4_q6_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe { q6_k_tile::<4>(row, acts) }
}

/// Q6_K rows times `T` activations.
///
/// # Safety
/// [`DotFn`] contract for every activation; AVX-512 F/BW/VL/VNNI, AVX2, FMA and F16C available.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn q6_k_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
    // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
    // matching whole blocks (so every offset below stays inside them), on a CPU with this
    // function's target features.
    unsafe {
        let m4 = _mm512_set1_epi8(0x0F);
        let m3 = _mm512_set1_epi8(3);
        let pick = Q6K_PICK.map(|p| _mm512_loadu_si512(p.as_ptr() as *const _));
        let mut acc = [_mm512_setzero_ps(); T];
        for (i, blk) in row.chunks_exact(210).enumerate() {
            let b = blk.as_ptr();
            let scales = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(192) as *const __m128i));
            let sc512 = _mm512_castsi256_si512(scales);
            let sc = pick.map(|p| _mm512_permutexvar_epi16(p, sc512));
            let d = f16_load(b.add(208));
            let mut q = [_mm512_setzero_si512(); 4];
            for c in 0..2 {
                // ql: 64 bytes whose low nibbles are values 0..64 of this half and high nibbles
                // values 64..128; qh: 2 more bits of each, in four 2-bit planes.
                let ql = _mm512_loadu_si512(b.add(64 * c) as *const _);
                let qh = _mm256_loadu_si256(b.add(128 + 32 * c) as *const __m256i);
                let qh = join(qh, _mm256_srli_epi16::<2>(qh));
                // Unsigned 6-bit values in [0, 63]; the signed value is that minus 32.
                q[2 * c] = _mm512_or_si512(
                    _mm512_and_si512(ql, m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(qh, m3)),
                );
                q[2 * c + 1] = _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                    _mm512_slli_epi16::<4>(_mm512_and_si512(_mm512_srli_epi16::<4>(qh), m3)),
                );
            }
            for t in 0..T {
                let a = acts[t];
                let y = a.qs.as_ptr().add(QK_K * i);
                let mut sumi = _mm512_setzero_si512();
                for g in 0..4 {
                    // u6 x i8 pair sums fit i16 (at most 2 * 63 * 127).
                    let p =
                        _mm512_maddubs_epi16(q[g], _mm512_loadu_si512(y.add(64 * g) as *const _));
                    sumi = dpwssd(sumi, p, sc[g]);
                }
                // The -32 offset: 32 * sum of scale j times the sum of its 16 activations.
                let bsums = _mm256_loadu_si256(a.bsums.as_ptr().add(16 * i) as *const __m256i);
                let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(bsums, scales));
                let sumi = _mm512_sub_epi32(sumi, _mm512_zextsi256_si512(offset));
                let dy = d * *a.d.get_unchecked(i);
                acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(dy), _mm512_cvtepi32_ps(sumi), acc[t]);
            }
        }
        let mut out = [0f32; T];
        for t in 0..T {
            out[t] = _mm512_reduce_add_ps(acc[t]);
        }
        out
    }
}
