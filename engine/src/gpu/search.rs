//! Exact gallery search on the device (`shaders/search.wgsl`): the enrolled matrix goes up
//! once; each query batch sends its queries and gets back only the k nearest rows and
//! their distances.

use crate::gallery::DIM;

/// Largest k the kernel keeps (`KMAX` in the shader).
pub const MAX_K: usize = 8;

/// One of the k nearest rows to a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    pub row: u32,
    /// Euclidean distance.
    pub distance: f32,
}

/// Plain-Rust reference of `shaders/search.wgsl`: every distance, sorted by (distance,
/// row), first k.
pub fn reference(matrix: &[f32], norms: &[f32], queries: &[f32], k: usize) -> Vec<Vec<Neighbour>> {
    queries
        .chunks_exact(DIM)
        .map(|q| {
            let qq: f32 = q.iter().map(|x| x * x).sum();
            let mut all: Vec<(f32, u32)> = matrix
                .chunks_exact(DIM)
                .zip(norms)
                .enumerate()
                .map(|(r, (e, n))| {
                    let dot: f32 = q.iter().zip(e).map(|(a, b)| a * b).sum();
                    ((n - 2.0 * dot + qq).max(0.0), r as u32)
                })
                .collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            all.into_iter()
                .take(k)
                .map(|(d2, row)| Neighbour {
                    row,
                    distance: d2.sqrt(),
                })
                .collect()
        })
        .collect()
}
