//! CPU pre-processing: the detector's letterbox, `prep::letterbox` (the two 1-D passes of
//! `prep::Sampler`, the definition the device kernel shares), against the peer it
//! replaced: the same letterbox with `fast_image_resize`'s SIMD fixed-point bilinear
//! convolution for the resize (facerec's letterbox until 2026-11-29). Two sources: a
//! 64x64 face crop (upscaled 2x, the CSE546 workload's case) and a 1280x960 photo (shrunk
//! 2.5x). Both write the detector's planar float input.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use facerec_engine::models::SSD_SIZE;
use facerec_engine::prep;
use fast_image_resize::{self as fir, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// The letterbox as it was: resize with `fast_image_resize`, paste top-left, planar floats.
fn fir_letterbox(img: &RgbImage, size: u32) -> Vec<f32> {
    let (w, h) = prep::letterbox_extent(img.width(), img.height(), size);
    let mut dst = fir::images::Image::new(w, h, PixelType::U8x3);
    let src = fir::images::ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("an RgbImage is width*height*3 bytes");
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(fir::FilterType::Bilinear));
    Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("same pixel types");
    let small = RgbImage::from_raw(w, h, dst.into_vec()).expect("w*h*3 bytes");
    let plane = (size * size) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (x, y, p) in small.enumerate_pixels() {
        let i = (y * size + x) as usize;
        for c in 0..3 {
            out[c * plane + i] = p[c] as f32;
        }
    }
    out
}

fn letterbox(c: &mut Criterion) {
    let chip = facerec_testkit::models_dir().join("parity/recognition_input_0.png");
    let crop = image::open(chip).expect("parity chip").to_rgb8();
    let crop = image::imageops::resize(&crop, 64, 64, image::imageops::FilterType::Triangle);
    let photo = image::imageops::resize(&crop, 1280, 960, image::imageops::FilterType::Triangle);
    let mut group = c.benchmark_group("letterbox_512");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));
    for (name, img) in [("crop_64", &crop), ("photo_1280x960", &photo)] {
        group.bench_with_input(BenchmarkId::new("sampler", name), img, |b, img| {
            b.iter(|| prep::letterbox(img, SSD_SIZE))
        });
        group.bench_with_input(
            BenchmarkId::new("fast_image_resize", name),
            img,
            |b, img| b.iter(|| fir_letterbox(img, SSD_SIZE)),
        );
    }
    group.finish();
}

criterion_group!(benches, letterbox);
criterion_main!(benches);
