//! Embedding throughput of the recognition ResNet on the CPU backend (Burn flex) or, with
//! `FACEREC_BACKEND=wgpu`, Burn's wgpu backend; batch 1/16/64 (`EMBED_BATCHES=1,16,64,256`
//! to choose), on real aligned face chips (`models/parity/recognition_input_*.png`).
//! Each iteration reads the descriptors back, so lazy work is inside the timer.
//! The onnxruntime peer on the same ONNX file: `benches/ort_nets.py --nets recognition` (run together by
//! `benches/embed_vs_ort.sh`, which writes the table in RESULTS.md).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use facerec_engine::backend::{self, BackendChoice};
use facerec_engine::models::Models;
use facerec_engine::prep;

fn chips() -> Vec<Vec<f32>> {
    let dir = facerec_testkit::models_dir().join("parity");
    (0..3)
        .map(|i| {
            let img = image::open(dir.join(format!("recognition_input_{i}.png")))
                .expect("parity chip")
                .to_rgb8();
            prep::to_planar(&img)
        })
        .collect()
}

fn embed(c: &mut Criterion) {
    let backend = std::env::var("FACEREC_BACKEND").unwrap_or_else(|_| "cpu".into());
    let choice: BackendChoice = backend.parse().expect("backend");
    let models = Models::load(
        &facerec_testkit::models_dir(),
        backend::resolve(choice).expect("backend"),
    )
    .expect("models");
    let chips = chips();
    let mut group = c.benchmark_group(format!("embed_{backend}"));
    group.sample_size(10);
    let batches: Vec<usize> = std::env::var("EMBED_BATCHES")
        .unwrap_or_else(|_| "1,16,64".into())
        .split(',')
        .map(|b| {
            b.trim()
                .parse()
                .expect("EMBED_BATCHES: comma-separated sizes")
        })
        .collect();
    for batch in batches {
        let data: Vec<f32> = (0..batch)
            .flat_map(|i| chips[i % chips.len()].clone())
            .collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &n| {
            b.iter(|| models.embed(data.clone(), n).expect("embed"))
        });
    }
    group.finish();
}

criterion_group!(benches, embed);
criterion_main!(benches);
