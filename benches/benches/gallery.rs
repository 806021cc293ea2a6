//! Exact gallery search at 1M enrolled faces on the CPU: `Gallery::nearest` (contiguous
//! matrix, precomputed norms, 4-query blocks, rayon) next to a plain per-query scan
//! (the naive peer), for a batch of 16 queries. Rows are the real descriptors in
//! `models/parity/descriptors.f32` with a small deterministic perturbation each, so
//! that every row is distinct.

use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use facerec_engine::gallery::{DIM, Gallery};

fn descriptors() -> Vec<Vec<f32>> {
    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/parity/descriptors.f32"),
    )
    .expect("parity descriptors");
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    v.chunks_exact(DIM).map(<[f32]>::to_vec).collect()
}

fn rows(n: usize) -> Vec<Vec<f32>> {
    let base = descriptors();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|i| {
            base[i % base.len()]
                .iter()
                .map(|&x| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    x + ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
                })
                .collect()
        })
        .collect()
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
