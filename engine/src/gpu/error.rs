//! Why the GPU path is unavailable or failed.

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no wgpu adapter (install a Vulkan driver, e.g. Debian mesa-vulkan-drivers): {0}")]
    NoAdapter(String),
    #[error("could not open the device: {0}")]
    Device(String),
    #[error("{0}")]
    Invalid(String),
    #[error("reading results back failed: {0}")]
    Readback(String),
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// This binary was built without the `gpu` feature.
    #[error("this build has no GPU support (build with `--features gpu`)")]
    NotBuilt,
}
