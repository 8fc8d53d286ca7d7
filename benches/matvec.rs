//! Matrix-vector throughput per weight type, in GB/s of weight bytes, at one thread and at
//! every core, next to a STREAM-style read bandwidth measured in the same run.
//!
//! ```sh
//! cargo bench --bench matvec                 # a few minutes
//! cargo bench --bench matvec -- q4_k         # one type
//! cargo bench --bench matvec -- matmat       # prompt products (64 tokens at once)
//! ```
//!
//! `matmat/*` multiplies each matrix by 64 vectors (a prompt's tokens routed to one expert) and
//! reports elements per second as tokens x weight bytes, so its figure compares with `matvec`'s
//! GB/s: how much faster a weight byte is used when it serves many tokens.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgemoe::tensor::ops::{matmat, matvec, MatvecScratch};
use edgemoe::tensor::{GgmlType, MatrixRef, ThreadPool};

const TYPES: [GgmlType; 8] = [
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q5K,
];

/// (rows, cols): a large expert projection, a small model's expert, a mid-size one.
const SHAPES: [(usize, usize); 3] = [(14336, 4096), (768, 2048), (3584, 1024)];

/// Deterministic values in [-0.5, 0.5).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A `rows x cols` matrix: 64 random quantised rows, repeated (the kernels do not care, and
/// quantising 58M values per type would dominate the run).
fn matrix(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols).unwrap();
    let mut distinct = vec![0u8; rb * 64];
    let v = values(64 * cols, 7);
    for (src, dst) in v.chunks_exact(cols).zip(distinct.chunks_exact_mut(rb)) {
        edgemoe::quant::quantize(ty, src, dst).unwrap();
    }
    distinct.iter().copied().cycle().take(rb * rows).collect()
}

fn bench_matvec(c: &mut Criterion) {
    let all = edgemoe::tensor::pool::default_threads();
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    eprintln!("kernels: {}", edgemoe::quant::kernel_name());
    for ty in TYPES {
        let mut g = c.benchmark_group(format!("matvec/{ty}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (rows, cols) in SHAPES {
            let data = matrix(ty, rows, cols);
            let m = MatrixRef::new(ty, rows, cols, &data).unwrap();
            let x = values(cols, 3);
            let mut out = vec![0f32; rows];
            g.throughput(Throughput::Bytes(data.len() as u64));
            for &threads in &counts {
                let mut s = MatvecScratch::with_pool(Arc::new(ThreadPool::new(threads)));
                let id = BenchmarkId::new(format!("{rows}x{cols}"), format!("{threads}t"));
                g.bench_function(id, |b| b.iter(|| matvec(m, &x, &mut out, &mut s)));
            }
        }
        g.finish();
    }
}

/// Tokens per batched product: the prompt tokens an expert gets in a 512-token prompt of an
/// 8-expert top-2 model, and the engine's FFN group size.
const BATCH: usize = 64;

fn bench_matmat(c: &mut Criterion) {
    let all = edgemoe::tensor::pool::default_threads();
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    for ty in [GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K] {
        let mut g = c.benchmark_group(format!("matmat/{ty}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        for (rows, cols) in [(2048, 1024), (1024, 2048)] {
            let data = matrix(ty, rows, cols);
            let m = MatrixRef::new(ty, rows, cols, &data).unwrap();
            let xs = values(BATCH * cols, 5);
            let mut out = vec![0f32; BATCH * rows];
            g.throughput(Throughput::Bytes((data.len() * BATCH) as u64));
            for &threads in &counts {
                let mut s = MatvecScratch::with_pool(Arc::new(ThreadPool::new(threads)));
                let id = BenchmarkId::new(format!("{rows}x{cols}x{BATCH}"), format!("{threads}t"));
                g.bench_function(id, |b| b.iter(|| matmat(m, &xs, BATCH, &mut out, &mut s)));
            }
        }
        g.finish();
    }
}

/// Reads a 1 GiB buffer (sum of u64 words, 4 independent sums): the memory bandwidth the
/// kernels can at best reach on weights that are not in cache.
fn bench_stream(c: &mut Criterion) {
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut g = c.benchmark_group("stream");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes((words * 8) as u64));
    g.bench_function("read-sum 1GiB", |b| {
        b.iter(|| {
            let mut s = [0u64; 4];
            for c in buf.chunks_exact(4) {
                for k in 0..4 {
                    s[k] = s[k].wrapping_add(c[k]);
                }
            }
            std::hint::black_box(s)
        })
    });
    g.finish();
}

criterion_group!(benches, bench_stream, bench_matvec, bench_matmat);
criterion_main!(benches);
