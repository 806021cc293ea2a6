//! The gallery: enrolled identities, each with one or more face embeddings, persisted in a
//! small versioned binary file that many workers can load.
//!
//! Search is exact: every query is compared with every enrolled face. Embeddings live in
//! one contiguous row-major matrix with precomputed squared norms, so a query costs one
//! dot product per face (`|q-e|² = |q|² + |e|² - 2 q·e`), written so the compiler
//! vectorises it; queries are processed in blocks that share each row load, and large
//! galleries are split across threads with rayon.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Embedding width of the recognition model.
pub const DIM: usize = 128;
const MAGIC: &[u8; 8] = b"FRGALLRY";
/// Version 2 added each face's size (`sides`); version 1 files load with sizes unknown.
const VERSION: u32 = 2;
/// Rows per rayon task; below this a search stays on the calling thread.
const PAR_ROWS: usize = 16_384;
/// Queries scored together against each row.
const QUERY_BLOCK: usize = 4;
/// Source of `Gallery::generation` values; 0 is left to empty default galleries.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// The nearest enrolled face to a query.
#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// Identity of the nearest face.
    pub name: String,
    /// Euclidean distance to it.
    pub distance: f32,
    /// The enrolled face's size (`FaceBox::side`; 0 when unknown), for the
    /// same-person rule (`threshold::Threshold`).
    pub side: f32,
}

/// Names and face counts, as listed by the API.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IdentitySummary {
    pub name: String,
    pub faces: usize,
}

/// An in-memory gallery.
#[derive(Debug, Clone, Default)]
pub struct Gallery {
    /// Identifier of the model that made the embeddings (sha256 of its ONNX file); a
    /// gallery is only comparable with embeddings of the same model.
    model_id: String,
    names: Vec<String>,
    /// Row `i` of `matrix` belongs to `names[owner[i]]`.
    owner: Vec<u32>,
    matrix: Vec<f32>,
    norms: Vec<f32>,
    /// Row `i`'s face size in its source image (`FaceBox::side`), 0 when unknown.
    sides: Vec<f32>,
    /// Names this content: a fresh process-wide value on every change (see `generation`).
    generation: u64,
}

impl Gallery {
    pub fn new(model_id: impl Into<String>) -> Self {
        Self {
            model_id: model_id.into(),
            ..Self::default()
        }
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Identifies the enrolled rows: unique in the process to each change (`add`, `remove`,
    /// `from_bytes`) and kept by `clone`, so two galleries with the same generation have
    /// the same rows (0: an empty gallery never changed). Device mirrors of the matrix
    /// (`matcher::Matcher`) are keyed by it; later changes have larger values.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of enrolled faces.
    pub fn len(&self) -> usize {
        self.owner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owner.is_empty()
    }

    /// Identities with their face counts, sorted by name.
    pub fn identities(&self) -> Vec<IdentitySummary> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for &o in &self.owner {
            *counts.entry(&self.names[o as usize]).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|(name, faces)| IdentitySummary {
                name: name.to_string(),
                faces,
            })
            .collect()
    }

    /// Adds one face embedding to `name` (created if new), its size unknown (it then
    /// counts as a small face: `threshold::Threshold`).
    pub fn add(&mut self, name: &str, embedding: &[f32]) {
        self.add_face(name, embedding, 0.0);
    }

    /// Adds one face embedding to `name` (created if new) with the face's size in its
    /// source image (`FaceBox::side`).
    pub fn add_face(&mut self, name: &str, embedding: &[f32], side: f32) {
        assert_eq!(embedding.len(), DIM, "embeddings are {DIM}-dimensional");
        let idx = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        };
        self.owner.push(idx as u32);
        self.matrix.extend_from_slice(embedding);
        self.norms.push(dot(embedding, embedding));
        self.sides.push(side);
        self.changed();
    }

    /// Removes an identity and all its faces; returns how many faces went.
    pub fn remove(&mut self, name: &str) -> usize {
        let Some(idx) = self.names.iter().position(|n| n == name) else {
            return 0;
        };
        let idx = idx as u32;
        let mut removed = 0;
        let (mut owner, mut matrix, mut norms, mut sides) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, &o) in self.owner.iter().enumerate() {
            if o == idx {
                removed += 1;
                continue;
            }
            owner.push(if o > idx { o - 1 } else { o });
            matrix.extend_from_slice(&self.matrix[i * DIM..(i + 1) * DIM]);
            norms.push(self.norms[i]);
            sides.push(self.sides[i]);
        }
        self.names.remove(idx as usize);
        (self.owner, self.matrix, self.norms, self.sides) = (owner, matrix, norms, sides);
        self.changed();
        removed
    }

    /// The enrolled matrix (row-major, `len() x DIM`) and each row's squared norm, e.g.
    /// to upload to a device (`gpu::GpuGallery`).
    pub fn rows(&self) -> (&[f32], &[f32]) {
        (&self.matrix, &self.norms)
    }

    /// The identity a row of `rows()` belongs to.
    pub fn row_name(&self, row: usize) -> Option<&str> {
        let owner = *self.owner.get(row)? as usize;
        self.names.get(owner).map(String::as_str)
    }

    /// The nearest enrolled face for each query (`None` for an empty gallery). Among
    /// rows at the same distance the first enrolled wins.
    pub fn nearest(&self, queries: &[&[f32]]) -> Vec<Option<Match>> {
        if self.is_empty() {
            return vec![None; queries.len()];
        }
        let best: Vec<(f32, usize)> = queries
            .chunks(QUERY_BLOCK)
            .flat_map(|block| self.nearest_block(block))
            .collect();
        best.into_iter()
            .zip(queries)
            .map(|((s, row), q)| Some(self.found(q, s, row)))
            .collect()
    }

    /// The nearest to `query` of the given rows (a shortlist from another search, e.g.
    /// the GPU's top-k), scored with exactly `nearest`'s arithmetic and tie rule: when
    /// the shortlist holds `nearest`'s row, the answer is identical, distance included.
    /// `None` when no row is valid.
    pub fn nearest_of(
        &self,
        query: &[f32],
        rows: impl IntoIterator<Item = usize>,
    ) -> Option<Match> {
        rows.into_iter()
            .filter(|&r| r < self.len())
            .map(|r| (self.score(query, r), r))
            // `nearest`'s order: by score as `<` sees it, then the lower row.
            .min_by(|a, b| {
                a.0.partial_cmp(&b.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.1.cmp(&b.1))
            })
            .map(|(s, row)| self.found(query, s, row))
    }

    fn score(&self, q: &[f32], r: usize) -> f32 {
        score(self.norms[r], &self.matrix[r * DIM..(r + 1) * DIM], q)
    }

    fn found(&self, q: &[f32], score: f32, row: usize) -> Match {
        let d2 = (score + dot(q, q)).max(0.0);
        Match {
            name: self.names[self.owner[row] as usize].clone(),
            distance: d2.sqrt(),
            side: self.sides[row],
        }
    }

    /// For up to `QUERY_BLOCK` queries: (min over rows of |e|² - 2 q·e, argmin row).
    fn nearest_block(&self, block: &[&[f32]]) -> Vec<(f32, usize)> {
        let rows = self.len();
        let scan = |start: usize, end: usize| -> Vec<(f32, usize)> {
            let mut best = vec![(f32::INFINITY, 0usize); block.len()];
            for r in start..end {
                let e = &self.matrix[r * DIM..(r + 1) * DIM];
                for (b, q) in best.iter_mut().zip(block) {
                    let s = score(self.norms[r], e, q);
                    if s < b.0 {
                        *b = (s, r);
                    }
                }
            }
            best
        };
        if rows < 2 * PAR_ROWS {
            return scan(0, rows);
        }
        let starts: Vec<usize> = (0..rows).step_by(PAR_ROWS).collect();
        starts
            .par_iter()
            .map(|&s| scan(s, (s + PAR_ROWS).min(rows)))
            .reduce(
                || vec![(f32::INFINITY, 0usize); block.len()],
                |a, b| {
                    a.into_iter()
                        .zip(b)
                        .map(|(x, y)| {
                            if y.0 < x.0 || (y.0 == x.0 && y.1 < x.1) {
                                y
                            } else {
                                x
                            }
                        })
                        .collect()
                },
            )
    }

    /// Serialises the gallery (see `load` for the format).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.matrix.len() * 4);
        put_str(&mut body, &self.model_id);
        body.extend_from_slice(&(DIM as u32).to_le_bytes());
        body.extend_from_slice(&(self.names.len() as u32).to_le_bytes());
        for n in &self.names {
            put_str(&mut body, n);
        }
        body.extend_from_slice(&(self.owner.len() as u64).to_le_bytes());
        for &o in &self.owner {
            body.extend_from_slice(&o.to_le_bytes());
        }
        for &side in &self.sides {
            body.extend_from_slice(&side.to_le_bytes());
        }
        for &v in &self.matrix {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = Vec::with_capacity(body.len() + 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&Sha256::digest(&body));
        out
    }

    /// Parses a gallery file: `FRGALLRY`, version u32, model id, dim u32, names, face
    /// count u64, owners u32 each, face sides f32 each (from version 2), embeddings f32
    /// each (all little-endian), then the sha256 of everything between the version and
    /// the checksum.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 12 + 32 || &bytes[..8] != MAGIC {
            return Err("not a facerec gallery file".into());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().map_err(|_| "short header")?);
        if version != VERSION && version != 1 {
            return Err(format!(
                "gallery format version {version} is not supported (this build reads {VERSION})"
            ));
        }
        let (body, sum) = bytes[12..].split_at(bytes.len() - 12 - 32);
        if Sha256::digest(body).as_slice() != sum {
            return Err("checksum mismatch: the file is truncated or corrupt".into());
        }
        let mut r = Reader { buf: body, pos: 0 };
        let model_id = r.string()?;
        let dim = r.u32()? as usize;
        if dim != DIM {
            return Err(format!("embedding width {dim}, expected {DIM}"));
        }
        let n_names = r.u32()? as usize;
        let names = (0..n_names)
            .map(|_| r.string())
            .collect::<Result<Vec<_>, _>>()?;
        let n = usize::try_from(r.u64()?).map_err(|_| "face count overflows")?;
        let owner = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        if owner.iter().any(|&o| o as usize >= names.len()) {
            return Err("face refers to a missing identity".into());
        }
        let sides = if version >= 2 {
            (0..n).map(|_| r.f32()).collect::<Result<Vec<_>, _>>()?
        } else {
            vec![0.0; n]
        };
        let matrix = (0..n * DIM)
            .map(|_| r.f32())
            .collect::<Result<Vec<_>, _>>()?;
        if r.pos != body.len() {
            return Err("trailing bytes after the embeddings".into());
        }
        let norms = matrix.chunks_exact(DIM).map(|e| dot(e, e)).collect();
        Ok(Self {
            model_id,
            names,
            owner,
            matrix,
            norms,
            sides,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Loads a gallery file.
    pub fn load(path: &Path) -> Result<Self, GalleryError> {
        let bytes = fs::read(path).map_err(|e| GalleryError::io(path, e))?;
        Self::from_bytes(&bytes).map_err(|message| GalleryError::Format {
            path: path.display().to_string(),
            message,
        })
    }

    /// Saves atomically: written to a temporary file beside `path`, synced, renamed over
    /// it and the directory synced, so a reader never sees a half-written gallery and a
    /// crash at any point leaves the old gallery or the new one.
    pub fn save(&self, path: &Path) -> Result<(), GalleryError> {
        self.write_atomically(path)
            .map_err(|e| GalleryError::io(path, e))
    }

    fn write_atomically(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&self.to_bytes())?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename itself survives a crash only once the directory is on disk.
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// A gallery file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum GalleryError {
    /// The bytes are not a gallery of a format this build reads.
    #[error("gallery {path}: {message}")]
    Format { path: String, message: String },
    /// Reading or writing the file failed.
    #[error("gallery {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl GalleryError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        GalleryError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// `|e|² - 2 q·e`: a row's squared distance to `q` less `|q|²`. The one formula behind
/// every CPU score, so `nearest` and `nearest_of` agree bit for bit.
#[inline]
fn score(norm: f32, e: &[f32], q: &[f32]) -> f32 {
    norm - 2.0 * dot(q, e)
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler use full-width SIMD lanes.
    let mut acc = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += ca[k] * cb[k];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| "unexpected end of gallery file".to_string())?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "u32")?,
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().map_err(|_| "u64")?,
        ))
    }
    fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "f32")?,
        ))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "name is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random vector (tests only; real embeddings come from the model).
    fn vector(seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..DIM)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    fn brute(g: &Gallery, q: &[f32]) -> (String, f32) {
        (0..g.len())
            .map(|r| {
                let e = &g.matrix[r * DIM..(r + 1) * DIM];
                let d = e
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                (g.names[g.owner[r] as usize].clone(), d)
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("non-empty")
    }

    #[test]
    fn nearest_matches_brute_force_small_and_parallel() {
        for n in [5usize, 3 * PAR_ROWS + 17] {
            let mut g = Gallery::new("m");
            for i in 0..n {
                g.add(&format!("p{}", i % 97), &vector(i as u64));
            }
            let queries: Vec<Vec<f32>> = (0..7).map(|i| vector(1_000_000 + i)).collect();
            let refs: Vec<&[f32]> = queries.iter().map(|q| q.as_slice()).collect();
            for (got, q) in g.nearest(&refs).into_iter().zip(&queries) {
                let got = got.expect("non-empty gallery");
                let (name, d) = brute(&g, q);
                assert_eq!(got.name, name);
                assert!((got.distance - d).abs() < 1e-3, "{} vs {d}", got.distance);
            }
        }
    }

    #[test]
    fn nearest_of_a_shortlist_with_the_best_row_equals_nearest() {
        let mut g = Gallery::new("m");
        for i in 0..50u64 {
            g.add(&format!("p{}", i % 7), &vector(i));
        }
        // Row 40 again under another name: equal distances go to the first enrolled.
        let dup = vector(40);
        g.add("twin", &dup);
        for q in [vector(3), vector(999), dup.clone()] {
            let want = g.nearest(&[&q]).remove(0).expect("non-empty");
            let got = g.nearest_of(&q, (0..g.len()).rev()).expect("rows");
            assert_eq!(got, want);
        }
        assert_eq!(g.nearest_of(&dup, [50, 40]).expect("rows").name, "p5");
        assert_eq!(g.nearest_of(&dup, [g.len()]), None);
    }

    #[test]
    fn generation_changes_with_the_rows_and_survives_clones() {
        let mut g = Gallery::new("m");
        assert_eq!(g.generation(), 0);
        g.add("a", &vector(1));
        let first = g.generation();
        assert_ne!(first, 0);
        assert_eq!(g.clone().generation(), first);
        g.add("b", &vector(2));
        let second = g.generation();
        assert!(second > first);
        g.remove("nobody");
        assert_eq!(g.generation(), second);
        g.remove("a");
        assert!(g.generation() > second);
        let loaded = Gallery::from_bytes(&g.to_bytes()).expect("round trip");
        assert!(loaded.generation() > g.generation());
    }

    #[test]
    fn empty_gallery_matches_nothing() {
        let g = Gallery::new("m");
        assert_eq!(g.nearest(&[&vector(1)]), vec![None]);
    }

    #[test]
    fn save_load_round_trip_and_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.bin");
        let mut g = Gallery::new("model-x");
        g.add("alice", &vector(1));
        g.add("bob", &vector(2));
        g.add("alice", &vector(3));
        g.save(&path).expect("save");
        let back = Gallery::load(&path).expect("load");
        assert_eq!(back.model_id(), "model-x");
        assert_eq!(
            back.identities(),
            vec![
                IdentitySummary {
                    name: "alice".into(),
                    faces: 2
                },
                IdentitySummary {
                    name: "bob".into(),
                    faces: 1
                },
            ]
        );
        let mut back = back;
        assert_eq!(back.remove("alice"), 2);
        assert_eq!(back.remove("nobody"), 0);
        let m = back.nearest(&[&vector(3)]).remove(0).expect("bob left");
        assert_eq!(m.name, "bob");
    }

    #[test]
    fn corrupt_files_are_rejected_with_reasons() {
        let mut g = Gallery::new("m");
        g.add("a", &vector(1));
        let bytes = g.to_bytes();
        assert!(
            Gallery::from_bytes(b"hello")
                .unwrap_err()
                .contains("not a facerec gallery")
        );
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(
            Gallery::from_bytes(&flipped)
                .unwrap_err()
                .contains("checksum")
        );
        let mut future = bytes.clone();
        future[8] = 9;
        assert!(
            Gallery::from_bytes(&future)
                .unwrap_err()
                .contains("version 9")
        );
        assert!(Gallery::from_bytes(&bytes[..bytes.len() - 5]).is_err());
    }

    #[test]
    fn face_sizes_round_trip_and_version_1_files_load_without_them() {
        let mut g = Gallery::new("m");
        g.add_face("a", &vector(1), 120.0);
        g.add_face("b", &vector(2), 40.0);
        let back = Gallery::from_bytes(&g.to_bytes()).expect("round trip");
        let found = back.nearest(&[&vector(2)]);
        assert_eq!(
            found[0].as_ref().map(|m| (m.name.as_str(), m.side)),
            Some(("b", 40.0))
        );
        // The same gallery as version 1 wrote it: no sides, checksum over the rest.
        let mut body = Vec::new();
        put_str(&mut body, "m");
        body.extend_from_slice(&(DIM as u32).to_le_bytes());
        body.extend_from_slice(&2u32.to_le_bytes());
        put_str(&mut body, "a");
        put_str(&mut body, "b");
        body.extend_from_slice(&2u64.to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        for v in vector(1).into_iter().chain(vector(2)) {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let mut v1 = MAGIC.to_vec();
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(&body);
        v1.extend_from_slice(&Sha256::digest(&body));
        let old = Gallery::from_bytes(&v1).expect("version 1 loads");
        let found = old.nearest(&[&vector(1)]);
        assert_eq!(
            found[0].as_ref().map(|m| (m.name.as_str(), m.side)),
            Some(("a", 0.0))
        );
        assert_eq!(old.identities().len(), 2);
    }
}
