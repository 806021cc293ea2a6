//! Fused pre-processing (`shaders/warp.wgsl`): a batch of decoded RGB images in, the
//! models' planar `[N, 3, H, W]` float input out, in one dispatch. Each output image is an
//! affine view of one source image, resampled as `prep::Sampler` defines it (the CPU
//! pipeline's own sampler), so the same kernel letterboxes a photo for the detector,
//! crops a square for the landmark net and aligns a face chip for recognition, and its
//! output matches the CPU pipeline's to a grey level.
//!
//! The kernel runs on Burn's own wgpu device through Burn's `template` API: the decoded
//! images go up once ([`DeviceImages::upload`]) and every warp of them returns a Burn
//! tensor that the networks consume where it lies, so nothing comes back to the host.

use image::RgbImage;

use crate::prep::{Affine, Sampler};

/// One output image: which source, and how it is resampled.
#[derive(Debug, Clone, Copy)]
pub struct WarpJob {
    pub source: usize,
    pub sampler: Sampler,
}

impl WarpJob {
    /// A crop or chip of `source`: output pixel coordinates -> source pixel coordinates
    /// by `out_to_src` (`Sampler::warp`).
    pub fn warp(source: usize, out_to_src: Affine) -> Self {
        Self {
            source,
            sampler: Sampler::warp(out_to_src),
        }
    }

    /// `prep::letterbox` of `source`, a `w` x `h` image, into a `size` square; for
    /// `prep::letterbox_fit`, `size` is the fit and the output square the larger side.
    pub fn letterbox(source: usize, w: u32, h: u32, size: u32) -> Self {
        Self {
            source,
            sampler: Sampler::letterbox(w, h, size),
        }
    }
}

/// `(value - mean[c]) * scale[c]` per channel, applied after sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub scale: [f32; 3],
}

impl Normalize {
    /// Raw 0..255 values (the ONNX graphs normalise inside).
    pub const RAW: Normalize = Normalize {
        mean: [0.0; 3],
        scale: [1.0; 3],
    };
}

/// Plain-Rust reference of `shaders/warp.wgsl`: `Sampler::sample`, the CPU pipeline's
/// sampler, normalised and laid out as the kernel writes it.
pub fn reference(
    sources: &[&RgbImage],
    jobs: &[WarpJob],
    out_w: u32,
    out_h: u32,
    norm: Normalize,
) -> Vec<f32> {
    let plane = (out_w * out_h) as usize;
    let mut out = vec![0f32; jobs.len() * 3 * plane];
    for (j, job) in jobs.iter().enumerate() {
        let src = sources[job.source];
        for y in 0..out_h {
            for x in 0..out_w {
                let value = job.sampler.sample(src, x, y);
                let i = y as usize * out_w as usize + x as usize;
                for c in 0..3 {
                    out[(j * 3 + c) * plane + i] = (value[c] - norm.mean[c]) * norm.scale[c];
                }
            }
        }
    }
    out
}
