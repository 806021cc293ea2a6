//! The wgpu code path without a GPU: Mesa's software Vulkan (lavapipe, Debian
//! `mesa-vulkan-drivers`) on CI, a real GPU where there is one.
//! - each WGSL kernel in `shaders/` agrees with its plain-Rust reference;
//! - the whole engine on Burn's wgpu backend agrees with the CPU backend on real faces.

#[path = "../common/mod.rs"]
mod common;
mod engine;
mod kernels;

use std::sync::{Arc, OnceLock};

use burn::tensor::{Device, DeviceKind};
use facerec_engine::gallery::DIM;
use facerec_engine::gpu::{self, DeviceImages, Gpu, GpuGallery, Neighbour, Normalize, WarpJob};
use facerec_engine::matcher::{Matcher, SearchChoice};
use facerec_engine::net::NetInput;
use facerec_engine::prep::{self, Affine};
use facerec_engine::report;
use facerec_engine::{
    Analysis, BackendChoice, Detector, Engine, EngineConfig, Gallery, ImageError, Match, Threshold,
};
use image::RgbImage;

/// Burn's wgpu device, where the warp kernel runs.
pub(crate) fn wgpu_device() -> Device {
    Device::wgpu(DeviceKind::DefaultDevice)
}

pub(crate) fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| {
        let gpu = Gpu::open().expect("a wgpu adapter (CI: mesa-vulkan-drivers)");
        eprintln!("wgpu adapter: {}", gpu.adapter);
        gpu
    })
    .clone()
}

/// Deterministic pseudo-random numbers (no RNG dependency), uniform in [-1, 1).
pub(crate) fn noise(seed: u64, n: usize) -> Vec<f32> {
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

pub(crate) fn photo(w: u32, h: u32, seed: u64) -> RgbImage {
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
