//! The wgpu device the kernels share ([`Gpu`]), the warp kernel's device images
//! ([`images::DeviceImages`]) and the search kernel's resident gallery
//! ([`gallery::GpuGallery`]). Built with the `gpu` feature only.

pub mod gallery;
pub mod images;

use std::sync::Arc;

use burn::tensor::wgpu::wgpu;

use super::error::GpuError;

/// One wgpu device and queue shared by the kernels.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Adapter name, type and API, for logs and benchmark reports.
    pub adapter: String,
    /// Whether the adapter is a CPU emulation (lavapipe).
    pub software: bool,
}

impl Gpu {
    /// Opens the highest-performance adapter (a software one when nothing else exists),
    /// with the adapter's own limits so large galleries fit in few bindings.
    pub fn open() -> Result<Arc<Self>, GpuError> {
        Self::open_capped(u64::MAX)
    }

    /// As `open`, with buffers and storage bindings capped at `max_buffer` bytes: a small
    /// device's limits on any adapter (tests of segmenting and of allocation failures).
    pub fn open_capped(max_buffer: u64) -> Result<Arc<Self>, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        limits.max_buffer_size = limits.max_buffer_size.min(max_buffer);
        limits.max_storage_buffer_binding_size =
            limits.max_storage_buffer_binding_size.min(max_buffer);
        let (device, queue) = block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("facerec kernels"),
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device(e.to_string()))?;
        Ok(Arc::new(Self {
            device,
            queue,
            adapter: format!("{} ({:?}, {:?})", info.name, info.device_type, info.backend),
            software: info.device_type == wgpu::DeviceType::Cpu,
        }))
    }

    /// Runs `work` (buffer creation, dispatches) with wgpu's errors captured: running out
    /// of device memory or breaking a device limit becomes an error of the call, instead
    /// of wgpu's default (a panic in its uncaptured-error handler).
    fn scoped<T>(&self, what: &str, work: impl FnOnce() -> T) -> Result<T, GpuError> {
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = work();
        let invalid = block_on(validation.pop());
        if let Some(e) = block_on(memory.pop()) {
            return Err(GpuError::OutOfMemory(format!("{what}: {e}")));
        }
        match invalid {
            Some(e) => Err(GpuError::Invalid(format!("{what}: {e}"))),
            None => Ok(out),
        }
    }

    fn pipeline(&self, source: &str, label: &str, entry: &str) -> wgpu::ComputePipeline {
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        self.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
    }

    fn storage(&self, label: &str, bytes: &[u8], extra: wgpu::BufferUsages) -> wgpu::Buffer {
        // Bindings must not be empty; a 4-byte placeholder stands in for no data. Created
        // unmapped and written through the queue, so a buffer the device refuses is an
        // error `scoped` reports, not a mapping of nothing.
        let contents: &[u8] = if bytes.is_empty() { &[0; 4] } else { bytes };
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: contents.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | extra,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, contents);
        buffer
    }

    fn uniform(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    fn output(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        })
    }

    /// Copies the given device buffers back after `encoder`'s work, in one submission.
    fn read_back(
        &self,
        mut encoder: wgpu::CommandEncoder,
        buffers: &[&wgpu::Buffer],
    ) -> Result<Vec<Vec<u8>>, GpuError> {
        let staging: Vec<wgpu::Buffer> = buffers
            .iter()
            .map(|b| {
                let s = self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("read back"),
                    size: b.size(),
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                encoder.copy_buffer_to_buffer(b, 0, &s, 0, b.size());
                s
            })
            .collect();
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        for (i, s) in staging.iter().enumerate() {
            let tx = tx.clone();
            s.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send((i, r));
            });
        }
        drop(tx);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        for (_, r) in rx.iter() {
            r.map_err(|e| GpuError::Readback(e.to_string()))?;
        }
        staging
            .iter()
            .map(|s| {
                let bytes = s
                    .get_mapped_range(..)
                    .map_err(|e| GpuError::Readback(e.to_string()))?
                    .to_vec();
                s.unmap();
                Ok(bytes)
            })
            .collect()
    }
}

pub(super) fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: buffer.as_entire_binding(),
    }
}

/// Drives a wgpu future to completion. On native backends these futures are ready on the
/// first poll or after the device is polled, so a spin with yields is enough.
pub(crate) fn block_on<F: std::future::IntoFuture>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut fut = std::pin::pin!(f.into_future());
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

pub(super) fn to_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

pub(super) fn to_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
