//! Unit tests: every SIMD kernel against its scalar twin, on random data and
//! odd shapes, at every SIMD level the CPU has. Run on x86_64 (AVX2, AVX-512)
//! and, through tools/ci/test_aarch64.sh, on aarch64 under qemu with and without
//! dotprod (NEON + SDOT, base NEON).

use super::*;

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn gauss(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    fn gauss_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.gauss() * scale).collect()
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
    /// A finite fp16 scale of random sign and magnitude in [1e-3, 2].
    fn f16_scale(&mut self) -> [u8; 2] {
        let mag = (self.uniform() * (2.0f32 / 1e-3).ln()).exp() * 1e-3;
        let v = if self.next_u64() & 1 == 0 { mag } else { -mag };
        half::f16::from_f32(v).to_bits().to_le_bytes()
    }
}

const WEIGHT_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
];

/// Offsets of the fp16 scales inside one block of `ty`.
fn scale_offsets(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => &[0],
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4K | GgmlType::Q5K => &[0, 2],
        GgmlType::Q2K => &[80, 82],
        GgmlType::Q3K => &[108],
        GgmlType::Q6K => &[208],
        _ => &[],
    }
}

/// A random row of `n` elements: quantised gaussian data, or (for block
/// types, every other call) random bytes with finite scales, which reach
/// quant values (e.g. -128 in Q8_0) that the quantisers never write.
fn random_row(ty: GgmlType, n: usize, rng: &mut Rng, raw: bool) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(n).unwrap()];
    if raw && ty.is_quantized() {
        q = rng.bytes(q.len());
        for blk in q.chunks_exact_mut(ty.block_bytes()) {
            for &off in scale_offsets(ty) {
                blk[off..off + 2].copy_from_slice(&rng.f16_scale());
            }
        }
    } else {
        let x = rng.gauss_vec(n, 0.5);
        quantize(ty, &x, &mut q).unwrap();
    }
    q
}

/// The activation values the kernels see, and the dequantised row.
fn act_values(act: &Activation) -> Vec<f32> {
    match act.kind {
        GgmlType::F32 => act.x.clone(),
        GgmlType::Q8_0 | GgmlType::Q8_1 => (0..act.n)
            .map(|i| act.qs[i] as f32 * act.d[i / 32])
            .collect(),
        GgmlType::Q8K => (0..act.n)
            .map(|i| act.qs[i] as f32 * act.d[i / QK_K])
            .collect(),
        k => panic!("{k}"),
    }
}

fn magnitude(ty: GgmlType, row: &[u8], act: &Activation) -> f64 {
    let mut w = vec![0f32; act.n];
    dequantize(ty, row, &mut w).unwrap();
    w.iter()
        .zip(act_values(act))
        .map(|(a, b)| (*a as f64 * b as f64).abs())
        .sum()
}

fn sizes(ty: GgmlType) -> Vec<usize> {
    match ty.block_len() {
        1 => vec![1, 7, 8, 9, 31, 32, 33, 63, 100, 257, 1024, 4099],
        32 => vec![32, 64, 96, 224, 1056, 4096],
        _ => vec![256, 512, 768, 1280, 4096],
    }
}

/// A tight relative tolerance: SIMD kernels sum in vector lanes, so they differ from the
/// scalar ones by float summation order only (their integer sums are exact).
fn check_close(simd: f32, scalar: f32, mag: f64, what: &str) {
    let tol = 1e-5 * mag + 1e-30;
    assert!(
        ((simd - scalar) as f64).abs() <= tol,
        "{what}: simd {simd} scalar {scalar} (tol {tol:e})"
    );
}

#[test]
fn simd_kernels_match_scalar() {
    for level in supported_levels() {
        simd_level_matches_scalar(level);
    }
}

fn simd_level_matches_scalar(level: Level) {
    eprintln!("kernel level under test: {level:?}");
    let mut rng = Rng(0xC0FFEE);
    let mut act = Activation::new();
    for ty in WEIGHT_TYPES {
        let simd = kernel(ty, level);
        let scalar = kernel(ty, Level::Scalar);
        for n in sizes(ty) {
            for trial in 0..4 {
                let mut x = rng.gauss_vec(n, if trial == 3 { 40.0 } else { 1.0 });
                if trial == 2 {
                    // A zero block and an outlier.
                    let b = ty.block_len().max(32).min(n);
                    x[..b].fill(0.0);
                    x[n - 1] = 1e3;
                }
                act.prepare(ty, &x).unwrap();
                for rows in [1usize, 3, 7] {
                    let w: Vec<u8> = (0..rows)
                        .flat_map(|r| random_row(ty, n, &mut rng, (r + trial) % 2 == 1))
                        .collect();
                    let rb = ty.row_bytes(n).unwrap();
                    for (r, row) in w.chunks_exact(rb).enumerate() {
                        // SAFETY: `row` has `n` elements of `ty`, `act` was
                        // prepared for `ty`, and `best_level` detected the ISA.
                        let (a, b) = unsafe { (simd(row, &act), scalar(row, &act)) };
                        let what = format!("{level:?} {ty} n={n} trial {trial} row {r}/{rows}");
                        check_close(a, b, magnitude(ty, row, &act), &what);
                    }
                }
            }
        }
    }
}

#[test]
fn public_entry_points_use_the_selected_kernel() {
    let mut rng = Rng(3);
    let mut act = Activation::new();
    for ty in WEIGHT_TYPES {
        let n = 512;
        act.prepare(ty, &rng.gauss_vec(n, 1.0)).unwrap();
        let rows = 5;
        let w: Vec<u8> = (0..rows)
            .flat_map(|_| random_row(ty, n, &mut rng, false))
            .collect();
        let mut out = vec![0f32; rows];
        matvec(ty, &w, rows, &act, &mut out);
        let f = kernel(ty, level());
        for (r, row) in w.chunks_exact(ty.row_bytes(n).unwrap()).enumerate() {
            // SAFETY: as above; `level()` is the detected (or forced scalar) level.
            let want = unsafe { f(row, &act) };
            assert_eq!(out[r].to_bits(), want.to_bits(), "{ty} row {r}");
            assert_eq!(
                vec_dot(ty, row, &act).to_bits(),
                want.to_bits(),
                "{ty} row {r}"
            );
        }
    }
}

#[test]
fn simd_kernels_handle_unaligned_rows() {
    for level in supported_levels() {
        unaligned_rows_at(level);
    }
}

fn unaligned_rows_at(level: Level) {
    let mut rng = Rng(11);
    let mut act = Activation::new();
    for ty in WEIGHT_TYPES {
        let n = 512;
        act.prepare(ty, &rng.gauss_vec(n, 1.0)).unwrap();
        let row = random_row(ty, n, &mut rng, false);
        let mut buf = vec![0u8; row.len() + 1];
        buf[1..].copy_from_slice(&row);
        let f = kernel(ty, level);
        // SAFETY: both slices hold the same `n` elements of `ty`.
        let (a, b) = unsafe { (f(&buf[1..], &act), f(&row, &act)) };
        assert_eq!(a.to_bits(), b.to_bits(), "{ty}");
    }
}

#[test]
fn mismatched_shapes_do_not_read_out_of_bounds() {
    // Release builds return NaN; debug builds assert. Only exercise the
    // release behaviour when debug assertions are off.
    if cfg!(debug_assertions) {
        return;
    }
    let mut act = Activation::new();
    act.prepare(GgmlType::Q4K, &[0.5; 512]).unwrap();
    assert!(vec_dot(GgmlType::Q4K, &[0u8; 144], &act).is_nan());
    assert!(vec_dot(GgmlType::Q4_0, &[0u8; 288], &act).is_nan());
    let mut out = [0f32; 2];
    matvec(GgmlType::Q4K, &[0u8; 288 * 2 - 1], 2, &act, &mut out);
    assert!(out.iter().all(|v| v.is_nan()));
}

#[test]
fn force_scalar_values() {
    assert!(force_scalar(Some("1")));
    assert!(force_scalar(Some("yes")));
    assert!(!force_scalar(Some("0")));
    assert!(!force_scalar(Some("")));
    assert!(!force_scalar(None));
}

/// tools/ci/test_aarch64.sh runs the tests under emulated CPUs with and without dotprod and
/// names the level each should detect, so that a detection bug cannot leave a level untested.
#[test]
fn detects_the_expected_level() {
    if let Ok(want) = std::env::var("EDGEMOE_EXPECT_KERNELS") {
        assert_eq!(level_name(best_level()), want);
    }
}

#[test]
fn forcing_a_level() {
    let best = best_level();
    assert_eq!(choose(best, true, false, false), Level::Scalar);
    assert_eq!(choose(best, true, true, true), Level::Scalar);
    assert_eq!(choose(best, false, false, false), best);
    #[cfg(all(target_arch = "x86_64", edgemoe_avx512))]
    {
        assert_eq!(choose(Level::Avx512, false, true, false), Level::Avx2);
        assert_eq!(choose(Level::Avx2, false, true, false), Level::Avx2);
        assert_eq!(choose(Level::Avx512, false, false, true), Level::Avx512);
    }
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(choose(Level::NeonDot, false, false, true), Level::Neon);
        assert_eq!(choose(Level::Neon, false, false, true), Level::Neon);
        assert_eq!(choose(Level::NeonDot, false, true, false), Level::NeonDot);
    }
}

#[test]
fn four_activation_kernels_equal_four_single_calls_bit_for_bit() {
    let mut rng = Rng(0x4444);
    for level in supported_levels() {
        for ty in WEIGHT_TYPES {
            let Some(f4) = kernel4(ty, level) else {
                continue;
            };
            let f = kernel(ty, level);
            for n in sizes(ty) {
                let acts: Vec<Activation> = (0..4)
                    .map(|t| {
                        let mut a = Activation::new();
                        a.prepare(ty, &rng.gauss_vec(n, 1.0 + 10.0 * t as f32))
                            .unwrap();
                        a
                    })
                    .collect();
                for trial in 0..3 {
                    let row = random_row(ty, n, &mut rng, trial == 1);
                    // SAFETY: `row` has `n` elements of `ty`, every activation was prepared
                    // for `ty` with `n` elements, and `supported_levels` detected the ISA.
                    let got = unsafe { f4(&row, &[&acts[0], &acts[1], &acts[2], &acts[3]]) };
                    for (t, a) in acts.iter().enumerate() {
                        // SAFETY: as above.
                        let want = unsafe { f(&row, a) };
                        assert_eq!(
                            got[t].to_bits(),
                            want.to_bits(),
                            "{level:?} {ty} n={n} t={t}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn packed_k4_scales_equal_bytewise_unpacking() {
    let mut rng = Rng(0x5CA1E);
    for _ in 0..200 {
        let sc: [u8; 12] = std::array::from_fn(|_| (rng.next_u64() >> 24) as u8);
        let (scales, mins) = super::dot::k4_scales_mins(&sc);
        let (ps, pm) = super::dot::k4_scales_mins_packed(&sc);
        assert_eq!(ps.to_le_bytes(), scales);
        assert_eq!(pm.to_le_bytes(), mins);
    }
}

#[test]
fn f32_dot_and_axpy_give_the_scalar_bits_at_every_level() {
    let want_dot = super::dot::f32_dot;
    let mut rng = Rng(0xD07);
    for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 300] {
        let a = rng.gauss_vec(n, 1.0);
        let b = rng.gauss_vec(n, 3.0);
        let want = super::dot::f32_dot(&a, &b);
        assert_eq!(dot_f32(&a, &b).to_bits(), want.to_bits(), "dot n={n}");
        let mut y = rng.gauss_vec(n, 1.0);
        let mut y_scalar = y.clone();
        super::dot::f32_axpy(0.37, &a, &mut y_scalar);
        axpy_f32(0.37, &a, &mut y);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&y), bits(&y_scalar), "axpy n={n}");
        // Four at a time: the same bits as one at a time.
        let bs: Vec<Vec<f32>> = (0..4).map(|_| rng.gauss_vec(n, 2.0)).collect();
        let quad = [&bs[0][..], &bs[1][..], &bs[2][..], &bs[3][..]];
        let four = dot4_f32(&a, quad);
        for (i, b) in bs.iter().enumerate() {
            assert_eq!(
                four[i].to_bits(),
                want_dot(&a, b).to_bits(),
                "dot4 n={n} i={i}"
            );
        }
        let alpha = [0.5, -1.25, 3.0, 0.1];
        let mut y4 = y.clone();
        let mut y1 = y.clone();
        axpy4_f32(alpha, quad, &mut y4);
        for (&al, b) in alpha.iter().zip(&bs) {
            super::dot::f32_axpy(al, b, &mut y1);
        }
        assert_eq!(bits(&y4), bits(&y1), "axpy4 n={n}");
    }
}

#[test]
fn vectorised_activation_blocks_equal_the_reference() {
    let mut rng = Rng(0xAC7);
    for case in 0..200 {
        let mut x = rng.gauss_vec(QK_K, 1.0 + case as f32);
        // Ties of magnitude with both signs, zeros, infinities and NaN.
        match case % 6 {
            1 => {
                x[10] = 9.0;
                x[20] = -9.0;
            }
            2 => {
                x[30] = -9.0;
                x[200] = 9.0;
            }
            3 => x.iter_mut().for_each(|v| *v = 0.0),
            4 => x[77] = f32::NAN,
            5 => x[5] = f32::NEG_INFINITY,
            _ => {}
        }
        let (mut q1, mut q2) = ([0i8; QK_K], [0i8; QK_K]);
        let (mut s1, mut s2) = ([0i16; 16], [0i16; 16]);
        let want = super::reference::q8_k_block(&x, &mut q1, &mut s1);
        let got = q8_k_block(&x, &mut q2, &mut s2);
        assert_eq!(got.to_bits(), want.to_bits(), "q8_k d, case {case}");
        assert_eq!((q1, s1), (q2, s2), "q8_k quants, case {case}");
        for b in x.chunks_exact(32) {
            let (mut q1, mut q2) = ([0i8; 32], [0i8; 32]);
            let want = super::reference::q8_0_block(b, &mut q1);
            let got = q8_0_block(b, &mut q2);
            assert_eq!(got.to_bits(), want.to_bits(), "q8_0 d, case {case}");
            assert_eq!(q1, q2, "q8_0 quants, case {case}");
        }
    }
}
