//! The NEON kernels of the legacy 32-element formats (activations Q8_0 / Q8_1), written
//! once over a dot-accumulate step and instantiated by `int_kernels!` for base NEON and for
//! NEON + dotprod.

/// Defines the legacy-format kernels, compiled with the target features `$feat` and the
/// dot-accumulate step `$dot` (a macro name).
macro_rules! legacy_kernels {
    ($feat:literal, $dot:ident) => {
        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q8_0(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { q8_0_tile::<1>(row, &[act])[0] }
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q8_0(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { q8_0_tile::<4>(row, acts) }
        }

        /// Q8_0 rows times `T` activations, each with the operations it gets alone.
        ///
        /// # Safety
        /// [`DotFn`] contract for every activation; the CPU has the kernel's features.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q8_0_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
                let mut sumf = [0f32; T];
                for (ib, blk) in row.chunks_exact(34).enumerate() {
                    let b = blk.as_ptr();
                    let (x0, x1) = (ld_i8(b.add(2) as *const i8), ld_i8(b.add(18) as *const i8));
                    let d = f16_at(blk, 0);
                    for t in 0..T {
                        let yb = acts[t].qs.as_ptr().add(32 * ib);
                        let acc =
                            $dot!($dot!(vdupq_n_s32(0), x0, ld_i8(yb)), x1, ld_i8(yb.add(16)));
                        let sumi = vaddvq_s32(acc);
                        sumf[t] += sumi as f32 * (d * acts[t].d[ib]);
                    }
                }
                sumf
            }
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_0(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_1(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_0(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_1(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
        }
    };
}
