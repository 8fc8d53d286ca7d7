//! Quantisation against gguf-py (fixtures from tools/fixtures/make_quant_fixtures.py),
//! round-trip error bounds, and fused dot products against dequantised dots.

use std::path::PathBuf;

use edgemoe::quant::{dequantize, matvec, quantize, vec_dot, vec_dot_type, Activation};
use edgemoe::tensor::dtype::GgmlType;
use edgemoe::Error;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn read_bytes(name: &str) -> Vec<u8> {
    let p = fixture_dir().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn read_f32(name: &str) -> Vec<f32> {
    read_bytes(name)
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

struct Entry {
    ty: GgmlType,
    n: usize,
    gguf_quantized: bool,
}

fn index() -> Vec<Entry> {
    let text = std::fs::read_to_string(fixture_dir().join("index.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let types = v["types"].as_object().unwrap();
    let mut out: Vec<Entry> = types
        .iter()
        .map(|(name, e)| Entry {
            ty: GgmlType::from_name(name).unwrap(),
            n: e["n"].as_u64().unwrap() as usize,
            gguf_quantized: e["gguf_quantized"].as_bool().unwrap(),
        })
        .collect();
    out.sort_by_key(|e| e.ty as u32);
    out
}

/// Deterministic pseudo-random numbers (splitmix64) with a gaussian helper.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn gauss(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
    fn gauss_vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.gauss() * scale).collect()
    }
}

/// Types with weights edgemoe computes dot products for.
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

fn quantized(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut q = vec![0u8; ty.row_bytes(x.len()).unwrap()];
    quantize(ty, x, &mut q).unwrap();
    q
}

fn dequantized(ty: GgmlType, q: &[u8], n: usize) -> Vec<f32> {
    let mut y = vec![0f32; n];
    dequantize(ty, q, &mut y).unwrap();
    y
}

// ---------------------------------------------------------------------------
// Against gguf-py
// ---------------------------------------------------------------------------

#[test]
fn fixtures_cover_every_weight_type() {
    let idx = index();
    for ty in WEIGHT_TYPES {
        assert!(idx.iter().any(|e| e.ty == ty), "no fixture for {ty}");
    }
}

/// Our dequantisation equals gguf-py's bit for bit (NaN payloads included).
#[test]
fn dequantize_matches_gguf_bit_for_bit() {
    for e in index() {
        let name = e.ty.name();
        let q = read_bytes(&format!("{name}.q.bin"));
        let want = read_f32(&format!("{name}.deq.bin"));
        assert_eq!(want.len(), e.n);
        let got = dequantized(e.ty, &q, e.n);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name}[{i}]: ours {g:e}, gguf {w:e}"
            );
        }
    }
}

/// Our quantisation equals gguf-py's bytes for every type gguf-py quantises.
#[test]
fn quantize_matches_gguf_bytes() {
    let mut checked = 0;
    for e in index().into_iter().filter(|e| e.gguf_quantized) {
        let name = e.ty.name();
        let x = read_f32(&format!("{name}.in.bin"));
        let want = read_bytes(&format!("{name}.q.bin"));
        let got = quantized(e.ty, &x);
        assert_eq!(got.len(), want.len(), "{name}");
        let bb = e.ty.block_bytes();
        for (i, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            assert_eq!(
                g,
                w,
                "{name} block {i} (input {:?})",
                &x[i * e.ty.block_len()..][..e.ty.block_len().min(8)]
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 8, "F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0");
}

/// Our K-quant quantisers reproduce gguf-py's dequantisation of our own output
/// (the bytes decode to the same floats both ways), i.e. they write valid blocks.
#[test]
fn kquant_output_decodes_consistently() {
    let mut rng = Rng(7);
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
    ] {
        let x = rng.gauss_vec(4 * 256, 1.0);
        let q = quantized(ty, &x);
        let y = dequantized(ty, &q, x.len());
        assert!(y.iter().all(|v| v.is_finite()), "{ty}");
        // Requantising the dequantised values is stable: at worst every value
        // moves by at most one step of its sub-block.
        let q2 = quantized(ty, &y);
        let y2 = dequantized(ty, &q2, x.len());
        let err = rmse(&y, &y2) / rms(&y);
        assert!(err < 0.1, "{ty}: requantisation moved by {err}");
    }
}

// ---------------------------------------------------------------------------
// Shapes
// ---------------------------------------------------------------------------

#[test]
fn bad_sizes_are_shape_errors_not_panics() {
    for ty in GgmlType::ALL {
        let bl = ty.block_len();
        let bb = ty.block_bytes();
        // Element count not a whole number of blocks.
        if bl > 1 {
            let mut y = vec![0f32; bl + 1];
            let r = dequantize(ty, &vec![0u8; 2 * bb], &mut y);
            assert!(matches!(r, Err(Error::Shape(_))), "{ty}: {r:?}");
            let r = quantize(ty, &vec![0f32; bl + 1], &mut vec![0u8; 2 * bb]);
            assert!(matches!(r, Err(Error::Shape(_))), "{ty}: {r:?}");
            let mut act = Activation::new();
            assert!(matches!(
                act.prepare(ty, &vec![0f32; bl - 1]),
                Err(Error::Shape(_))
            ));
        }
        // Wrong byte counts either way.
        let mut y = vec![0f32; 2 * bl];
        for bytes in [0, 2 * bb - 1, 2 * bb + 1, 3 * bb] {
            let r = dequantize(ty, &vec![0u8; bytes], &mut y);
            assert!(matches!(r, Err(Error::Shape(_))), "{ty} {bytes}: {r:?}");
            let r = quantize(ty, &y, &mut vec![0u8; bytes]);
            assert!(matches!(r, Err(Error::Shape(_))), "{ty} {bytes}: {r:?}");
        }
        // Empty is fine.
        dequantize(ty, &[], &mut []).unwrap();
        quantize(ty, &[], &mut []).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Round-trip error
// ---------------------------------------------------------------------------

fn rmse(a: &[f32], b: &[f32]) -> f64 {
    let s: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum();
    (s / a.len() as f64).sqrt()
}

fn rms(a: &[f32]) -> f64 {
    (a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
}

/// ggml's tests/test-quantize-fns.cpp: data `0.1 + 2 cos(i)`, error
/// `sqrt(sum d^2) / n` below 0.002 (0.0075 for 2-bit, 0.004 for 3-bit).
#[test]
fn roundtrip_error_within_ggml_test_bounds() {
    let n = 32 * 128;
    let x: Vec<f32> = (0..n).map(|i| 0.1 + 2.0 * (i as f32).cos()).collect();
    for ty in GgmlType::ALL {
        let y = dequantized(ty, &quantized(ty, &x), n);
        let s: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((*a - *b) as f64).powi(2))
            .sum();
        let err = s.sqrt() / n as f64;
        let bound = match ty {
            GgmlType::Q2K => 0.0075,
            GgmlType::Q3K => 0.0040,
            _ => 0.002,
        };
        assert!(err < bound, "{ty}: ggml error {err} >= {bound}");
    }
}

/// Relative RMS error on gaussian data, per type. The bounds sit ~10-15% above
/// what the reference quantisers reach on this data (q8: 0.0053, q8_K: 0.0069,
/// q6_K: 0.0176, q5_K: 0.0355, q4_K: 0.0703, q3_K: 0.150, q2_K: 0.291,
/// q5_0: 0.042, q5_1: 0.037, q4_0: 0.085, q4_1: 0.078).
#[test]
fn roundtrip_relative_rmse_on_gaussian_data() {
    let mut rng = Rng(42);
    let n = 256 * 64;
    let x = rng.gauss_vec(n, 1.0);
    let mut failures = Vec::new();
    for (ty, bound) in [
        (GgmlType::F32, 0.0),
        (GgmlType::F16, 2.5e-4),
        (GgmlType::BF16, 2.0e-3),
        (GgmlType::Q8_0, 6e-3),
        (GgmlType::Q8_1, 6e-3),
        (GgmlType::Q8K, 8e-3),
        (GgmlType::Q6K, 2.0e-2),
        (GgmlType::Q5_0, 4.8e-2),
        (GgmlType::Q5_1, 4.3e-2),
        (GgmlType::Q5K, 4.0e-2),
        (GgmlType::Q4_0, 9.5e-2),
        (GgmlType::Q4_1, 8.8e-2),
        (GgmlType::Q4K, 8.0e-2),
        (GgmlType::Q3K, 1.7e-1),
        (GgmlType::Q2K, 3.3e-1),
    ] {
        let y = dequantized(ty, &quantized(ty, &x), n);
        let rel = rmse(&x, &y) / rms(&x);
        eprintln!("{ty}: relative rmse {rel:.5} (bound {bound})");
        if rel > bound {
            failures.push(format!("{ty}: relative rmse {rel} > {bound}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------
// Dot products
// ---------------------------------------------------------------------------

/// `vec_dot` equals the f64 dot of the dequantised row with the dequantised
/// quantised activation (what ggml's kernels compute), to float rounding.
#[test]
fn vec_dot_matches_dequantized_dot() {
    let mut rng = Rng(1234);
    let mut act = Activation::new();
    for ty in WEIGHT_TYPES {
        for blocks in [1usize, 3, 8] {
            let n = blocks * ty.block_len().max(32);
            let x = rng.gauss_vec(n, 1.0);
            act.prepare(ty, &x).unwrap();
            assert_eq!(act.len(), n);
            assert_eq!(act.kind(), vec_dot_type(ty));
            // The activation as the kernels see it.
            let at = vec_dot_type(ty);
            let xa = dequantized(at, &quantized(at, &x), n);

            let rows = 5;
            let mut weights = Vec::new();
            let mut deq_rows = Vec::new();
            for r in 0..rows {
                let w = rng.gauss_vec(n, if r == 2 { 30.0 } else { 0.5 });
                let q = quantized(ty, &w);
                deq_rows.push(dequantized(ty, &q, n));
                weights.extend_from_slice(&q);
            }
            let rb = ty.row_bytes(n).unwrap();
            let mut out = vec![0f32; rows];
            matvec(ty, &weights, rows, &act, &mut out);
            for r in 0..rows {
                let row = &weights[r * rb..(r + 1) * rb];
                let got = vec_dot(ty, row, &act);
                assert_eq!(
                    got.to_bits(),
                    out[r].to_bits(),
                    "{ty}: matvec row {r} differs from vec_dot"
                );
                let want: f64 = deq_rows[r]
                    .iter()
                    .zip(&xa)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let mag: f64 = deq_rows[r]
                    .iter()
                    .zip(&xa)
                    .map(|(a, b)| (*a as f64 * *b as f64).abs())
                    .sum();
                // Q8_1 carries `s = d * sum(q)` rounded to fp16 separately from
                // `d`, so the min term of Q4_1/Q5_1 is off by up to ~1e-3 of it.
                let rel = if at == GgmlType::Q8_1 { 2e-3 } else { 2e-6 };
                let tol = rel * mag + 1e-30;
                assert!(
                    (got as f64 - want).abs() <= tol,
                    "{ty} n={n} row {r}: vec_dot {got} vs dequantised dot {want} (tol {tol})"
                );
            }
        }
    }
}

/// The fused dot stays close to the exact f32 dot: quantisation error only.
/// `w` is correlated with `x` so the exact dot (~800) dwarfs the tolerance,
/// which is five standard deviations of the quantisation noise
/// `(rel_w + rel_x) * sqrt(n)` with the relative errors measured above.
#[test]
fn vec_dot_close_to_float_dot() {
    let mut rng = Rng(99);
    let n = 1024;
    let x = rng.gauss_vec(n, 1.0);
    let w: Vec<f32> = x.iter().map(|v| 0.8 * v + 0.6 * rng.gauss()).collect();
    let exact: f64 = x.iter().zip(&w).map(|(a, b)| *a as f64 * *b as f64).sum();
    assert!(exact > 600.0);
    let mut act = Activation::new();
    let q8 = 0.0055;
    for (ty, rel_w, rel_x) in [
        (GgmlType::F32, 1e-7, 0.0),
        (GgmlType::F16, 2.2e-4, 0.0),
        (GgmlType::BF16, 1.8e-3, 0.0),
        (GgmlType::Q8_0, q8, q8),
        (GgmlType::Q6K, 0.018, 0.007),
        (GgmlType::Q5_0, 0.043, q8),
        (GgmlType::Q5_1, 0.038, q8),
        (GgmlType::Q5K, 0.036, 0.007),
        (GgmlType::Q4_0, 0.085, q8),
        (GgmlType::Q4_1, 0.078, q8),
        (GgmlType::Q4K, 0.071, 0.007),
        (GgmlType::Q3K, 0.151, 0.007),
        (GgmlType::Q2K, 0.292, 0.007),
    ] {
        act.prepare(ty, &x).unwrap();
        let got = vec_dot(ty, &quantized(ty, &w), &act) as f64;
        let tol = 5.0 * (rel_w + rel_x) * (n as f64).sqrt() + 1e-6 * exact.abs();
        assert!(
            (got - exact).abs() <= tol,
            "{ty}: {got} vs exact {exact} (tol {tol})"
        );
    }
}

/// Same inputs, same bits, from any thread.
#[test]
fn dot_products_are_deterministic_across_threads() {
    let mut rng = Rng(5);
    let n = 2048;
    let x = rng.gauss_vec(n, 1.0);
    for ty in WEIGHT_TYPES {
        let rows = 7;
        let w: Vec<u8> = (0..rows)
            .flat_map(|_| quantized(ty, &rng.gauss_vec(n, 1.0)))
            .collect();
        let mut act = Activation::new();
        act.prepare(ty, &x).unwrap();
        let mut base = vec![0f32; rows];
        matvec(ty, &w, rows, &act, &mut base);
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut a = Activation::new();
                        a.prepare(ty, &x).unwrap();
                        let mut o = vec![0f32; rows];
                        matvec(ty, &w, rows, &a, &mut o);
                        o
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            let a: Vec<u32> = r.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = base.iter().map(|v| v.to_bits()).collect();
            assert_eq!(a, b, "{ty}");
        }
    }
}

#[test]
fn activation_is_reusable_across_types_and_sizes() {
    let mut rng = Rng(77);
    let mut act = Activation::new();
    assert!(act.is_empty());
    for ty in [
        GgmlType::Q4K,
        GgmlType::F32,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q6K,
    ] {
        for n in [256usize, 512, 256] {
            let x = rng.gauss_vec(n, 1.0);
            act.prepare(ty, &x).unwrap();
            let w = quantized(ty, &rng.gauss_vec(n, 1.0));
            let mut fresh = Activation::new();
            fresh.prepare(ty, &x).unwrap();
            assert_eq!(
                vec_dot(ty, &w, &act).to_bits(),
                vec_dot(ty, &w, &fresh).to_bits()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Throughput (manual): cargo test --release --test quant -- --ignored --nocapture
// ---------------------------------------------------------------------------

/// Single-threaded `matvec` throughput per weight type on a 4096 x 4096
/// matrix (one expert projection is 4096 x 14336 in Mixtral-class models),
/// reported as weight GB/s. Ignored by default: it is a measurement, not a
/// check. `EDGEMOE_FORCE_SCALAR=1` measures the scalar kernels.
#[test]
#[ignore]
fn matvec_throughput() {
    let (cols, rows) = (4096usize, 4096usize);
    let mut rng = Rng(2024);
    let x = rng.gauss_vec(cols, 1.0);
    // One quantised row repeated: the kernels do not care, generation is fast.
    eprintln!("kernels: {}", edgemoe::quant::kernel_name());
    for ty in WEIGHT_TYPES {
        let row = quantized(ty, &rng.gauss_vec(cols, 1.0));
        let w: Vec<u8> = row.iter().copied().cycle().take(row.len() * rows).collect();
        let mut act = Activation::new();
        let mut out = vec![0f32; rows];
        act.prepare(ty, &x).unwrap();
        matvec(ty, &w, rows, &act, &mut out); // warm-up
        let iters = 8;
        let t = std::time::Instant::now();
        for _ in 0..iters {
            act.prepare(ty, &x).unwrap();
            matvec(ty, &w, rows, &act, &mut out);
        }
        let secs = t.elapsed().as_secs_f64() / iters as f64;
        let gbs = w.len() as f64 / secs / 1e9;
        let gel = (rows * cols) as f64 / secs / 1e9;
        eprintln!(
            "{:>5}: {:7.3} ms/matvec  {:6.2} GB/s  {:6.2} Gelem/s",
            ty.name(),
            secs * 1e3,
            gbs,
            gel
        );
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
