//! Nearest-identity search for a whole batch of faces at once: on the CPU
//! (`Gallery::nearest`) or on the GPU (`gpu::GpuGallery`, `shaders/search.wgsl`).
//!
//! The GPU path keeps one mirror of the enrolled matrix on the device, keyed by the
//! gallery's `generation`: it goes up once per gallery version (lazily, on the first search
//! of that version, or ahead of time with `prepare`), never per request, and a stale
//! mirror is never searched. Each batch sends its queries and gets back only a shortlist
//! of `SHORTLIST` rows per query, which the host re-scores with `Gallery::nearest`'s own
//! arithmetic (`Gallery::nearest_of`). The answer is therefore identical to
//! `Gallery::nearest` — same name, same distance to the bit — unless more than
//! `SHORTLIST` rows lie within float rounding of the best one, where a row at the same
//! distance (to ~1e-6) may be named instead.
//!
//! An upload or search that returns an error is logged and that batch is answered on the
//! CPU, so matching never fails; a version whose upload failed stays on the CPU.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::ResolvedBackend;
use crate::gallery::{Gallery, Match};
use crate::gpu::{Gpu, GpuError, GpuGallery};

/// Rows below which `auto` searches on the CPU even with a GPU. A GPU search has a fixed
/// cost per batch (buffer set-up, a submission, a map and read-back: tenths of a
/// millisecond), while the CPU scans ~20 M rows x queries per second on two cores
/// (`benches/RESULTS.md`): at 4096 rows a typical batch of a few faces takes well under a
/// millisecond on the CPU, so the GPU pays off only beyond that.
pub const AUTO_MIN_ROWS: usize = 4096;
/// Candidates per query the GPU returns for the host to re-score.
const SHORTLIST: usize = 4;
/// `GpuSearch::failed` when no upload failed (no gallery reaches this generation).
const NOT_FAILED: u64 = u64::MAX;

/// Where gallery search runs (`--gallery-search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchChoice {
    /// The GPU when the compute backend resolved to wgpu on a hardware adapter and the
    /// gallery has at least `AUTO_MIN_ROWS` rows; else the CPU.
    #[default]
    Auto,
    /// Always the GPU (a software adapter such as lavapipe too); failing to open one is
    /// an error at start.
    Gpu,
    /// Always the CPU.
    Cpu,
}

impl FromStr for SearchChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "gpu" | "wgpu" => Ok(Self::Gpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown gallery search {other:?} (auto, gpu or cpu)"
            )),
        }
    }
}

impl fmt::Display for SearchChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
        })
    }
}

/// Answers nearest-identity queries against a gallery; one per process (shared by its
/// workers), as it owns the device mirror.
pub struct Matcher {
    gpu: Option<GpuSearch>,
}

struct GpuSearch {
    gpu: Arc<Gpu>,
    /// Smaller galleries are searched on the CPU.
    min_rows: usize,
    mirror: Mutex<Option<Arc<Mirror>>>,
    uploads: AtomicU64,
    /// The last generation whose upload failed (e.g. too large for the device): searched
    /// on the CPU rather than retried on every batch; a new version tries again.
    failed: AtomicU64,
}

/// The enrolled matrix of one gallery generation, on the device.
struct Mirror {
    generation: u64,
    rows: GpuGallery,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Matcher");
        d.field("kind", &self.kind());
        if let Some(g) = &self.gpu {
            d.field("adapter", &g.gpu.adapter)
                .field("min_rows", &g.min_rows);
        }
        d.finish()
    }
}

impl Matcher {
    /// Searches on the CPU only.
    pub fn cpu() -> Self {
        Self { gpu: None }
    }

    /// Searches on `gpu` for galleries of at least `min_rows` rows (0: always).
    pub fn gpu(gpu: Arc<Gpu>, min_rows: usize) -> Self {
        Self {
            gpu: Some(GpuSearch {
                gpu,
                min_rows,
                mirror: Mutex::new(None),
                uploads: AtomicU64::new(0),
                failed: AtomicU64::new(NOT_FAILED),
            }),
        }
    }

    /// The matcher for a choice, given the compute backend in use. `Gpu` fails when no
    /// adapter opens; `Auto` then falls back to the CPU, with a log line.
    pub fn resolve(choice: SearchChoice, backend: &ResolvedBackend) -> Result<Self, GpuError> {
        let matcher = match choice {
            SearchChoice::Cpu => Self::cpu(),
            SearchChoice::Gpu => Self::gpu(Gpu::open()?, 0),
            SearchChoice::Auto if backend.name != "wgpu" => Self::cpu(),
            SearchChoice::Auto => match Gpu::open() {
                Ok(gpu) if !gpu.software => Self::gpu(gpu, AUTO_MIN_ROWS),
                Ok(gpu) => {
                    tracing::info!(adapter = %gpu.adapter, "gallery search on the CPU: the only adapter is a software one");
                    Self::cpu()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "gallery search on the CPU: the GPU did not open");
                    Self::cpu()
                }
            },
        };
        match &matcher.gpu {
            Some(g) => tracing::info!(
                %choice,
                matcher = "gpu",
                adapter = %g.gpu.adapter,
                min_rows = g.min_rows,
                "gallery search"
            ),
            None => tracing::info!(%choice, matcher = "cpu", "gallery search"),
        }
        Ok(matcher)
    }

    /// `"gpu"` or `"cpu"`: where large galleries are searched.
    pub fn kind(&self) -> &'static str {
        if self.gpu.is_some() { "gpu" } else { "cpu" }
    }

    /// How many times a gallery matrix went up to the device (once per generation
    /// searched on the GPU).
    pub fn uploads(&self) -> u64 {
        self.gpu
            .as_ref()
            .map_or(0, |g| g.uploads.load(Ordering::Relaxed))
    }

    /// The nearest enrolled face for each query, as `Gallery::nearest` answers it (see
    /// the module notes for the one case where the GPU may name a tied row instead).
    pub fn nearest(&self, gallery: &Gallery, queries: &[&[f32]]) -> Vec<Option<Match>> {
        let Some(g) = self.gpu.as_ref().filter(|g| g.wanted(gallery)) else {
            return gallery.nearest(queries);
        };
        if queries.is_empty() {
            return Vec::new();
        }
        match g.nearest(gallery, queries) {
            Ok(Some(found)) => found,
            // An older snapshot than the mirror (a search that raced a change).
            Ok(None) => gallery.nearest(queries),
            Err(e) => {
                tracing::warn!(error = %e, rows = gallery.len(), "GPU gallery search failed; answering on the CPU");
                gallery.nearest(queries)
            }
        }
    }

    /// Puts `gallery` on the device ahead of the first search (a no-op when it is there
    /// already or would be searched on the CPU).
    pub fn prepare(&self, gallery: &Gallery) {
        if let Some(g) = self.gpu.as_ref().filter(|g| g.wanted(gallery))
            && let Err(e) = g.mirror(gallery)
        {
            tracing::warn!(error = %e, rows = gallery.len(), "uploading the gallery failed; it is searched on the CPU until it fits");
        }
    }
}

impl GpuSearch {
    fn wanted(&self, gallery: &Gallery) -> bool {
        !gallery.is_empty()
            && gallery.len() >= self.min_rows
            && self.failed.load(Ordering::Relaxed) != gallery.generation()
    }

    /// `None` when `gallery` is older than the mirror: answered on the CPU rather than
    /// replacing a newer mirror.
    fn nearest(
        &self,
        gallery: &Gallery,
        queries: &[&[f32]],
    ) -> Result<Option<Vec<Option<Match>>>, GpuError> {
        let Some(mirror) = self.mirror(gallery)? else {
            return Ok(None);
        };
        let flat = queries.concat();
        let shortlists = mirror.rows.search(&flat, SHORTLIST)?;
        Ok(Some(
            shortlists
                .iter()
                .zip(queries)
                .map(|(rows, q)| gallery.nearest_of(q, rows.iter().map(|n| n.row as usize)))
                .collect(),
        ))
    }

    /// The device copy of `gallery`, uploaded if the mirror holds an older generation.
    fn mirror(&self, gallery: &Gallery) -> Result<Option<Arc<Mirror>>, GpuError> {
        // Held across an upload, so one version goes up once however many ask for it.
        let mut slot = self.mirror.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some(m) if m.generation == gallery.generation() => return Ok(Some(m.clone())),
            Some(m) if m.generation > gallery.generation() => return Ok(None),
            _ => {}
        }
        let t = std::time::Instant::now();
        let (matrix, norms) = gallery.rows();
        let rows = GpuGallery::upload(self.gpu.clone(), &matrix, &norms).inspect_err(|_| {
            self.failed.store(gallery.generation(), Ordering::Relaxed);
        })?;
        tracing::info!(
            rows = gallery.len(),
            segments = rows.segments(),
            generation = gallery.generation(),
            seconds = t.elapsed().as_secs_f32(),
            "gallery uploaded to the GPU"
        );
        self.uploads.fetch_add(1, Ordering::Relaxed);
        let mirror = Arc::new(Mirror {
            generation: gallery.generation(),
            rows,
        });
        *slot = Some(mirror.clone());
        Ok(Some(mirror))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_and_print() {
        for (s, c) in [
            ("auto", SearchChoice::Auto),
            ("GPU", SearchChoice::Gpu),
            ("cpu", SearchChoice::Cpu),
        ] {
            let parsed: SearchChoice = s.parse().expect("valid");
            assert_eq!(parsed, c);
            assert_eq!(parsed.to_string(), s.to_ascii_lowercase());
        }
        assert!("fast".parse::<SearchChoice>().is_err());
    }

    #[test]
    fn cpu_matcher_is_gallery_nearest() {
        let m = Matcher::cpu();
        assert_eq!(m.kind(), "cpu");
        let mut g = Gallery::new("m");
        let q = vec![0.5f32; crate::gallery::DIM];
        assert_eq!(m.nearest(&g, &[&q]), vec![None]);
        g.add("a", &vec![0.0; crate::gallery::DIM]);
        assert_eq!(m.nearest(&g, &[&q]), g.nearest(&[&q]));
        assert_eq!(m.uploads(), 0);
    }
}
