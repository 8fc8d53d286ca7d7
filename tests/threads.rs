//! Kernel threads: products split over a thread pool give the same bits as on one thread.

use std::sync::Arc;

use edgemoe::tensor::ops::{matmat, matvec, MatvecScratch, PARALLEL_MIN_BYTES};
use edgemoe::tensor::{GgmlType, MatrixRef, ThreadPool};

/// Deterministic pseudo-random numbers (splitmix64).
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

const TYPES: [GgmlType; 9] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q2K,
];

/// A `rows x cols` matrix of `ty` with random rows (a few distinct rows, cycled).
fn matrix(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let rb = ty.row_bytes(cols).unwrap();
    let mut distinct = vec![0u8; rb * 37];
    for r in distinct.chunks_exact_mut(rb) {
        edgemoe::quant::quantize(ty, &rng.vec(cols), r).unwrap();
    }
    distinct.iter().copied().cycle().take(rb * rows).collect()
}

#[test]
fn threaded_matvec_is_bit_identical_to_one_thread() {
    let mut rng = Rng(9);
    let cols = 1024;
    for ty in TYPES {
        // Just over the threshold, with a ragged last chunk.
        let rb = ty.row_bytes(cols).unwrap();
        let rows = PARALLEL_MIN_BYTES / rb + 19;
        let data = matrix(ty, rows, cols, &mut rng);
        let m = MatrixRef::new(ty, rows, cols, &data).unwrap();
        let x = rng.vec(cols);
        let mut want = vec![0f32; rows];
        matvec(m, &x, &mut want, &mut MatvecScratch::default());
        for threads in [1, 2, 3] {
            let mut s = MatvecScratch::with_pool(Arc::new(ThreadPool::new(threads)));
            let mut got = vec![0f32; rows];
            matvec(m, &x, &mut got, &mut s);
            let a: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
            let b: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
            assert_eq!(a, b, "{ty} at {threads} threads");
        }
    }
}

#[test]
fn matmat_is_bit_identical_to_matvec_per_vector() {
    let mut rng = Rng(21);
    let cols = 512;
    for ty in TYPES {
        for (rows, n) in [(40usize, 2usize), (300, 7), (2100, 65)] {
            let data = matrix(ty, rows, cols, &mut rng);
            let m = MatrixRef::new(ty, rows, cols, &data).unwrap();
            let xs = rng.vec(n * cols);
            let mut want = vec![0f32; n * rows];
            let mut s = MatvecScratch::default();
            for (x, o) in xs.chunks_exact(cols).zip(want.chunks_exact_mut(rows)) {
                matvec(m, x, o, &mut s);
            }
            for threads in [1, 2, 3] {
                let mut s = MatvecScratch::with_pool(Arc::new(ThreadPool::new(threads)));
                let mut got = vec![0f32; n * rows];
                matmat(m, &xs, n, &mut got, &mut s);
                let a: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                let b: Vec<u32> = want.iter().map(|v| v.to_bits()).collect();
                assert_eq!(a, b, "{ty} {rows}x{cols} times {n} at {threads} threads");
            }
        }
    }
}
