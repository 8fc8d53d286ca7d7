//! The NEON kernels of the K-quants (activations Q8_K), bit-identical to `dot.rs`, written
//! once over a dot-accumulate step and instantiated by `int_kernels!` for base NEON and for
//! NEON + dotprod.

/// Defines the K-quant kernels, compiled with the target features `$feat` and the
/// dot-accumulate step `$dot` (a macro name).
macro_rules! kquant_kernels {
    ($feat:literal, $dot:ident) => {
        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q2_k(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q3_k(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q4_k(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { k4_tile::<1, false>(row, &[act])[0] }
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q4_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { k4_tile::<4, false>(row, acts) }
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q5_k(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { k4_tile::<1, true>(row, &[act])[0] }
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q5_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { k4_tile::<4, true>(row, acts) }
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
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
        }

        /// # Safety
        /// [`DotFn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot_q6_k(row: &[u8], act: &Activation) -> f32 {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { q6_k_tile::<1>(row, &[act])[0] }
        }

        /// # Safety
        /// [`Dot4Fn`] contract; the CPU has the features this kernel is compiled with.
        #[target_feature(enable = $feat)]
        unsafe fn dot4_q6_k(row: &[u8], acts: &[&Activation; 4]) -> [f32; 4] {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe { q6_k_tile::<4>(row, acts) }
        }

        /// Q6_K rows times `T` activations, each with the operations it gets alone.
        ///
        /// # Safety
        /// [`DotFn`] contract for every activation; the CPU has the kernel's features.
        #[inline]
        #[target_feature(enable = $feat)]
        unsafe fn q6_k_tile<const T: usize>(row: &[u8], acts: &[&Activation; T]) -> [f32; T] {
            // SAFETY: the caller upholds the kernel contract above: `row` and the activations hold
            // matching whole blocks (so every offset below stays inside them), on a CPU with this
            // function's target features.
            unsafe {
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
                                vorrq_u8(
                                    vshrq_n_u8::<4>(ql1),
                                    vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh)),
                                ),
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
        }
    };
}
