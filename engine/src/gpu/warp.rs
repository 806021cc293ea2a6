//! Fused pre-processing (`shaders/warp.wgsl`): a batch of decoded RGB images in, the
//! models' planar `[N, 3, H, W]` float input out, in one dispatch. Each output image is an
//! affine view of one source image, so the same kernel letterboxes a photo for the
//! detector, crops a square for the landmark net and aligns a face chip for recognition.

use std::sync::Arc;

use burn::tensor::wgpu::wgpu;
use image::RgbImage;

use super::{Gpu, GpuError};
use crate::prep::{self, Affine};

const SHADER: &str = include_str!("../../../shaders/warp.wgsl");
/// Most samples per axis for an anti-aliased shrink.
pub const MAX_TAPS: u32 = 8;

/// One output image: which source, and the map from output pixel coordinates to source
/// pixel coordinates (as `prep::warp` takes it).
#[derive(Debug, Clone, Copy)]
pub struct WarpJob {
    pub source: usize,
    pub out_to_src: Affine,
}

impl WarpJob {
    /// Samples per axis: enough that a shrinking map averages its whole footprint.
    pub fn taps(&self) -> u32 {
        (self.out_to_src.scale().ceil() as u32).clamp(1, MAX_TAPS)
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

/// The compiled kernel on one device.
pub struct WarpKernel {
    gpu: Arc<Gpu>,
    pipeline: wgpu::ComputePipeline,
}

impl WarpKernel {
    pub fn new(gpu: Arc<Gpu>) -> Self {
        let pipeline = gpu.pipeline(SHADER, "warp", "main");
        Self { gpu, pipeline }
    }

    /// Runs every job; returns `[jobs.len(), 3, out_h, out_w]` floats. Sources go up once
    /// (packed together), only the planar result comes back.
    pub fn run(
        &self,
        sources: &[&RgbImage],
        jobs: &[WarpJob],
        out_w: u32,
        out_h: u32,
        norm: Normalize,
    ) -> Result<Vec<f32>, GpuError> {
        if jobs.is_empty() || out_w == 0 || out_h == 0 {
            return Ok(Vec::new());
        }
        let mut packed = Vec::new();
        let mut offsets = Vec::with_capacity(sources.len());
        for s in sources {
            offsets.push(
                u32::try_from(packed.len()).map_err(|_| {
                    GpuError::Invalid("sources over 4 GiB in one warp batch".into())
                })?,
            );
            packed.extend_from_slice(s.as_raw());
        }
        packed.resize(packed.len().div_ceil(4) * 4, 0);
        let mut job_bytes = Vec::with_capacity(jobs.len() * 48);
        for job in jobs {
            let src = sources.get(job.source).ok_or_else(|| {
                GpuError::Invalid(format!(
                    "job names source {} of {}",
                    job.source,
                    sources.len()
                ))
            })?;
            let m = job.out_to_src;
            for v in [offsets[job.source], src.width(), src.height(), job.taps()] {
                job_bytes.extend_from_slice(&v.to_le_bytes());
            }
            for v in [m.a, m.b, m.c, m.d, m.tx, m.ty, 0.0, 0.0] {
                job_bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut params = Vec::with_capacity(48);
        for v in [out_w, out_h, jobs.len() as u32, 0] {
            params.extend_from_slice(&v.to_le_bytes());
        }
        for v in [norm.mean, norm.scale] {
            for x in [v[0], v[1], v[2], 0.0] {
                params.extend_from_slice(&x.to_le_bytes());
            }
        }
        let gpu = &self.gpu;
        let out_len = jobs.len() as u64 * 3 * out_w as u64 * out_h as u64;
        let params = gpu.uniform("warp params", &params);
        let jobs_buf = gpu.storage("warp jobs", &job_bytes, wgpu::BufferUsages::empty());
        let src_buf = gpu.storage("warp sources", &packed, wgpu::BufferUsages::empty());
        let dst = gpu.output("warp output", out_len * 4);
        let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("warp"),
            layout: &self.pipeline.get_bind_group_layout(0),
            entries: &[
                entry(0, &params),
                entry(1, &jobs_buf),
                entry(2, &src_buf),
                entry(3, &dst),
            ],
        });
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(out_w.div_ceil(16), out_h.div_ceil(16), jobs.len() as u32);
        }
        let bytes = gpu.read_back(encoder, &[&dst])?;
        let mut out = super::to_f32(&bytes[0]);
        out.truncate(out_len as usize);
        Ok(out)
    }
}

pub(super) fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

/// Plain-Rust reference of `shaders/warp.wgsl`: the same supersampling around
/// `prep::bilinear`, the CPU pipeline's own sampler.
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
        let n = job.taps();
        let step = 1.0 / n as f32;
        for y in 0..out_h {
            for x in 0..out_w {
                let mut acc = [0f32; 3];
                for ty in 0..n {
                    for tx in 0..n {
                        let u = x as f32 + (tx as f32 + 0.5) * step;
                        let v = y as f32 + (ty as f32 + 0.5) * step;
                        let (sx, sy) = job.out_to_src.apply(u, v);
                        let sample = prep::bilinear(src, sx, sy);
                        for c in 0..3 {
                            acc[c] += sample[c];
                        }
                    }
                }
                let i = y as usize * out_w as usize + x as usize;
                for c in 0..3 {
                    out[(j * 3 + c) * plane + i] =
                        (acc[c] / (n * n) as f32 - norm.mean[c]) * norm.scale[c];
                }
            }
        }
    }
    out
}
