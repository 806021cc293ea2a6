//! Grouping faces into people: average-linkage agglomerative clustering of descriptors
//! under a cannot-link rule, the method behind `facerec cluster` (how it was chosen, and its
//! parameters: `models/grouping.md`).
//!
//! - **A quality floor**: small or sharply turned faces wait ([`Placement::Waiting`])
//!   instead of pulling unrelated people together.
//! - **Near pairs**: every pair of faces of different images nearer than [`Params::reach`],
//!   found by an all-pairs pass in blocks of matrix products, each distance then taken by
//!   [`distance`].
//! - **Components**: faces joined by chains of near pairs. A group never spans two (farther
//!   pairs count as `reach`, past the cut), so each is grouped on its own.
//! - **Average linkage with a cut**: in a component, the two groups with the smallest mean
//!   distance over all pairs of their faces merge while that mean is under [`Params::link`].
//! - **Cannot-link**: two faces of one image are never in one group.
//! - **Deterministic**: faces are grouped in the order of their image, index and descriptor,
//!   and ties between equally near pairs go to the earliest faces, so the groups do not
//!   depend on the order the faces came in.
//! - **Incremental** ([`Grouper`]): a new face is compared with every face kept and only its
//!   component is grouped again: the outcome equals a full grouping of the same faces.
//! - **Corrections** ([`Face::pin`]): faces a person put together (one pin) are one group
//!   from the start, and faces of two pins never share a group; faces without a pin still
//!   join either by the same rule as any other.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

use rayon::prelude::*;

use crate::report::FaceQuality;

/// A face to group.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The image it was found in: faces of one image are never in one group.
    pub image: &'a str,
    /// Its place among the image's faces.
    pub index: u32,
    pub embedding: &'a [f32],
    /// The shorter side of its detector box, in source pixels (`FaceBox::side`).
    pub side: f32,
    /// Its pose and sharpness, when measured; a face without is judged by size alone.
    pub quality: Option<FaceQuality>,
}

/// The method's parameters; [`Params::DEFAULT`] is the measured choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Two groups merge while the mean distance of their faces' pairs is under this.
    pub link: f32,
    /// Distances at or past this count as this; faces this far apart are never compared
    /// one by one. At least `link`.
    pub reach: f32,
    /// Faces whose box is smaller wait.
    pub min_side: f32,
    /// Faces turned further (`FaceQuality::yaw`, 0 frontal, 1 in profile) wait.
    pub max_yaw: f32,
    /// Faces less sharp (`FaceQuality::sharpness`) wait.
    pub min_sharpness: f32,
    /// Groups of fewer faces are not groups: their faces are left alone.
    pub min_faces: usize,
}

impl Params {
    pub const DEFAULT: Params = Params {
        link: 0.55,
        reach: 0.6,
        min_side: 64.0,
        max_yaw: 0.6,
        min_sharpness: 0.0,
        min_faces: 2,
    };

    /// Whether a face is good enough to group.
    pub fn admits(&self, m: &Member) -> bool {
        // NaN sides (unknown) fail the comparison and wait.
        m.side >= self.min_side
            && m.quality
                .is_none_or(|q| q.yaw.abs() <= self.max_yaw && q.sharpness >= self.min_sharpness)
    }
}

impl Default for Params {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where a face ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// In the group with this id.
    Group(u32),
    /// Good enough to group, but like no one else (or too few others).
    Alone,
    /// Under the quality floor.
    Waiting,
}

impl Placement {
    pub fn group(self) -> Option<u32> {
        match self {
            Placement::Group(g) => Some(g),
            _ => None,
        }
    }
}

/// The outcome: one placement per member, in the members' order.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    pub placements: Vec<Placement>,
    /// How many groups.
    pub groups: usize,
    /// Pairs of faces nearer than `reach` (the work of the merging).
    pub pairs: usize,
}

/// Groups `members` (every embedding of one length).
pub fn group(members: &[Member], params: &Params) -> Grouping {
    let faces = members
        .iter()
        .map(|m| Face {
            image: m.image.to_string(),
            index: m.index,
            embedding: m.embedding.to_vec(),
            side: m.side,
            quality: m.quality,
            pin: None,
        })
        .collect();
    let grouper = Grouper::with_faces(*params, faces);
    // Ids: the canonical position of a group's first face.
    let mut position = vec![0u32; members.len()];
    for (k, i) in canonical_order(members, params).into_iter().enumerate() {
        position[i] = k as u32;
    }
    let placements: Vec<Placement> = grouper
        .placements()
        .iter()
        .map(|p| match p {
            Placement::Group(f) => Placement::Group(position[*f as usize]),
            other => *other,
        })
        .collect();
    let mut ids: Vec<u32> = placements.iter().filter_map(|p| p.group()).collect();
    ids.sort_unstable();
    ids.dedup();
    Grouping {
        placements,
        groups: ids.len(),
        pairs: grouper.pairs(),
    }
}

/// The canonical order of two faces: image, index, then descriptor.
fn canonical(x: &Member, y: &Member) -> Ordering {
    x.image
        .cmp(y.image)
        .then(x.index.cmp(&y.index))
        .then_with(|| {
            x.embedding
                .iter()
                .zip(y.embedding)
                .map(|(p, q)| p.total_cmp(q))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
        })
}

/// A face a [`Grouper`] keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    pub image: String,
    pub index: u32,
    pub embedding: Vec<f32>,
    pub side: f32,
    pub quality: Option<FaceQuality>,
    /// A person's correction: faces with one pin are always one group (even when far
    /// apart), faces with two different pins never are.
    pub pin: Option<i64>,
}

impl Face {
    pub fn member(&self) -> Member<'_> {
        Member {
            image: &self.image,
            index: self.index,
            embedding: &self.embedding,
            side: self.side,
            quality: self.quality,
        }
    }
}

/// Grouping kept up to date as faces arrive, equal at every step to a full [`group`] of
/// the faces so far.
///
/// Groups never merge across faces farther apart than `reach` (their mean distance would be
/// `reach`), so the grouping is made of the groupings of the *components*: the sets of faces
/// joined by chains of pairs nearer than `reach`. A new face is compared with every face
/// kept; only the component it joins is grouped again, its pairs already known.
#[derive(Debug, Default)]
pub struct Grouper {
    params: Params,
    faces: Vec<Face>,
    placements: Vec<Placement>,
    /// The admitted faces' descriptors, one after another, and which face each row is.
    rows: Vec<f32>,
    coarse: Vec<Code>,
    row_face: Vec<u32>,
    row_image: Vec<u32>,
    images: HashMap<String, u32>,
    /// Each row's pairs nearer than `reach`: (row, distance).
    near: Vec<Vec<(u32, f32)>>,
    /// Each row's component: a union-find forest, and the rows of each root.
    parent: Vec<u32>,
    members: HashMap<u32, Vec<u32>>,
    /// Each face's row (`NO_ROW`: under the floor), each row's pin, the rows of each pin,
    /// and the rows of faces taken out ([`Grouper::update`]).
    face_row: Vec<u32>,
    row_pin: Vec<Option<i64>>,
    pinned: HashMap<i64, Vec<u32>>,
    dead: Vec<bool>,
    removed: Vec<bool>,
}

/// A face without a row: under the quality floor.
const NO_ROW: u32 = u32::MAX;

impl Grouper {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            ..Self::default()
        }
    }

    /// A grouper holding `faces`, grouped in one pass (a full regroup).
    pub fn with_faces(params: Params, faces: Vec<Face>) -> Self {
        let mut g = Self::new(params);
        let n = faces.len();
        g.placements = vec![Placement::Waiting; n];
        g.face_row = vec![NO_ROW; n];
        g.removed = vec![false; n];
        let mut dim = None;
        for (id, f) in faces.iter().enumerate() {
            if !params.admits(&f.member()) {
                continue;
            }
            assert_eq!(*dim.get_or_insert(f.embedding.len()), f.embedding.len());
            let next = g.images.len() as u32;
            let image = *g.images.entry(f.image.clone()).or_insert(next);
            let row = g.row_face.len() as u32;
            g.face_row[id] = row;
            g.rows.extend_from_slice(&f.embedding);
            g.coarse.push(Code::of(&f.embedding));
            g.row_face.push(id as u32);
            g.row_image.push(image);
            g.row_pin.push(f.pin);
            if let Some(p) = f.pin {
                g.pinned.entry(p).or_default().push(row);
            }
        }
        g.faces = faces;
        let rows = g.row_face.len();
        g.dead = vec![false; rows];
        g.parent = (0..rows as u32).collect();
        g.members = (0..rows as u32).map(|r| (r, vec![r])).collect();
        g.near = vec![Vec::new(); rows];
        let reach = params.reach.max(params.link);
        for (i, j, d) in near_pairs(&g.rows, dim.unwrap_or(0), &g.row_image, reach) {
            g.near[i as usize].push((j, d));
            g.near[j as usize].push((i, d));
            g.union(i, j);
        }
        let pinned: Vec<Vec<u32>> = g.pinned.values().cloned().collect();
        for rows in pinned {
            for w in rows.windows(2) {
                g.union(w[0], w[1]);
            }
        }
        let roots: Vec<u32> = g.members.keys().copied().collect();
        for root in roots {
            g.regroup(root);
        }
        g
    }

    /// Pairs of faces nearer than `reach`.
    pub fn pairs(&self) -> usize {
        self.near.iter().map(Vec::len).sum::<usize>() / 2
    }

    pub fn faces(&self) -> &[Face] {
        &self.faces
    }

    /// Each face's placement, in the order the faces were added; a group is named by the
    /// number of its first face (in the canonical order).
    pub fn placements(&self) -> &[Placement] {
        &self.placements
    }

    /// Adds a face and groups its component again; answers the faces whose placement
    /// changed (the new one included).
    pub fn add(&mut self, face: Face) -> Vec<usize> {
        let id = self.faces.len();
        let admitted = self.params.admits(&face.member());
        self.faces.push(face);
        self.placements.push(Placement::Waiting);
        self.face_row.push(NO_ROW);
        self.removed.push(false);
        if !admitted {
            return vec![id];
        }
        let embedding = self.faces[id].embedding.clone();
        let dim = embedding.len();
        if let Some(&first) = self.row_face.first() {
            let want = self.faces[first as usize].embedding.len();
            assert_eq!(want, dim, "embeddings of one length");
        }
        let next = self.images.len() as u32;
        let image = *self
            .images
            .entry(self.faces[id].image.clone())
            .or_insert(next);
        let reach = self.params.reach.max(self.params.link);
        // A first pass over the 8-bit codes (a quarter of the memory to read), the exact
        // distance for the candidates it leaves.
        let query = Code::of(&embedding);
        let (rows, coarse, row_image, dead) =
            (&self.rows, &self.coarse, &self.row_image, &self.dead);
        let scan = |r: usize| {
            if dead[r] || row_image[r] == image || !coarse[r].may_be_within(&query, reach) {
                return None;
            }
            let d = distance(&rows[r * dim..(r + 1) * dim], &embedding);
            (d < reach).then_some((r as u32, d))
        };
        let n = self.row_face.len();
        let near: Vec<(u32, f32)> = if n >= 4096 {
            (0..n).into_par_iter().filter_map(scan).collect()
        } else {
            (0..n).filter_map(scan).collect()
        };
        let row = self.row_face.len() as u32;
        self.rows.extend_from_slice(&embedding);
        self.coarse.push(query);
        self.row_face.push(id as u32);
        self.row_image.push(image);
        self.face_row[id] = row;
        self.dead.push(false);
        let pin = self.faces[id].pin;
        self.row_pin.push(pin);
        self.parent.push(row);
        self.members.insert(row, vec![row]);
        for &(r, d) in &near {
            self.near[r as usize].push((row, d));
            self.union(row, r);
        }
        self.near.push(near);
        if let Some(p) = pin {
            let rows = self.pinned.entry(p).or_default();
            rows.push(row);
            let first = rows[0];
            self.union(row, first);
        }
        let root = self.find(row);
        self.regroup(root)
    }

    /// Whether face `face` was taken out ([`Grouper::update`]).
    pub fn is_removed(&self, face: usize) -> bool {
        self.removed[face]
    }

    /// Takes faces out (they stay `Waiting` for good) and changes faces' pins, then groups
    /// the components they touched again; answers the faces whose placement changed. The
    /// outcome equals a full grouping of the faces left with their pins.
    pub fn update(&mut self, remove: &[usize], pins: &[(usize, Option<i64>)]) -> Vec<usize> {
        let mut touched: Vec<u32> = Vec::new();
        let mut changed = Vec::new();
        for &(face, pin) in pins {
            if self.removed[face] || self.faces[face].pin == pin {
                continue;
            }
            self.faces[face].pin = pin;
            let row = self.face_row[face];
            if row == NO_ROW {
                continue;
            }
            if let Some(old) = self.row_pin[row as usize].take()
                && let Some(rows) = self.pinned.get_mut(&old)
            {
                rows.retain(|&r| r != row);
                if rows.is_empty() {
                    self.pinned.remove(&old);
                }
            }
            if let Some(p) = pin {
                self.row_pin[row as usize] = Some(p);
                let rows = self.pinned.entry(p).or_default();
                touched.extend(rows.first().copied());
                rows.push(row);
            }
            touched.push(row);
        }
        for &face in remove {
            if std::mem::replace(&mut self.removed[face], true) {
                continue;
            }
            if self.placements[face] != Placement::Waiting {
                self.placements[face] = Placement::Waiting;
                changed.push(face);
            }
            let row = self.face_row[face];
            if row == NO_ROW {
                continue;
            }
            touched.push(row);
            self.dead[row as usize] = true;
            if let Some(old) = self.row_pin[row as usize].take()
                && let Some(rows) = self.pinned.get_mut(&old)
            {
                rows.retain(|&r| r != row);
                if rows.is_empty() {
                    self.pinned.remove(&old);
                }
            }
            for (o, _) in std::mem::take(&mut self.near[row as usize]) {
                self.near[o as usize].retain(|&(x, _)| x != row);
            }
        }
        // Every row of the components touched, which fall apart and join again.
        let mut rows: Vec<u32> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in touched {
            let root = self.find(r);
            if seen.insert(root)
                && let Some(m) = self.members.remove(&root)
            {
                rows.extend(m);
            }
        }
        for &r in &rows {
            self.parent[r as usize] = r;
        }
        for &r in &rows {
            if !self.dead[r as usize] {
                self.members.insert(r, vec![r]);
            }
        }
        for &r in &rows {
            if self.dead[r as usize] {
                continue;
            }
            let near: Vec<u32> = self.near[r as usize].iter().map(|&(o, _)| o).collect();
            for o in near {
                self.union(r, o);
            }
            if let Some(p) = self.row_pin[r as usize]
                && let Some(&first) = self.pinned.get(&p).and_then(|v| v.first())
            {
                self.union(r, first);
            }
        }
        let live: Vec<u32> = rows
            .into_iter()
            .filter(|&r| !self.dead[r as usize])
            .collect();
        let mut roots: Vec<u32> = live.into_iter().map(|r| self.find(r)).collect();
        roots.sort_unstable();
        roots.dedup();
        for root in roots {
            changed.extend(self.regroup(root));
        }
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    fn find(&mut self, mut r: u32) -> u32 {
        while self.parent[r as usize] != r {
            let p = self.parent[r as usize];
            self.parent[r as usize] = self.parent[p as usize];
            r = p;
        }
        r
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return;
        }
        let (sa, sb) = (self.members[&ra].len(), self.members[&rb].len());
        let (keep, gone) = if sa >= sb { (ra, rb) } else { (rb, ra) };
        let moved = self.members.remove(&gone).unwrap_or_default();
        self.parent[gone as usize] = keep;
        self.members.entry(keep).or_default().extend(moved);
    }

    /// Groups one component again; answers the faces whose placement changed.
    fn regroup(&mut self, root: u32) -> Vec<usize> {
        let mut rows = self.members[&root].clone();
        rows.sort_by(|&a, &b| {
            canonical(
                &self.faces[self.row_face[a as usize] as usize].member(),
                &self.faces[self.row_face[b as usize] as usize].member(),
            )
        });
        let local: HashMap<u32, u32> = rows
            .iter()
            .enumerate()
            .map(|(k, &r)| (r, k as u32))
            .collect();
        let image_of: Vec<u32> = rows.iter().map(|&r| self.row_image[r as usize]).collect();
        let pins: Vec<Option<i64>> = rows.iter().map(|&r| self.row_pin[r as usize]).collect();
        let mut pairs: Vec<(u32, u32, f32)> = Vec::new();
        for (k, &r) in rows.iter().enumerate() {
            for &(o, d) in &self.near[r as usize] {
                let j = local[&o];
                if (k as u32) < j {
                    pairs.push((k as u32, j, d));
                }
            }
        }
        pairs.sort_by_key(|&(i, j, _)| (i, j));
        let roots = average_linkage(&image_of, &pins, pairs, &self.params);
        let mut size: HashMap<u32, usize> = HashMap::new();
        for &g in &roots {
            *size.entry(g).or_default() += 1;
        }
        let mut changed = Vec::new();
        for (k, &r) in rows.iter().enumerate() {
            let g = roots[k];
            let face = self.row_face[r as usize] as usize;
            let now = if size[&g] >= self.params.min_faces.max(2) {
                Placement::Group(self.row_face[rows[g as usize] as usize])
            } else {
                Placement::Alone
            };
            if self.placements[face] != now {
                self.placements[face] = now;
                changed.push(face);
            }
        }
        changed
    }
}

/// The admitted members' positions, sorted by image, index, then descriptor.
fn canonical_order(members: &[Member], params: &Params) -> Vec<usize> {
    let mut order: Vec<usize> = (0..members.len())
        .filter(|&i| params.admits(&members[i]))
        .collect();
    order.sort_by(|&a, &b| canonical(&members[a], &members[b]));
    order
}

/// Rows per block of the all-pairs pass: a block pair is one matrix product.
const BLOCK: usize = 512;

/// Every pair `(i, j)`, `i < j`, of faces of different images nearer than `reach`, with
/// its distance, in the order of `i` then `j`.
fn near_pairs(rows: &[f32], dim: usize, image_of: &[u32], reach: f32) -> Vec<(u32, u32, f32)> {
    let m = image_of.len();
    if m < 2 || dim == 0 {
        return Vec::new();
    }
    let norms: Vec<f32> = rows
        .chunks_exact(dim)
        .map(|r| r.iter().map(|x| x * x).sum())
        .collect();
    let blocks = m.div_ceil(BLOCK);
    let tiles: Vec<(usize, usize)> = (0..blocks)
        .flat_map(|a| (a..blocks).map(move |b| (a, b)))
        .collect();
    let reach2 = reach * reach;
    let found: Vec<Vec<(u32, u32, f32)>> = tiles
        .par_iter()
        .map_init(
            || vec![0f32; BLOCK * BLOCK],
            |dots, &(a, b)| {
                let (r0, r1) = (a * BLOCK, ((a + 1) * BLOCK).min(m));
                let (c0, c1) = (b * BLOCK, ((b + 1) * BLOCK).min(m));
                let (h, w) = (r1 - r0, c1 - c0);
                gram(
                    &rows[r0 * dim..r1 * dim],
                    &rows[c0 * dim..c1 * dim],
                    dim,
                    &mut dots[..h * w],
                );
                let mut out = Vec::new();
                for i in r0..r1 {
                    let from = if a == b { i + 1 } else { c0 };
                    for j in from..c1 {
                        if image_of[i] == image_of[j] {
                            continue;
                        }
                        // The product finds the candidates; each distance is then taken
                        // the one way every path takes it.
                        let d2 = norms[i] + norms[j] - 2.0 * dots[(i - r0) * w + (j - c0)];
                        if d2 < reach2 + SLACK * (1.0 + norms[i] + norms[j]) {
                            let d = distance(
                                &rows[i * dim..(i + 1) * dim],
                                &rows[j * dim..(j + 1) * dim],
                            );
                            if d < reach {
                                out.push((i as u32, j as u32, d));
                            }
                        }
                    }
                }
                out
            },
        )
        .collect();
    // Tiles come in row-block order, pairs within a row block by row then column.
    let mut pairs: Vec<(u32, u32, f32)> = found.into_iter().flatten().collect();
    pairs.sort_by_key(|&(i, j, _)| (i, j));
    pairs
}

/// How much the matrix product's squared distances may be under the true ones, relative
/// to the squared norms (rounding of `|a|² + |b|² - 2a·b`, far above f32's).
const SLACK: f32 = 1e-3;

/// The euclidean distance of two descriptors, summed in one fixed order: the grouping and
/// the incremental joining see bit-identical distances.
pub fn distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            let d = ca[k] - cb[k];
            acc[k] += d * d;
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| (x - y) * (x - y))
        .sum();
    (acc.iter().sum::<f32>() + tail).sqrt()
}

/// `out[i * w + j] = a_i · b_j` for the rows of `a` (h x dim) and `b` (w x dim).
fn gram(a: &[f32], b: &[f32], dim: usize, out: &mut [f32]) {
    let (h, w) = (a.len() / dim, b.len() / dim);
    debug_assert_eq!(out.len(), h * w);
    // SAFETY: `a` is h x dim and `b` is w x dim, row-major, read as A (h x dim) and as
    // Bᵀ (dim x w: row stride 1, column stride dim); `out` is h x w, row-major; the
    // slices' lengths are checked above and by the chunking of the caller.
    unsafe {
        matrixmultiply::sgemm(
            h,
            dim,
            w,
            1.0,
            a.as_ptr(),
            dim as isize,
            1,
            b.as_ptr(),
            1,
            dim as isize,
            0.0,
            out.as_mut_ptr(),
            w as isize,
            1,
        );
    }
}

/// A descriptor in 8 bits a component (`scale * code`), with the norm of what that loses:
/// the distance of two codes is within the sum of their losses of the true one.
#[derive(Debug, Clone)]
struct Code {
    code: [i8; CODE_DIM],
    scale: f32,
    /// `|code|²`.
    norm2: i32,
    loss: f32,
}

/// Components coded; a descriptor longer than this is coded by its first components only
/// (the bound still holds: the rest counts in the loss).
const CODE_DIM: usize = 128;

impl Code {
    fn of(v: &[f32]) -> Code {
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        let mut code = [0i8; CODE_DIM];
        let mut loss2 = 0f64;
        for (k, &x) in v.iter().enumerate() {
            let q = if k < CODE_DIM {
                let q = (x / scale).round().clamp(-127.0, 127.0) as i8;
                code[k] = q;
                f32::from(q)
            } else {
                0.0
            };
            loss2 += f64::from(x - scale * q).powi(2);
        }
        Code {
            norm2: code.iter().map(|&q| i32::from(q) * i32::from(q)).sum(),
            code,
            scale,
            // Rounded up, so the bound holds whatever the float error of this sum.
            loss: (loss2.sqrt() * (1.0 + 1e-6) + 1e-7) as f32,
        }
    }

    /// False only when the two descriptors are surely `reach` or more apart.
    fn may_be_within(&self, other: &Code, reach: f32) -> bool {
        let dot = dot_codes(&self.code, &other.code);
        let (a, b) = (f64::from(self.scale), f64::from(other.scale));
        let coded2 = a * a * f64::from(self.norm2) + b * b * f64::from(other.norm2)
            - 2.0 * a * b * f64::from(dot);
        let bound = f64::from(reach) + f64::from(self.loss) + f64::from(other.loss);
        let norms = a * a * f64::from(self.norm2) + b * b * f64::from(other.norm2);
        coded2 < bound * bound + f64::from(SLACK) * (1.0 + norms)
    }
}

#[inline(always)]
fn dot_codes_portable(a: &[i8; CODE_DIM], b: &[i8; CODE_DIM]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// The same loop compiled for AVX2 (four times the lanes of the baseline's SSE2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_codes_avx2(a: &[i8; CODE_DIM], b: &[i8; CODE_DIM]) -> i32 {
    dot_codes_portable(a, b)
}

fn dot_codes(a: &[i8; CODE_DIM], b: &[i8; CODE_DIM]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above; the check is cached by std).
        return unsafe { dot_codes_avx2(a, b) };
    }
    dot_codes_portable(a, b)
}

/// The sum of the distances of the pairs compared between two groups, and how many.
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    sum: f64,
    count: u64,
    /// The two groups hold faces of one image.
    blocked: bool,
}

/// A candidate merge: mean distance, then the two groups' ids (the earliest first).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    mean: f64,
    a: u32,
    b: u32,
    /// The groups' versions when the candidate was made: a merge since makes it stale.
    va: u32,
    vb: u32,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        self.mean
            .total_cmp(&other.mean)
            .then(self.a.cmp(&other.a))
            .then(self.b.cmp(&other.b))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

struct Groups {
    size: Vec<u64>,
    version: Vec<u32>,
    /// Sorted image numbers of each group's faces.
    images: Vec<Vec<u32>>,
    links: Vec<HashMap<u32, Link>>,
    /// Each group's pin, if a face of it has one.
    pin: Vec<Option<i64>>,
    /// Each face's group while merging (a union-find forest).
    parent: Vec<u32>,
    reach: f64,
}

impl Groups {
    fn mean(&self, a: u32, b: u32, l: &Link) -> f64 {
        let all = self.size[a as usize] * self.size[b as usize];
        (l.sum + (all - l.count) as f64 * self.reach) / all as f64
    }

    fn candidate(&self, a: u32, b: u32, l: &Link) -> Candidate {
        let (a, b) = (a.min(b), a.max(b));
        Candidate {
            mean: self.mean(a, b, l),
            a,
            b,
            va: self.version[a as usize],
            vb: self.version[b as usize],
        }
    }

    /// Whether `a` and `b` may never be one group: they hold faces of one image, or faces
    /// of two pins.
    fn cannot_link(&self, a: u32, b: u32) -> bool {
        let pins = (self.pin[a as usize], self.pin[b as usize]);
        matches!(pins, (Some(p), Some(q)) if p != q) || self.shares_an_image(a, b)
    }

    fn shares_an_image(&self, a: u32, b: u32) -> bool {
        let (x, y) = (&self.images[a as usize], &self.images[b as usize]);
        let (small, large) = if x.len() <= y.len() { (x, y) } else { (y, x) };
        small.iter().any(|i| large.binary_search(i).is_ok())
    }

    fn find(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let p = self.parent[i as usize];
            self.parent[i as usize] = self.parent[p as usize];
            i = p;
        }
        i
    }

    /// Merges `b` into `a` (`a < b`), answering the new candidates of `a`.
    fn merge(&mut self, a: u32, b: u32) -> Vec<Candidate> {
        let (ai, bi) = (a as usize, b as usize);
        let from_b = std::mem::take(&mut self.links[bi]);
        let mut into = std::mem::take(&mut self.links[ai]);
        into.remove(&b);
        for (c, l) in from_b {
            if c == a {
                continue;
            }
            let e = into.entry(c).or_default();
            e.sum += l.sum;
            e.count += l.count;
            e.blocked |= l.blocked;
        }
        let images_b = std::mem::take(&mut self.images[bi]);
        let mut images = std::mem::take(&mut self.images[ai]);
        images.extend(images_b);
        images.sort_unstable();
        images.dedup();
        self.images[ai] = images;
        self.size[ai] += self.size[bi];
        self.size[bi] = 0;
        self.pin[ai] = self.pin[ai].or(self.pin[bi]);
        self.version[ai] += 1;
        self.version[bi] += 1;
        self.parent[bi] = a;
        // The neighbours see one group where there were two.
        for (&c, l) in &into {
            let theirs = &mut self.links[c as usize];
            theirs.remove(&b);
            theirs.insert(a, *l);
        }
        let fresh = into
            .iter()
            .filter(|(_, l)| !l.blocked)
            .map(|(&c, l)| self.candidate(a, c, l))
            .collect();
        self.links[ai] = into;
        fresh
    }
}

/// Each face's group (the id of its first face) after merging.
fn average_linkage(
    image_of: &[u32],
    pins: &[Option<i64>],
    pairs: Vec<(u32, u32, f32)>,
    params: &Params,
) -> Vec<u32> {
    let m = image_of.len();
    let mut g = Groups {
        size: vec![1; m],
        version: vec![0; m],
        images: image_of.iter().map(|&i| vec![i]).collect(),
        links: vec![HashMap::new(); m],
        pin: pins.to_vec(),
        parent: (0..m as u32).collect(),
        reach: f64::from(params.reach.max(params.link)),
    };
    for (i, j, d) in pairs {
        let l = Link {
            sum: f64::from(d),
            count: 1,
            blocked: false,
        };
        g.links[i as usize].insert(j, l);
        g.links[j as usize].insert(i, l);
    }
    // Faces of one pin are one group before anything else merges (into the earliest).
    let mut first_of: HashMap<i64, u32> = HashMap::new();
    for (i, pin) in pins.iter().enumerate() {
        if let Some(p) = pin {
            match first_of.get(p) {
                Some(&a) => {
                    g.merge(a, i as u32);
                }
                None => {
                    first_of.insert(*p, i as u32);
                }
            }
        }
    }
    // Only pairs under the cut are candidates: a pair at or past it can only take part in
    // a merge as part of a larger group, whose candidate is made when that group is.
    let link = f64::from(params.link);
    let mut first = Vec::new();
    for a in 0..m as u32 {
        if g.parent[a as usize] != a {
            continue;
        }
        for (&b, l) in &g.links[a as usize] {
            if a < b {
                let c = g.candidate(a, b, l);
                if c.mean < link {
                    first.push(Reverse(c));
                }
            }
        }
    }
    let mut heap = BinaryHeap::from(first);
    while let Some(Reverse(c)) = heap.pop() {
        if c.va != g.version[c.a as usize] || c.vb != g.version[c.b as usize] {
            continue;
        }
        if g.cannot_link(c.a, c.b) {
            for (x, y) in [(c.a, c.b), (c.b, c.a)] {
                if let Some(l) = g.links[x as usize].get_mut(&y) {
                    l.blocked = true;
                }
            }
            continue;
        }
        heap.extend(
            g.merge(c.a, c.b)
                .into_iter()
                .filter(|f| f.mean < link)
                .map(Reverse),
        );
    }
    (0..m as u32).map(|i| g.find(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A unit-ish vector around one of `people` centres, with noise (deterministic).
    fn face(person: u64, shot: u64, noise: f32) -> Vec<f32> {
        let mut s = person.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let centre: Vec<f32> = (0..128).map(|_| next()).collect();
        let mut t = shot.wrapping_mul(0xA24B_AED4_963E_E407) ^ person;
        let mut jitter = move || {
            t ^= t << 13;
            t ^= t >> 7;
            t ^= t << 17;
            (t >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let v: Vec<f32> = centre.iter().map(|c| c + noise * jitter()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    fn members<'a>(faces: &'a [(String, u32, Vec<f32>)]) -> Vec<Member<'a>> {
        faces
            .iter()
            .map(|(image, index, e)| Member {
                image,
                index: *index,
                embedding: e,
                side: 100.0,
                quality: None,
            })
            .collect()
    }

    /// Each of 5 people in 6 images of their own.
    fn people() -> Vec<(String, u32, Vec<f32>)> {
        (0..5u64)
            .flat_map(|p| (0..6u64).map(move |s| (format!("p{p}-s{s}.jpg"), 0, face(p, s, 0.06))))
            .collect()
    }

    fn partition(g: &Grouping, faces: &[(String, u32, Vec<f32>)]) -> Vec<Vec<(String, u32)>> {
        let mut by: HashMap<Placement, Vec<(String, u32)>> = HashMap::new();
        for (p, f) in g.placements.iter().zip(faces) {
            by.entry(*p).or_default().push((f.0.clone(), f.1));
        }
        let mut parts: Vec<Vec<(String, u32)>> = by
            .into_iter()
            .flat_map(|(p, mut v)| {
                v.sort();
                match p {
                    Placement::Group(_) => vec![v],
                    _ => v.into_iter().map(|x| vec![x]).collect(),
                }
            })
            .collect();
        parts.sort();
        parts
    }

    #[test]
    fn each_person_is_one_group() {
        let faces = people();
        let g = group(&members(&faces), &Params::DEFAULT);
        assert_eq!(g.groups, 5);
        for p in 0..5 {
            let ids: Vec<_> = g.placements[p * 6..(p + 1) * 6].to_vec();
            assert!(
                ids.iter().all(|&x| x == ids[0] && x.group().is_some()),
                "{ids:?}"
            );
        }
    }

    #[test]
    fn the_same_faces_in_any_order_give_the_same_groups_and_ids() {
        let faces = people();
        let first = group(&members(&faces), &Params::DEFAULT);
        let mut shuffled: Vec<usize> = (0..faces.len()).collect();
        for round in 0..5u64 {
            // A deterministic shuffle per round.
            for i in (1..shuffled.len()).rev() {
                let j = ((i as u64 * 2_654_435_761 + round * 97) % (i as u64 + 1)) as usize;
                shuffled.swap(i, j);
            }
            let again: Vec<(String, u32, Vec<f32>)> =
                shuffled.iter().map(|&i| faces[i].clone()).collect();
            let g = group(&members(&again), &Params::DEFAULT);
            assert_eq!(partition(&g, &again), partition(&first, &faces));
            for (k, &i) in shuffled.iter().enumerate() {
                assert_eq!(g.placements[k], first.placements[i]);
            }
        }
    }

    #[test]
    fn two_faces_of_one_image_are_never_in_one_group() {
        // One person's six faces, three pairs of them in one image each: three groups at
        // most can hold them, never one.
        let mut faces = people();
        for s in 0..6u64 {
            faces[s as usize].0 = format!("together-{}.jpg", s / 2);
            faces[s as usize].1 = (s % 2) as u32;
        }
        let g = group(&members(&faces), &Params::DEFAULT);
        for a in 0..faces.len() {
            for b in a + 1..faces.len() {
                if faces[a].0 == faces[b].0 {
                    let (x, y) = (g.placements[a], g.placements[b]);
                    assert!(x.group().is_none() || x != y, "{a} {b}: {x:?}");
                }
            }
        }
        // The person's faces still group, in two or three groups of one face per image.
        let mut ids: Vec<u32> = g.placements[..6].iter().filter_map(|p| p.group()).collect();
        assert_eq!(ids.len(), 6, "{:?}", &g.placements[..6]);
        ids.sort_unstable();
        ids.dedup();
        assert!((2..=3).contains(&ids.len()), "{:?}", &g.placements[..6]);
    }

    #[test]
    fn faces_under_the_floor_wait_and_strangers_are_alone() {
        let mut faces = people();
        faces.push(("stranger.jpg".into(), 0, face(99, 0, 0.06)));
        let mut ms = members(&faces);
        ms[0].side = 30.0;
        ms[1].quality = Some(FaceQuality {
            yaw: 0.9,
            roll: 0.0,
            sharpness: 300.0,
        });
        let g = group(&ms, &Params::DEFAULT);
        assert_eq!(g.placements[0], Placement::Waiting);
        assert_eq!(g.placements[1], Placement::Waiting);
        assert_eq!(*g.placements.last().expect("a face"), Placement::Alone);
        assert_eq!(g.groups, 5);
    }

    #[test]
    fn average_linkage_does_not_chain_through_a_face_between_two_people() {
        // Two tight people and one face halfway: single linkage would join all three.
        let a: Vec<f32> = (0..128).map(|k| if k == 0 { 1.0 } else { 0.0 }).collect();
        let b: Vec<f32> = (0..128)
            .map(|k| {
                if k == 0 {
                    1.0
                } else if k == 1 {
                    0.7
                } else {
                    0.0
                }
            })
            .collect();
        let mid: Vec<f32> = (0..128)
            .map(|k| {
                if k == 0 {
                    1.0
                } else if k == 1 {
                    0.35
                } else {
                    0.0
                }
            })
            .collect();
        let mut faces = Vec::new();
        for s in 0..4 {
            let jitter = |v: &Vec<f32>| -> Vec<f32> {
                v.iter()
                    .enumerate()
                    .map(|(k, x)| if k == 2 + s { x + 0.05 } else { *x })
                    .collect()
            };
            faces.push((format!("a{s}"), 0, jitter(&a)));
            faces.push((format!("b{s}"), 0, jitter(&b)));
        }
        faces.push(("mid".into(), 0, mid));
        let g = group(&members(&faces), &Params::DEFAULT);
        let (ga, gb) = (g.placements[0], g.placements[1]);
        assert!(ga.group().is_some() && gb.group().is_some());
        assert_ne!(ga, gb);
    }

    /// The partition of a grouper's faces, as sets of (image, index); alone and waiting
    /// faces each a set of their own, marked.
    fn grouper_partition(g: &Grouper) -> Vec<Vec<(String, u32)>> {
        let faces: Vec<(String, u32, Vec<f32>)> = g
            .faces()
            .iter()
            .map(|f| (f.image.clone(), f.index, f.embedding.clone()))
            .collect();
        let full = Grouping {
            placements: g.placements().to_vec(),
            groups: 0,
            pairs: 0,
        };
        partition(&full, &faces)
    }

    #[test]
    fn faces_added_one_at_a_time_group_as_all_at_once() {
        // People in images of their own and in pairs, with strangers, in a mixed order.
        let mut faces = people();
        for p in 0..5u64 {
            faces.push((format!("pair-{p}.jpg"), 0, face(p, 50, 0.06)));
            faces.push((format!("pair-{p}.jpg"), 1, face((p + 1) % 5, 51, 0.06)));
            faces.push((format!("stranger-{p}.jpg"), 0, face(100 + p, 0, 0.06)));
        }
        let n = faces.len();
        let order: Vec<usize> = (0..n).map(|i| (i * 17 + 5) % n).collect();
        let mut grouper = Grouper::new(Params::DEFAULT);
        let mut so_far = Vec::new();
        for &i in &order {
            let (image, index, e) = faces[i].clone();
            grouper.add(Face {
                image: image.clone(),
                index,
                embedding: e.clone(),
                side: 100.0,
                quality: None,
                pin: None,
            });
            so_far.push((image, index, e));
            let full = group(&members(&so_far), &Params::DEFAULT);
            assert_eq!(grouper_partition(&grouper), partition(&full, &so_far));
            for (p, q) in grouper.placements().iter().zip(&full.placements) {
                assert_eq!(p.group().is_some(), q.group().is_some());
            }
        }
        // Grouping all of them in one pass gives the same.
        let again = Grouper::with_faces(Params::DEFAULT, grouper.faces().to_vec());
        assert_eq!(again.placements(), grouper.placements());
        // A face under the floor waits.
        let changed = grouper.add(Face {
            image: "tiny.jpg".into(),
            index: 0,
            embedding: face(0, 60, 0.06),
            side: 20.0,
            quality: None,
            pin: None,
        });
        assert_eq!(changed, vec![n]);
        assert_eq!(grouper.placements()[n], Placement::Waiting);
    }

    fn faces_of(list: &[(String, u32, Vec<f32>)]) -> Vec<Face> {
        list.iter()
            .map(|(image, index, e)| Face {
                image: image.clone(),
                index: *index,
                embedding: e.clone(),
                side: 100.0,
                quality: None,
                pin: None,
            })
            .collect()
    }

    /// The groups of a grouper's faces left, as sorted sets of (image, index).
    fn groups_left(g: &Grouper) -> Vec<Vec<(String, u32)>> {
        let mut by: HashMap<u32, Vec<(String, u32)>> = HashMap::new();
        for (i, (f, p)) in g.faces().iter().zip(g.placements()).enumerate() {
            if let Placement::Group(id) = p {
                assert!(!g.is_removed(i));
                by.entry(*id).or_default().push((f.image.clone(), f.index));
            }
        }
        let mut parts: Vec<_> = by
            .into_values()
            .map(|mut v| {
                v.sort();
                v
            })
            .collect();
        parts.sort();
        parts
    }

    /// A full grouping of the faces a grouper has left, with their pins.
    fn regrouped(g: &Grouper) -> Vec<Vec<(String, u32)>> {
        let left: Vec<Face> = (0..g.faces().len())
            .filter(|&i| !g.is_removed(i))
            .map(|i| g.faces()[i].clone())
            .collect();
        groups_left(&Grouper::with_faces(Params::DEFAULT, left))
    }

    #[test]
    fn pinned_faces_are_one_group_and_two_pins_never_are() {
        let mut faces = faces_of(&people());
        // Person 0 split in two by a person: shots 0-2 one pin, 3-5 another.
        for (s, f) in faces[..6].iter_mut().enumerate() {
            f.pin = Some(if s < 3 { 7 } else { 8 });
        }
        // Persons 1 and 2 (far apart) put together.
        for f in &mut faces[6..18] {
            f.pin = Some(9);
        }
        let g = Grouper::with_faces(Params::DEFAULT, faces);
        let p = g.placements().to_vec();
        assert!(p[..3].iter().all(|&x| x == p[0] && x.group().is_some()));
        assert!(p[3..6].iter().all(|&x| x == p[3] && x.group().is_some()));
        assert_ne!(p[0], p[3]);
        assert!(p[6..18].iter().all(|&x| x == p[6] && x.group().is_some()));
        // A new shot of person 0 joins one of its two halves, never both.
        let mut g = g;
        g.add(faces_of(&[("p0-new.jpg".into(), 0, face(0, 77, 0.06))]).remove(0));
        let q = g.placements();
        assert!(q[30].group().is_some());
        assert!((q[30] == q[0]) != (q[30] == q[3]), "{q:?}");
        assert_eq!(groups_left(&g), regrouped(&g));
    }

    #[test]
    fn taking_faces_out_and_pinning_them_regroups_as_a_full_pass() {
        let mut list = people();
        for p in 0..5u64 {
            list.push((format!("pair-{p}.jpg"), 0, face(p, 50, 0.06)));
            list.push((format!("pair-{p}.jpg"), 1, face((p + 1) % 5, 51, 0.06)));
        }
        let mut g = Grouper::with_faces(Params::DEFAULT, faces_of(&list));
        type Step = (Vec<usize>, Vec<(usize, Option<i64>)>);
        let steps: Vec<Step> = vec![
            // A person split in two, another's faces taken out one by one.
            (
                vec![],
                vec![(0, Some(1)), (1, Some(1)), (2, Some(2)), (3, Some(2))],
            ),
            (vec![6], vec![]),
            (vec![7, 8], vec![]),
            // Two people merged; one face of the merge taken out; a pin lifted.
            (vec![], (12..24).map(|i| (i, Some(3))).collect()),
            (vec![13], vec![(2, None)]),
            // A pin onto a face taken out already does nothing.
            (vec![], vec![(6, Some(1))]),
            (vec![9, 10, 11], vec![(31, Some(3))]),
        ];
        for (remove, pins) in steps {
            let before: Vec<Placement> = g.placements().to_vec();
            let changed = g.update(&remove, &pins);
            assert_eq!(groups_left(&g), regrouped(&g), "after {remove:?} {pins:?}");
            for (i, (a, b)) in before.iter().zip(g.placements()).enumerate() {
                if a != b {
                    assert!(changed.contains(&i), "{i} changed unreported");
                }
            }
            for &r in &remove {
                assert_eq!(g.placements()[r], Placement::Waiting);
            }
        }
        // Person 0's two pins stay apart; persons 2 and 3 stay one group.
        let p = g.placements();
        assert_ne!(p[0], p[3]);
        assert_eq!(p[12], p[23]);
        // Faces still arrive and join as in a full pass.
        g.add(faces_of(&[("late.jpg".into(), 0, face(4, 90, 0.06))]).remove(0));
        assert_eq!(groups_left(&g), regrouped(&g));
    }

    #[test]
    fn the_coded_first_pass_never_misses_a_near_pair() {
        // Pairs at every distance around the reach: whenever the true distance is under it,
        // the codes say "maybe".
        let mut checked = 0;
        for p in 0..40u64 {
            for s in 0..40u64 {
                let (a, b) = (face(p, s, 0.3), face(p, s + 1000, 0.3 + 0.02 * s as f32));
                let d = distance(&a, &b);
                if d < 0.6 {
                    checked += 1;
                    assert!(Code::of(&a).may_be_within(&Code::of(&b), 0.6), "{d}");
                }
                let scaled: Vec<f32> = b.iter().map(|x| x * 0.3).collect();
                if distance(&a, &scaled) < 0.6 {
                    assert!(Code::of(&a).may_be_within(&Code::of(&scaled), 0.6));
                }
            }
        }
        assert!(checked > 100, "{checked}");
        // Far apart: no.
        assert!(!Code::of(&face(1, 0, 0.0)).may_be_within(&Code::of(&face(2, 0, 0.0)), 0.6));
    }

    #[test]
    fn no_faces_and_one_face() {
        assert_eq!(group(&[], &Params::DEFAULT).groups, 0);
        let faces = vec![("x".to_string(), 0, face(1, 1, 0.0))];
        let g = group(&members(&faces), &Params::DEFAULT);
        assert_eq!(g.placements, vec![Placement::Alone]);
    }

    #[test]
    fn many_faces_across_blocks_match_a_direct_computation() {
        // More faces than one block: the block pass finds every near pair.
        let faces: Vec<(String, u32, Vec<f32>)> = (0..60u64)
            .flat_map(|p| (0..20u64).map(move |s| (format!("{p}-{s}"), 0, face(p, s, 0.06))))
            .collect();
        let ms = members(&faces);
        let order = canonical_order(&ms, &Params::DEFAULT);
        let rows: Vec<f32> = order.iter().flat_map(|&i| faces[i].2.clone()).collect();
        let image_of: Vec<u32> = (0..order.len() as u32).collect();
        let pairs = near_pairs(&rows, 128, &image_of, 0.6);
        let mut direct = Vec::new();
        for i in 0..order.len() {
            for j in i + 1..order.len() {
                let d = faces[order[i]]
                    .2
                    .iter()
                    .zip(&faces[order[j]].2)
                    .map(|(x, y)| (x - y) * (x - y))
                    .sum::<f32>()
                    .sqrt();
                if d < 0.6 {
                    direct.push((i as u32, j as u32, d));
                }
            }
        }
        assert_eq!(pairs.len(), direct.len());
        for (p, q) in pairs.iter().zip(&direct) {
            assert_eq!((p.0, p.1), (q.0, q.1));
            assert!((p.2 - q.2).abs() < 1e-4);
        }
        assert_eq!(group(&ms, &Params::DEFAULT).groups, 60);
    }
}
