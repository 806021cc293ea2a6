//! Exact gallery search at 1M enrolled faces on the CPU: `Gallery::nearest` (contiguous
//! matrix, precomputed norms, 4-query blocks, rayon) next to a plain per-query scan
//! (the naive peer), for a batch of 16 queries. Rows are the real descriptors in
//! `models/parity/descriptors.f32` with a small deterministic perturbation each, so
//! that every row is distinct.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use facerec_engine::gallery::Gallery;
use facerec_loadgen::synthetic;

fn rows(n: usize) -> Vec<Vec<f32>> {
    let models = facerec_testkit::models_dir();
    let base = synthetic::parity_descriptors(&models).expect("parity descriptors");
    synthetic::perturbed_rows(&base, n, 0).collect()
}

fn naive(rows: &[Vec<f32>], q: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::INFINITY);
    for (i, r) in rows.iter().enumerate() {
        let d: f32 = r.iter().zip(q).map(|(a, b)| (a - b) * (a - b)).sum();
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

fn search(c: &mut Criterion) {
    let n: usize = std::env::var("GALLERY_FACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let data = rows(n);
    let mut gallery = Gallery::new("bench");
    for (i, r) in data.iter().enumerate() {
        gallery.add(&format!("person{}", i % 100_000), r);
    }
    let queries: Vec<Vec<f32>> = rows(16 + 7).split_off(7);
    let refs: Vec<&[f32]> = queries.iter().map(Vec::as_slice).collect();
    let mut group = c.benchmark_group(format!("gallery_{n}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(refs.len() as u64));
    group.bench_with_input(BenchmarkId::new("nearest", 16), &refs, |b, q| {
        b.iter(|| gallery.nearest(q))
    });
    group.bench_with_input(BenchmarkId::new("naive_scan", 16), &queries, |b, q| {
        b.iter(|| q.iter().map(|x| naive(&data, x)).collect::<Vec<_>>())
    });
    group.finish();
}

criterion_group!(benches, search);
criterion_main!(benches);
