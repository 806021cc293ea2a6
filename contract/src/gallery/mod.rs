//! The gallery: enrolled identities, each with one or more face embeddings, persisted in a
//! small versioned binary file that many workers can load.
//!
//! Search is exact: every query is compared with every enrolled face. Embeddings live in
//! row-major chunks of 16,384 rows with precomputed squared norms, so a query costs one
//! dot product per face (`|q-e|² = |q|² + |e|² - 2 q·e`), written so the compiler
//! vectorises it; queries are processed in blocks that share each row load, and large
//! galleries are split across threads with rayon, a chunk per task.

mod error;
mod file;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

pub use error::{FormatError, GalleryError};

/// Embedding width of the recognition model.
pub const DIM: usize = 128;
/// Rows per chunk: the unit of copy-on-write and of a rayon task in a search.
const CHUNK: usize = 16_384;
/// Below twice this many rows a search stays on the calling thread.
const PAR_ROWS: usize = CHUNK;
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
///
/// Rows live in chunks of [`CHUNK`] rows behind `Arc`s: a clone shares them, and a change
/// to a clone copies only the chunks it touches (an enrolment: at most the last one), so a
/// gallery in use by a search (an `Arc<Gallery>` snapshot) can take a change in
/// milliseconds whatever its size. Every chunk but the last is full: row `r` is row
/// `r % CHUNK` of chunk `r / CHUNK`.
#[derive(Debug, Clone, Default)]
pub struct Gallery {
    /// Identifier of the model that made the embeddings (sha256 of its ONNX file); a
    /// gallery is only comparable with embeddings of the same model.
    model_id: String,
    names: Vec<Arc<str>>,
    /// Each name's position in `names`.
    index: HashMap<Arc<str>, u32>,
    chunks: Vec<Arc<Chunk>>,
    /// Names this content: a fresh process-wide value on every change (see `generation`).
    generation: u64,
}

/// Up to [`CHUNK`] consecutive rows.
#[derive(Debug, Clone, Default)]
struct Chunk {
    /// Row `i` belongs to `names[owner[i]]`.
    owner: Vec<u32>,
    /// Row-major, `DIM` per row.
    matrix: Vec<f32>,
    norms: Vec<f32>,
    /// Each row's face size in its source image (`FaceBox::side`), 0 when unknown.
    sides: Vec<f32>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.owner.len()
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.matrix[i * DIM..(i + 1) * DIM]
    }

    fn push(&mut self, owner: u32, embedding: &[f32], norm: f32, side: f32) {
        self.owner.push(owner);
        self.matrix.extend_from_slice(embedding);
        self.norms.push(norm);
        self.sides.push(side);
    }
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
    /// `rename`, `from_bytes`) and kept by `clone`, so two galleries with the same
    /// generation have the same rows (0: an empty gallery never changed). Device mirrors of
    /// the matrix (`matcher::Matcher`) are keyed by it; later changes have larger values.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of enrolled faces.
    pub fn len(&self) -> usize {
        match self.chunks.last() {
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
            None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Identities with their face counts, sorted by name.
    pub fn identities(&self) -> Vec<IdentitySummary> {
        let mut counts = vec![0usize; self.names.len()];
        for chunk in &self.chunks {
            for &o in &chunk.owner {
                counts[o as usize] += 1;
            }
        }
        let sorted: BTreeMap<&str, usize> = self
            .names
            .iter()
            .zip(counts)
            .filter(|(_, c)| *c > 0)
            .map(|(n, c)| (&**n, c))
            .collect();
        sorted
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
        let idx = match self.index.get(name) {
            Some(&i) => i,
            None => {
                let name: Arc<str> = name.into();
                self.names.push(name.clone());
                let i = (self.names.len() - 1) as u32;
                self.index.insert(name, i);
                i
            }
        };
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Arc::default());
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        Arc::make_mut(last).push(idx, embedding, dot(embedding, embedding), side);
        self.changed();
    }

    /// Removes an identity and all its faces; returns how many faces went.
    pub fn remove(&mut self, name: &str) -> usize {
        let Some(&idx) = self.index.get(name) else {
            return 0;
        };
        let before = self.len();
        let mut kept = Gallery::new(std::mem::take(&mut self.model_id));
        kept.names = std::mem::take(&mut self.names);
        kept.names.remove(idx as usize);
        kept.index = index_of(&kept.names);
        for chunk in &self.chunks {
            for i in 0..chunk.len() {
                let o = chunk.owner[i];
                if o == idx {
                    continue;
                }
                let o = if o > idx { o - 1 } else { o };
                kept.push_row(o, chunk.row(i), chunk.norms[i], chunk.sides[i]);
            }
        }
        let removed = before - kept.len();
        *self = Gallery {
            generation: self.generation,
            ..kept
        };
        self.changed();
        removed
    }

    /// Appends a row to the last chunk (a new one when it is full), keeping the invariant.
    fn push_row(&mut self, owner: u32, embedding: &[f32], norm: f32, side: f32) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Arc::default());
        }
        let last = self.chunks.last_mut().expect("a chunk was just ensured");
        Arc::make_mut(last).push(owner, embedding, norm, side);
    }

    /// Gives the faces of `from` the name `to`, keeping their rows (merged into `to`'s
    /// when it exists). Nothing happens for an unknown `from`.
    pub fn rename(&mut self, from: &str, to: &str) {
        let Some(&idx) = self.index.get(from) else {
            return;
        };
        if from == to {
            return;
        }
        match self.index.get(to).copied() {
            None => {
                let to: Arc<str> = to.into();
                self.names[idx as usize] = to.clone();
                self.index.remove(from);
                self.index.insert(to, idx);
            }
            Some(into) => {
                for chunk in &mut self.chunks {
                    for o in &mut Arc::make_mut(chunk).owner {
                        if *o == idx {
                            *o = into;
                        }
                        if *o > idx {
                            *o -= 1;
                        }
                    }
                }
                self.names.remove(idx as usize);
                self.index = index_of(&self.names);
            }
        }
        self.changed();
    }

    /// Every face in row order: its identity, embedding and size (`FaceBox::side`).
    pub fn faces(&self) -> impl Iterator<Item = (&str, &[f32], f32)> + '_ {
        self.chunks.iter().flat_map(move |c| {
            (0..c.len()).map(move |i| (&*self.names[c.owner[i] as usize], c.row(i), c.sides[i]))
        })
    }

    /// The enrolled matrix (row-major, `len() x DIM`) and each row's squared norm, e.g.
    /// to upload to a device (`gpu::GpuGallery`): borrowed when the gallery is one chunk,
    /// else gathered.
    pub fn rows(&self) -> (Cow<'_, [f32]>, Cow<'_, [f32]>) {
        match self.chunks.as_slice() {
            [] => (Cow::Borrowed(&[][..]), Cow::Borrowed(&[][..])),
            [one] => (
                Cow::Borrowed(&one.matrix[..]),
                Cow::Borrowed(&one.norms[..]),
            ),
            many => (
                Cow::Owned(many.iter().flat_map(|c| c.matrix.iter().copied()).collect()),
                Cow::Owned(many.iter().flat_map(|c| c.norms.iter().copied()).collect()),
            ),
        }
    }

    /// The chunk and the index in it of row `r` (which must exist).
    fn at(&self, r: usize) -> (&Chunk, usize) {
        (&self.chunks[r / CHUNK], r % CHUNK)
    }

    /// The identity a row of `rows()` belongs to.
    pub fn row_name(&self, row: usize) -> Option<&str> {
        let chunk = self.chunks.get(row / CHUNK)?;
        let owner = *chunk.owner.get(row % CHUNK)? as usize;
        self.names.get(owner).map(|n| &**n)
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
        let (c, i) = self.at(r);
        score(c.norms[i], c.row(i), q)
    }

    fn found(&self, q: &[f32], score: f32, row: usize) -> Match {
        let d2 = (score + dot(q, q)).max(0.0);
        let (c, i) = self.at(row);
        Match {
            name: self.names[c.owner[i] as usize].to_string(),
            distance: d2.sqrt(),
            side: c.sides[i],
        }
    }

    /// For up to `QUERY_BLOCK` queries: (min over rows of |e|² - 2 q·e, argmin row).
    fn nearest_block(&self, block: &[&[f32]]) -> Vec<(f32, usize)> {
        let scan = |chunk: usize| -> Vec<(f32, usize)> {
            let c = &self.chunks[chunk];
            let base = chunk * CHUNK;
            let mut best = vec![(f32::INFINITY, 0usize); block.len()];
            for i in 0..c.len() {
                let e = c.row(i);
                for (b, q) in best.iter_mut().zip(block) {
                    let s = score(c.norms[i], e, q);
                    if s < b.0 {
                        *b = (s, base + i);
                    }
                }
            }
            best
        };
        let earlier = |a: Vec<(f32, usize)>, b: Vec<(f32, usize)>| -> Vec<(f32, usize)> {
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
        };
        let none = || vec![(f32::INFINITY, 0usize); block.len()];
        if self.len() < 2 * PAR_ROWS {
            return (0..self.chunks.len()).map(scan).fold(none(), earlier);
        }
        (0..self.chunks.len())
            .into_par_iter()
            .map(scan)
            .reduce(none, earlier)
    }
}

/// Each name's position.
fn index_of(names: &[Arc<str>]) -> HashMap<Arc<str>, u32> {
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i as u32))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random vector (tests only; real embeddings come from the model).
    pub(super) fn vector(seed: u64) -> Vec<f32> {
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
        g.faces()
            .map(|(name, e, _)| {
                let d = e
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                (name.to_string(), d)
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
    fn a_rename_keeps_the_rows_and_merges_into_an_existing_name() {
        let mut g = Gallery::new("m");
        g.add("a", &vector(1));
        g.add("b", &vector(2));
        g.add("a", &vector(3));
        g.add("c", &vector(4));
        let q = vector(3);
        g.rename("a", "z");
        assert_eq!(g.nearest(&[&q])[0].as_ref().expect("match").name, "z");
        let names: Vec<_> = g.faces().map(|f| f.0.to_string()).collect();
        assert_eq!(names, ["z", "b", "z", "c"]);
        g.rename("z", "c");
        let names: Vec<_> = g.faces().map(|f| f.0.to_string()).collect();
        assert_eq!(names, ["c", "b", "c", "c"]);
        assert_eq!(g.identities().len(), 2);
        g.add("b", &vector(5));
        assert_eq!(g.remove("c"), 3);
        assert_eq!(g.faces().map(|f| f.0).collect::<Vec<_>>(), ["b", "b"]);
        g.add("d", &vector(6));
        assert_eq!(
            g.nearest(&[&vector(6)])[0].as_ref().expect("match").name,
            "d"
        );
    }

    /// A change to a gallery whose snapshot is held elsewhere copies only the chunk it
    /// touches; the snapshot keeps its rows; search across chunks is unchanged by a
    /// removal that shifts rows between them.
    #[test]
    fn a_change_copies_only_the_chunk_it_touches() {
        let mut g = Gallery::new("m");
        for i in 0..(2 * CHUNK + 10) as u64 {
            g.add(&format!("p{}", i % 5), &vector(i));
        }
        let snapshot = g.clone();
        g.add("new", &vector(999_999));
        assert!(Arc::ptr_eq(&g.chunks[0], &snapshot.chunks[0]));
        assert!(Arc::ptr_eq(&g.chunks[1], &snapshot.chunks[1]));
        assert!(!Arc::ptr_eq(&g.chunks[2], &snapshot.chunks[2]));
        assert_eq!((snapshot.len(), g.len()), (2 * CHUNK + 10, 2 * CHUNK + 11));
        assert_eq!(g.row_name(2 * CHUNK + 10), Some("new"));
        assert_eq!(snapshot.row_name(2 * CHUNK + 10), None);
        let q = vector(2 * CHUNK as u64 + 3);
        assert_eq!(g.remove("p0"), (2 * CHUNK + 10).div_ceil(5));
        assert!(
            g.chunks[..g.chunks.len() - 1]
                .iter()
                .all(|c| c.len() == CHUNK)
        );
        let got = g.nearest(&[&q]).remove(0).expect("non-empty");
        let (name, d) = brute(&g, &q);
        assert_eq!(got.name, name);
        assert!((got.distance - d).abs() < 1e-3);
        let (matrix, norms) = g.rows();
        assert_eq!((matrix.len(), norms.len()), (g.len() * DIM, g.len()));
        let last = g.len() - 1;
        assert_eq!(&matrix[last * DIM..], g.faces().last().expect("rows").1);
    }

    #[test]
    fn empty_gallery_matches_nothing() {
        let g = Gallery::new("m");
        assert_eq!(g.nearest(&[&vector(1)]), vec![None]);
    }
}
