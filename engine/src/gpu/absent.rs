//! The GPU path in a build without the `gpu` feature: the same types, none of which can be
//! made. [`Gpu::open`] and [`DeviceImages::upload`] fail with [`GpuError::NotBuilt`], so a
//! caller that asks for a device gets that error and one that only prefers it takes the
//! CPU path; every other method is unreachable, as no value exists to call it on.

use std::sync::Arc;

use burn::tensor::{Device, Tensor};
use image::RgbImage;

use super::error::GpuError;
use super::search::Neighbour;
use super::warp::{Normalize, WarpJob};

/// Has no values: each type below holds one, so none of them can exist.
#[derive(Debug)]
enum Never {}

/// A wgpu device: never, in this build.
pub struct Gpu {
    pub adapter: String,
    pub software: bool,
    never: Never,
}

impl Gpu {
    pub fn open() -> Result<Arc<Self>, GpuError> {
        Err(GpuError::NotBuilt)
    }

    pub fn open_capped(_max_buffer: u64) -> Result<Arc<Self>, GpuError> {
        Err(GpuError::NotBuilt)
    }
}

/// Images on a wgpu device: never, in this build.
#[derive(Debug)]
pub struct DeviceImages {
    never: Never,
}

impl DeviceImages {
    pub fn upload(_device: &Device, _images: &[&RgbImage]) -> Result<Self, GpuError> {
        Err(GpuError::NotBuilt)
    }

    pub fn len(&self) -> usize {
        match self.never {}
    }

    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    pub fn warp(
        &self,
        _jobs: &[WarpJob],
        _out_w: u32,
        _out_h: u32,
        _norm: Normalize,
    ) -> Result<Tensor<4>, GpuError> {
        match self.never {}
    }

    pub fn warp_to_host(
        &self,
        _jobs: &[WarpJob],
        _out_w: u32,
        _out_h: u32,
        _norm: Normalize,
    ) -> Result<Vec<f32>, GpuError> {
        match self.never {}
    }
}

/// A gallery resident on a wgpu device: never, in this build.
pub struct GpuGallery {
    never: Never,
}

impl GpuGallery {
    pub fn upload(gpu: Arc<Gpu>, _matrix: &[f32], _norms: &[f32]) -> Result<Self, GpuError> {
        match gpu.never {}
    }

    pub fn upload_segmented(
        gpu: Arc<Gpu>,
        _matrix: &[f32],
        _norms: &[f32],
        _segment_rows: usize,
    ) -> Result<Self, GpuError> {
        match gpu.never {}
    }

    pub fn len(&self) -> usize {
        match self.never {}
    }

    pub fn is_empty(&self) -> bool {
        match self.never {}
    }

    pub fn segments(&self) -> usize {
        match self.never {}
    }

    pub fn search(&self, _queries: &[f32], _k: usize) -> Result<Vec<Vec<Neighbour>>, GpuError> {
        match self.never {}
    }
}
