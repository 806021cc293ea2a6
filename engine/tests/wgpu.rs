//! The wgpu code path without a GPU: Mesa's software Vulkan (lavapipe, Debian
//! `mesa-vulkan-drivers`) on CI, a real GPU where there is one.
//! - each WGSL kernel in `shaders/` agrees with its plain-Rust reference;
//! - the whole engine on Burn's wgpu backend agrees with the CPU backend on real faces.

mod common;

use std::sync::{Arc, OnceLock};

use burn::tensor::{Device, DeviceKind};
use facerec_engine::gallery::DIM;
use facerec_engine::gpu::{self, DeviceImages, Gpu, GpuGallery, Neighbour, Normalize, WarpJob};
use facerec_engine::prep::Affine;
use facerec_engine::{Analysis, BackendChoice, Engine, EngineConfig};
use image::RgbImage;

/// Burn's wgpu device, where the warp kernel runs.
fn wgpu_device() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}

fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::open().expect("a wgpu adapter (CI: mesa-vulkan-drivers)");
        eprintln!("wgpu adapter: {}", gpu.adapter);
        gpu
    })
    .clone()
}

/// Deterministic pseudo-random numbers (no RNG dependency), uniform in [-1, 1).
fn noise(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn photo(w: u32, h: u32, seed: u64) -> RgbImage {
    let n = noise(seed, (w * h * 3) as usize);
    RgbImage::from_fn(w, h, |x, y| {
        let i = ((y * w + x) * 3) as usize;
        // Smooth gradients plus noise: edges and flat areas both occur.
        let base = [
            (x * 255 / w) as f32,
            (y * 255 / h) as f32,
            ((x + y) % 64 * 4) as f32,
        ];
        image::Rgb(std::array::from_fn(|c| {
            (base[c] * 0.7 + (n[i + c] + 1.0) * 38.0) as u8
        }))
    })
}

#[test]
fn warp_kernel_agrees_with_its_reference() {
    let a = photo(97, 61, 1);
    let b = photo(640, 480, 2);
    let sources = [&a, &b];
    let rot = |deg: f32, s: f32, tx: f32, ty: f32| {
        let (sin, cos) = deg.to_radians().sin_cos();
        Affine {
            a: s * cos,
            b: -s * sin,
            c: s * sin,
            d: s * cos,
            tx,
            ty,
        }
    };
    let jobs = [
        // identity crop, upscale 2x (letterbox-style, black beyond the image), rotated chip
        WarpJob {
            source: 0,
            out_to_src: Affine::scale_translate(1.0, 0.0, 0.0),
        },
        WarpJob {
            source: 0,
            out_to_src: Affine::scale_translate(0.5, 0.0, 0.0),
        },
        WarpJob {
            source: 1,
            out_to_src: rot(17.0, 1.3, 200.0, 120.0),
        },
        // strong shrink (anti-aliased, 5 taps per axis) and the shrink at the tap limit
        WarpJob {
            source: 1,
            out_to_src: Affine::scale_translate(640.0 / 150.0 * 1.1, -3.0, 0.0),
        },
        WarpJob {
            source: 1,
            out_to_src: Affine::scale_translate(9.5, 0.0, 0.0),
        },
    ];
    assert_eq!(jobs[3].taps(), 5);
    assert_eq!(jobs[4].taps(), gpu::warp::MAX_TAPS);
    let on_device = DeviceImages::upload(&wgpu_device(), &sources).expect("upload");
    let recognition = Normalize {
        mean: [122.782, 117.001, 104.298],
        scale: [1.0 / 255.0; 3],
    };
    // Source coordinates near 640 carry f32 rounding of ~1e-4 px, which steep noise turns
    // into up to ~0.02 grey levels; FMA on the device rounds differently from the CPU.
    for (norm, tol) in [(Normalize::RAW, 2e-2), (recognition, 1e-4)] {
        let got = on_device
            .warp_to_host(&jobs, 150, 150, norm)
            .expect("warp runs");
        let want = gpu::warp::reference(&sources, &jobs, 150, 150, norm);
        assert_eq!(got.len(), 5 * 3 * 150 * 150);
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .fold(0f32, f32::max);
        assert!(worst <= tol, "max abs diff {worst} over {tol} ({norm:?})");
    }
    // The padding is black, the interior is not.
    let raw = on_device
        .warp_to_host(&jobs[1..2], 150, 150, Normalize::RAW)
        .expect("warp runs");
    assert_eq!(raw[149 * 150 + 149], 0.0);
    assert!(raw[10 * 150 + 10] > 0.0);
    // The warp is a Burn tensor: the networks (and any tensor op) take it as it lies.
    let tensor = on_device
        .warp(&jobs[..2], 150, 150, Normalize::RAW)
        .expect("warp runs");
    assert_eq!(tensor.dims(), [2, 3, 150, 150]);
    let sum: f32 = tensor.sum().into_scalar();
    let want: f32 = gpu::warp::reference(&sources, &jobs[..2], 150, 150, Normalize::RAW)
        .iter()
        .sum();
    assert!((sum - want).abs() <= want * 1e-4, "{sum} vs {want}");
}

#[test]
fn warp_kernel_rejects_unknown_sources() {
    let a = photo(8, 8, 3);
    let job = WarpJob {
        source: 1,
        out_to_src: Affine::scale_translate(1.0, 0.0, 0.0),
    };
    let on_device = DeviceImages::upload(&wgpu_device(), &[&a]).expect("upload");
    assert!(on_device.warp(&[job], 4, 4, Normalize::RAW).is_err());
    assert!(on_device.warp(&[], 4, 4, Normalize::RAW).is_err());
    // The kernel needs a wgpu device.
    assert!(DeviceImages::upload(&Device::flex(), &[&a]).is_err());
}

fn norms(matrix: &[f32]) -> Vec<f32> {
    matrix
        .chunks_exact(DIM)
        .map(|r| r.iter().map(|x| x * x).sum())
        .collect()
}

/// The kernel's neighbours match the reference: same distances, and each returned row
/// really is at that distance (rows may swap only between near-equal distances).
fn assert_agrees(got: &[Vec<Neighbour>], want: &[Vec<Neighbour>], matrix: &[f32], queries: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (qi, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "query {qi}: {g:?} vs {w:?}");
        let q = &queries[qi * DIM..(qi + 1) * DIM];
        for (gn, wn) in g.iter().zip(w) {
            let tol = 1e-3 * wn.distance.max(1.0);
            assert!(
                (gn.distance - wn.distance).abs() <= tol,
                "query {qi}: {g:?} vs {w:?}"
            );
            let row = &matrix[gn.row as usize * DIM..(gn.row as usize + 1) * DIM];
            let exact = q
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            assert!(
                (gn.distance - exact).abs() <= tol,
                "query {qi} row {}",
                gn.row
            );
            if gn.row != wn.row {
                assert!(
                    (gn.distance - wn.distance).abs() <= tol,
                    "query {qi}: rows differ"
                );
            }
        }
    }
}

#[test]
fn search_kernel_agrees_with_its_reference_across_chunks_and_segments() {
    let rows = 10_000;
    let matrix = noise(7, rows * DIM);
    let norms = norms(&matrix);
    // 13 queries: noise, plus exact copies of rows in different chunks (distance 0).
    let mut queries = noise(8, 10 * DIM);
    for r in [0, 4097, rows - 1] {
        queries.extend_from_slice(&matrix[r * DIM..(r + 1) * DIM]);
    }
    for segment_rows in [usize::MAX / 2, 4096, 1000] {
        let g = GpuGallery::upload_segmented(gpu(), &matrix, &norms, segment_rows.min(rows))
            .expect("upload");
        for k in [1, 5, 8] {
            let got = g.search(&queries, k).expect("search");
            let want = gpu::search::reference(&matrix, &norms, &queries, k);
            assert_agrees(&got, &want, &matrix, &queries);
            for (i, r) in [0u32, 4097, rows as u32 - 1].into_iter().enumerate() {
                assert_eq!(got[10 + i][0].row, r, "an enrolled row finds itself first");
            }
        }
    }
    let g = GpuGallery::upload(gpu(), &matrix, &norms).expect("upload");
    assert_eq!(g.segments(), 1);
}

#[test]
fn search_kernel_small_galleries_and_bad_arguments() {
    let matrix = noise(9, 3 * DIM);
    let norms = norms(&matrix);
    let g = GpuGallery::upload(gpu(), &matrix, &norms).expect("upload");
    let q = noise(10, DIM);
    let got = g.search(&q, 5).expect("search");
    assert_eq!(got[0].len(), 3, "k beyond the gallery returns every row");
    assert_agrees(
        &got,
        &gpu::search::reference(&matrix, &norms, &q, 5),
        &matrix,
        &q,
    );
    assert!(g.search(&q, 0).is_err());
    assert!(g.search(&q, gpu::search::MAX_K + 1).is_err());
    assert!(g.search(&q[..DIM - 1], 1).is_err());
    assert!(GpuGallery::upload(gpu(), &matrix[..DIM], &norms).is_err());
    let empty = GpuGallery::upload(gpu(), &[], &[]).expect("empty upload");
    assert_eq!(empty.search(&q, 1).expect("search"), vec![Vec::new()]);
}

fn wgpu_engine(device_prep: bool) -> Engine {
    let mut config = EngineConfig::new(common::models_dir());
    config.backend = BackendChoice::Wgpu;
    config.max_batch = 4;
    config.device_prep = device_prep;
    let engine = Engine::new(config).expect("engine on wgpu");
    assert_eq!(engine.models().backend().name, "wgpu");
    assert_eq!(engine.prep_on_device(), device_prep);
    engine
}

/// Two CSE546 crops (whole-frame faces or detected) and one demo photo with 3 people.
fn real_inputs() -> Vec<Vec<u8>> {
    let dir = common::cse546_dir();
    let mut inputs: Vec<Vec<u8>> = ["test_000.jpg", "test_001.jpg"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("cse546 image"))
        .collect();
    inputs.push(common::sample(1));
    inputs
}

/// Compares two analyses of the same images: same faces, boxes within `box_px`, and
/// descriptors within `max_diff` per component and `max_distance` euclidean.
fn assert_same_faces(
    got: &[Result<Analysis, facerec_engine::ImageError>],
    want: &[Result<Analysis, facerec_engine::ImageError>],
    box_px: f32,
    max_diff: f32,
    max_distance: f32,
) {
    for (i, (g, c)) in got.iter().zip(want).enumerate() {
        let (g, c) = (g.as_ref().expect("analysis"), c.as_ref().expect("analysis"));
        assert_eq!(g.faces.len(), c.faces.len(), "image {i}: face count");
        for (gf, cf) in g.faces.iter().zip(&c.faces) {
            let worst = gf
                .embedding
                .iter()
                .zip(&cf.embedding)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            let distance = facerec_engine::report::distance(&gf.embedding, &cf.embedding);
            eprintln!("image {i}: max diff {worst:.2e}, distance {distance:.4}");
            assert!(worst <= max_diff, "image {i}: embeddings differ by {worst}");
            assert!(
                distance <= max_distance,
                "image {i}: descriptors {distance} apart"
            );
            let (gb, cb) = (gf.bbox, cf.bbox);
            assert!(
                (gb.x - cb.x).abs() <= box_px && (gb.y - cb.y).abs() <= box_px,
                "image {i}: boxes {gb:?} vs {cb:?}"
            );
        }
    }
}

/// The full pipeline (detector, landmarks, alignment, recognition) on Burn's wgpu backend
/// agrees with the CPU backend on real faces:
/// - with the CPU's pre-processing, the networks' numerics alone differ: same faces,
///   boxes within 1 px, embeddings within 2e-3;
/// - with pre-processing on the device (the default on wgpu: the WGSL warp's supersampled
///   filter instead of the CPU's resize-then-bilinear), the same faces are found and each
///   descriptor stays within a tenth of the 0.5 same-person threshold of the CPU's.
#[test]
fn engine_on_wgpu_agrees_with_the_cpu_backend() {
    let inputs = real_inputs();
    let refs: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
    let (cpu_results, _) = common::engine().analyze(&refs);

    let (host_prep, _) = wgpu_engine(false).analyze(&refs);
    assert_same_faces(&host_prep, &cpu_results, 1.0, 2e-3, 0.01);

    let (device_prep, _) = wgpu_engine(true).analyze(&refs);
    assert_same_faces(&device_prep, &cpu_results, 3.0, 0.05, 0.05);
}
