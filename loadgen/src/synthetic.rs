//! Gallery rows for search benchmarks: the real descriptors in
//! `models/parity/descriptors.f32` (the recognition net's output on the parity chips), each
//! repeated with a small deterministic perturbation (uniform in ±0.1 per dimension, xorshift)
//! so that every row is distinct and the rows look like faces, not noise.

use std::path::Path;

use facerec_contract::gallery::DIM;

/// The descriptors in `<models>/parity/descriptors.f32` (little-endian f32, 128 per face).
pub fn parity_descriptors(models: &Path) -> Result<Vec<Vec<f32>>, String> {
    let path = models.join("parity/descriptors.f32");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(4 * DIM) {
        return Err(format!(
            "{}: {} bytes is not a whole number of {DIM}-d f32 descriptors",
            path.display(),
            bytes.len()
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(v.chunks_exact(DIM).map(<[f32]>::to_vec).collect())
}

/// `n` rows: row `i` is `base[i % base.len()]` plus its own perturbation, drawn from a
/// stream picked by `seed` (the same `base` and `seed` give the same rows).
pub fn perturbed_rows(
    base: &[Vec<f32>],
    n: usize,
    seed: u64,
) -> impl Iterator<Item = Vec<f32>> + '_ {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    (0..n).map(move |i| {
        base[i % base.len()]
            .iter()
            .map(|&x| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                x + ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    })
}
