//! Hand-written WGSL kernels (`shaders/` at the repository root): fused pre-processing of
//! a batch of images, launched on Burn's own wgpu device so its output is the networks'
//! input tensor; and exact gallery search with top-k, run through raw `wgpu`.
//!
//! Each kernel has a plain-Rust reference in its module (`warp::reference`,
//! `search::reference`); the agreement tests (`engine/tests/wgpu/`) run on whatever
//! adapter exists, Mesa's software Vulkan (lavapipe) on CI.
//!
//! The kernels need the `gpu` cargo feature (Burn's wgpu backend, CubeCL). Without it
//! [`Gpu::open`] fails with [`GpuError::NotBuilt`] and the device types cannot be made
//! (`absent.rs`), so every caller takes its CPU path; the plain parts (jobs, references)
//! are always here.

#[cfg(not(feature = "gpu"))]
mod absent;
#[cfg(feature = "gpu")]
mod device;
mod error;
pub mod search;
pub mod warp;

#[cfg(not(feature = "gpu"))]
pub use absent::{DeviceImages, Gpu, GpuGallery};
#[cfg(feature = "gpu")]
pub(crate) use device::block_on;
#[cfg(feature = "gpu")]
pub use device::{Gpu, gallery::GpuGallery, images::DeviceImages};
pub use error::GpuError;
pub use search::Neighbour;
pub use warp::{Normalize, WarpJob};
