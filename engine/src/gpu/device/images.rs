//! The warp kernel's side on the device: [`DeviceImages`] (see [`crate::gpu::warp`]).

use std::fmt;

use burn::backend::fusion::{NoOp, get_client, stream::StreamId};
use burn::backend::ir::{BackendIr, InitOperationIr, OperationIr};
use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::backend::{Cube, DispatchDevice};
use burn::tensor::{DType, Device, Shape, Tensor};
use cubecl::client::Client;
use cubecl::prelude::KernelId;
use cubecl::server::{Handle, KernelArguments};
use cubecl::{CubeCount, CubeDim};
use image::RgbImage;

use crate::gpu::error::GpuError;
use crate::gpu::warp::{Normalize, WarpJob};
use crate::prep::Sampler;

const SHADER: &str = include_str!("../../../../shaders/warp.wgsl");
/// The shader's workgroup is 16 x 16 output pixels of one job.
const TILE: u32 = 16;
/// Bytes in one `Job` of the shader.
const JOB_BYTES: usize = 64;

struct WarpSource;

impl KernelSource for WarpSource {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(SHADER)
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>()
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Decoded images resident on a wgpu device, packed into one buffer, ready for any
/// number of warps.
pub struct DeviceImages {
    client: Client,
    device: cubecl::Device,
    packed: Handle,
    /// Byte offset, width and height of each image in `packed`.
    images: Vec<(u32, u32, u32)>,
}

impl fmt::Debug for DeviceImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceImages")
            .field("device", &self.device)
            .field("images", &self.images)
            .finish()
    }
}

impl DeviceImages {
    /// Uploads `images` (their RGB bytes, back to back) to `device`, which must be a wgpu
    /// device. One transfer, whatever the number of images.
    pub fn upload(device: &Device, images: &[&RgbImage]) -> Result<Self, GpuError> {
        let device = match device.as_dispatch() {
            DispatchDevice::Cube(d @ cubecl::Device::Wgpu(_)) => d.clone(),
            _ => {
                return Err(GpuError::Invalid(
                    "the warp kernel runs on a wgpu device only".into(),
                ));
            }
        };
        let total: usize = images.iter().map(|i| i.as_raw().len()).sum();
        if total > u32::MAX as usize {
            return Err(GpuError::Invalid(format!(
                "{total} bytes of images do not fit one warp batch (4 GiB)"
            )));
        }
        let mut packed = Vec::with_capacity(total.div_ceil(4) * 4);
        let mut meta = Vec::with_capacity(images.len());
        for img in images {
            meta.push((packed.len() as u32, img.width(), img.height()));
            packed.extend_from_slice(img.as_raw());
        }
        // Bindings are read as u32 words and must not be empty.
        packed.resize((packed.len().div_ceil(4) * 4).max(4), 0);
        let client = device.client();
        let handle = client.create_from_slice(&packed);
        Ok(Self {
            client,
            device,
            packed: handle,
            images: meta,
        })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Runs every job and returns the `[jobs.len(), 3, out_h, out_w]` tensor on the
    /// device, ready to feed a network.
    pub fn warp(
        &self,
        jobs: &[WarpJob],
        out_w: u32,
        out_h: u32,
        norm: Normalize,
    ) -> Result<Tensor<4>, GpuError> {
        if jobs.is_empty() || out_w == 0 || out_h == 0 {
            return Err(GpuError::Invalid(format!(
                "an empty warp ({} jobs of {out_w}x{out_h})",
                jobs.len()
            )));
        }
        let mut job_bytes = Vec::with_capacity(jobs.len() * JOB_BYTES);
        for job in jobs {
            let &(offset, w, h) = self.images.get(job.source).ok_or_else(|| {
                GpuError::Invalid(format!(
                    "job names source {} of {}",
                    job.source,
                    self.images.len()
                ))
            })?;
            let Sampler {
                map: m,
                radius,
                clamp,
                extent,
            } = job.sampler;
            for v in [offset, w, h, clamp as u32] {
                job_bytes.extend_from_slice(&v.to_le_bytes());
            }
            for v in [m.a, m.b, m.c, m.d, m.tx, m.ty, radius] {
                job_bytes.extend_from_slice(&v.to_le_bytes());
            }
            for v in [extent.0, extent.1, 0, 0, 0] {
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
        let n = jobs.len();
        let (h, w) = (out_h as usize, out_w as usize);
        let params = self.client.create_from_slice(&params);
        let job_buf = self.client.create_from_slice(&job_bytes);
        let out = self.client.empty(n * 3 * h * w * 4);
        let kernel = SourceKernel::new(WarpSource, CubeDim::new_3d(TILE, TILE, 1));
        self.client.launch(
            Box::new(kernel),
            CubeCount::Static(out_w.div_ceil(TILE), out_h.div_ceil(TILE), n as u32),
            KernelArguments::new()
                .with_buffer(params.binding())
                .with_buffer(job_buf.binding())
                .with_buffer(self.packed.clone().binding())
                .with_buffer(out.clone().binding()),
        );
        let shape = Shape::new([n, 3, h, w]);
        let tensor = CubeTensor::new_contiguous(
            self.client.clone(),
            self.device.clone(),
            shape.clone(),
            out,
            DType::F32,
        );
        // Hand the buffer to Burn's fusion layer as an initialised tensor, exactly as
        // `Tensor::from_data` does with an uploaded one.
        let fusion = get_client::<CubeBackend>(&self.device);
        let handle = CubeBackend::float_tensor_handle(tensor);
        let init =
            InitOperationIr::create(shape, DType::F32, || fusion.register_tensor_handle(handle));
        let mut outputs = fusion.register(
            StreamId::current(),
            OperationIr::Init(init),
            NoOp::<CubeBackend>::new(),
        );
        Ok(Tensor::from_primitive::<Cube>(outputs.remove(0)))
    }

    /// As `warp`, read back to the host (tests and benchmarks).
    pub fn warp_to_host(
        &self,
        jobs: &[WarpJob],
        out_w: u32,
        out_h: u32,
        norm: Normalize,
    ) -> Result<Vec<f32>, GpuError> {
        self.warp(jobs, out_w, out_h, norm)?
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| GpuError::Readback(format!("{e:?}")))
    }
}
