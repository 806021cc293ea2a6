//! The WGSL kernels in `shaders/` next to the CPU code they replace, in the same run:
//! - gallery search (`GpuGallery::search`, k = 1) vs `Gallery::nearest` (SIMD-friendly
//!   exact scan on every core), 16 and 256 queries against `GALLERY_FACES` (default
//!   100 000) rows; the GPU side includes uploading the queries and reading back the top-k;
//! - fused pre-processing (`DeviceImages::upload` + `warp`: 64 aligned 150x150 chips from one photo,
//!   normalised, planar) vs the CPU path (`prep::resample` + `prep::to_planar` on rayon).
//!
//! Runs on whatever adapter `Gpu::open` finds: a real GPU, or lavapipe (software Vulkan)
//! where there is none, which says nothing about GPU speed. The report names the adapter.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use facerec_engine::backend::{self, BackendChoice};
use facerec_engine::gallery::{DIM, Gallery};
use facerec_engine::gpu::{DeviceImages, Gpu, GpuGallery, Normalize, WarpJob};
use facerec_engine::prep::{self, Affine};
use rayon::prelude::*;

fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn search(c: &mut Criterion) {
    let gpu = Gpu::open().expect("a wgpu adapter");
    eprintln!("adapter: {}", gpu.adapter);
    let n: usize = std::env::var("GALLERY_FACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let matrix = noise(1, n * DIM);
    let mut gallery = Gallery::new("bench");
    for (i, r) in matrix.chunks_exact(DIM).enumerate() {
        gallery.add(&format!("person{}", i % 10_000), r);
    }
    let (m, norms) = gallery.rows();
    let on_gpu = GpuGallery::upload(gpu, &m, &norms).expect("upload");
    let mut group = c.benchmark_group(format!("search_{n}"));
    group.sample_size(10);
    for q in [16usize, 256] {
        let queries = noise(2 + q as u64, q * DIM);
        let refs: Vec<&[f32]> = queries.chunks_exact(DIM).collect();
        group.throughput(Throughput::Elements(q as u64));
        group.bench_with_input(BenchmarkId::new("wgsl", q), &queries, |b, qs| {
            b.iter(|| on_gpu.search(qs, 1).expect("search"))
        });
        group.bench_with_input(BenchmarkId::new("cpu_nearest", q), &refs, |b, qs| {
            b.iter(|| gallery.nearest(qs))
        });
    }
    group.finish();
}

fn warp(c: &mut Criterion) {
    let photo = image::open(facerec_testkit::models_dir().join("parity/recognition_input_0.png"))
        .expect("parity chip")
        .to_rgb8();
    let photo = image::imageops::resize(&photo, 640, 640, image::imageops::FilterType::Triangle);
    // 64 chips: rotated, scaled views like aligned faces of different sizes.
    let jobs: Vec<WarpJob> = (0..64)
        .map(|i| {
            let (sin, cos) = ((i as f32 - 32.0) * 0.5f32).to_radians().sin_cos();
            let s = 1.0 + (i % 8) as f32 * 0.4;
            WarpJob::warp(
                0,
                Affine {
                    a: s * cos,
                    b: -s * sin,
                    c: s * sin,
                    d: s * cos,
                    tx: 100.0 + (i % 5) as f32 * 20.0,
                    ty: 80.0,
                },
            )
        })
        .collect();
    let device = backend::resolve(BackendChoice::Wgpu)
        .expect("wgpu backend")
        .device;
    let norm = Normalize::RAW;
    let mut group = c.benchmark_group("warp_64_chips");
    group.sample_size(10);
    group.throughput(Throughput::Elements(jobs.len() as u64));
    group.bench_function("wgsl", |b| {
        b.iter(|| {
            DeviceImages::upload(&device, &[&photo])
                .and_then(|d| d.warp_to_host(&jobs, 150, 150, norm))
                .expect("warp")
        })
    });
    group.bench_function("cpu_prep", |b| {
        b.iter(|| {
            jobs.par_iter()
                .map(|j| prep::to_planar(&prep::resample(&photo, &j.sampler, 150, 150)))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

criterion_group!(benches, search, warp);
criterion_main!(benches);
