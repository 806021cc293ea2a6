//! The search kernel's side on the device: [`GpuGallery`] (see [`crate::gpu::search`]).

use std::sync::Arc;

use burn::tensor::wgpu::wgpu;

use super::{Gpu, entry};
use crate::gallery::DIM;
use crate::gpu::error::GpuError;
use crate::gpu::search::{MAX_K, Neighbour};

const SHADER: &str = include_str!("../../../../shaders/search.wgsl");
/// Queries per workgroup (`QB` in the shader).
const QUERY_BLOCK: u32 = 8;
/// Rows one workgroup scans.
const CHUNK_ROWS: u32 = 4096;
const NONE: u32 = u32::MAX;

struct Segment {
    rows: u32,
    row_base: u32,
    chunk_base: u32,
    chunks: u32,
    matrix: wgpu::Buffer,
    norms: wgpu::Buffer,
}

/// An enrolled matrix resident on the device, split into segments that each fit one
/// storage binding.
pub struct GpuGallery {
    gpu: Arc<Gpu>,
    scan: wgpu::ComputePipeline,
    merge: wgpu::ComputePipeline,
    segments: Vec<Segment>,
    rows: usize,
    chunks: u32,
}

impl GpuGallery {
    /// Uploads a row-major `[rows, 128]` matrix and its rows' squared norms.
    pub fn upload(gpu: Arc<Gpu>, matrix: &[f32], norms: &[f32]) -> Result<Self, GpuError> {
        let limit = gpu.device.limits().max_storage_buffer_binding_size as usize;
        let per_segment = (limit / (DIM * 4)).min(u32::MAX as usize / DIM);
        Self::upload_segmented(gpu, matrix, norms, per_segment)
    }

    /// As `upload`, with at most `segment_rows` rows per binding (rounded down to whole
    /// chunks when over one chunk).
    pub fn upload_segmented(
        gpu: Arc<Gpu>,
        matrix: &[f32],
        norms: &[f32],
        segment_rows: usize,
    ) -> Result<Self, GpuError> {
        let rows = norms.len();
        if matrix.len() != rows * DIM {
            return Err(GpuError::Invalid(format!(
                "matrix has {} values, expected {rows} x {DIM}",
                matrix.len()
            )));
        }
        if rows >= NONE as usize {
            return Err(GpuError::Invalid(format!(
                "{rows} rows do not fit u32 indices"
            )));
        }
        let chunk = CHUNK_ROWS as usize;
        let segment_rows = match segment_rows {
            0 => return Err(GpuError::Invalid("segments of 0 rows".into())),
            s if s > chunk => s / chunk * chunk,
            s => s,
        };
        let (scan, merge, segments, chunk_base) = gpu.scoped("uploading the gallery", || {
            let scan = gpu.pipeline(SHADER, "gallery scan", "scan");
            let merge = gpu.pipeline(SHADER, "gallery merge", "merge");
            let mut segments = Vec::new();
            let mut chunk_base = 0;
            for row_base in (0..rows).step_by(segment_rows) {
                let n = segment_rows.min(rows - row_base);
                let chunks = n.div_ceil(chunk) as u32;
                let m = &matrix[row_base * DIM..(row_base + n) * DIM];
                segments.push(Segment {
                    rows: n as u32,
                    row_base: row_base as u32,
                    chunk_base,
                    chunks,
                    matrix: gpu.storage("gallery rows", f32_bytes(m), wgpu::BufferUsages::empty()),
                    norms: gpu.storage(
                        "gallery norms",
                        f32_bytes(&norms[row_base..row_base + n]),
                        wgpu::BufferUsages::empty(),
                    ),
                });
                chunk_base += chunks;
            }
            (scan, merge, segments, chunk_base)
        })?;
        Ok(Self {
            gpu,
            scan,
            merge,
            segments,
            rows,
            chunks: chunk_base,
        })
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bindings the matrix was split into.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The `k` nearest rows (closest first) for each of the `queries.len() / 128` queries;
    /// fewer when the gallery has fewer rows.
    pub fn search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Neighbour>>, GpuError> {
        if !queries.len().is_multiple_of(DIM) {
            return Err(GpuError::Invalid(format!(
                "queries have {} values, not a multiple of {DIM}",
                queries.len()
            )));
        }
        if k == 0 || k > MAX_K {
            return Err(GpuError::Invalid(format!("k = {k}, must be 1..={MAX_K}")));
        }
        let nq = queries.len() / DIM;
        if nq == 0 || self.is_empty() {
            return Ok(vec![Vec::new(); nq]);
        }
        // As many queries per dispatch as their buffers and candidates fit one binding.
        let binding = self.gpu.device.limits().max_storage_buffer_binding_size as usize;
        let per_query = (DIM * 4).max(self.chunks as usize * k * 4);
        let step = (binding / per_query).clamp(1, u32::MAX as usize / MAX_K);
        let mut out = Vec::with_capacity(nq);
        for slice in queries.chunks(step * DIM) {
            out.extend(
                self.gpu
                    .scoped("searching the gallery", || self.search_slice(slice, k))??,
            );
        }
        Ok(out)
    }

    /// `search` for queries that fit one dispatch.
    fn search_slice(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Neighbour>>, GpuError> {
        let nq = queries.len() / DIM;
        let gpu = &self.gpu;
        let q = gpu.storage("queries", f32_bytes(queries), wgpu::BufferUsages::empty());
        let cand = nq as u64 * self.chunks as u64 * k as u64 * 4;
        let cand_d = gpu.output("candidate distances", cand);
        let cand_i = gpu.output("candidate rows", cand);
        let top_d = gpu.output("top distances", (nq * k * 4) as u64);
        let top_i = gpu.output("top rows", (nq * k * 4) as u64);
        let params = |s: Option<&Segment>| {
            let (rows, row_base, chunk_base) =
                s.map_or((0, 0, 0), |s| (s.rows, s.row_base, s.chunk_base));
            let words = [
                rows,
                nq as u32,
                k as u32,
                CHUNK_ROWS,
                row_base,
                chunk_base,
                self.chunks,
                0,
            ];
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            gpu.uniform("search params", &bytes)
        };
        let mut encoder = gpu.device.create_command_encoder(&Default::default());
        let scan_layout = self.scan.get_bind_group_layout(0);
        for s in &self.segments {
            let p = params(Some(s));
            let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("gallery scan"),
                layout: &scan_layout,
                entries: &[
                    entry(0, &p),
                    entry(1, &s.matrix),
                    entry(2, &s.norms),
                    entry(3, &q),
                    entry(4, &cand_d),
                    entry(5, &cand_i),
                ],
            });
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.scan);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((nq as u32).div_ceil(QUERY_BLOCK), s.chunks, 1);
        }
        {
            let p = params(None);
            let bind = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("gallery merge"),
                layout: &self.merge.get_bind_group_layout(0),
                entries: &[
                    entry(0, &p),
                    entry(4, &cand_d),
                    entry(5, &cand_i),
                    entry(6, &top_d),
                    entry(7, &top_i),
                ],
            });
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.merge);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups((nq as u32).div_ceil(64), 1, 1);
        }
        let back = gpu.read_back(encoder, &[&top_d, &top_i])?;
        let (d, i) = (super::to_f32(&back[0]), super::to_u32(&back[1]));
        Ok((0..nq)
            .map(|qi| {
                (0..k)
                    .map(|j| qi * k + j)
                    .filter(|&t| i[t] != NONE)
                    .map(|t| Neighbour {
                        row: i[t],
                        distance: d[t].max(0.0).sqrt(),
                    })
                    .collect()
            })
            .collect())
    }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}
