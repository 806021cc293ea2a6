//! A collection's unknown seen faces grouped into people (`facerec_contract::grouping`), as
//! a process holds them: brought up to date with the store on demand.
//!
//! Groups are not stored: they are worked out from the collection's unknown faces and the
//! pins a person's corrections left on them ([`FaceStore::pin_faces`]), so every process
//! shows the same groups. Faces recorded since the last update join in milliseconds; faces
//! named, forgotten or pinned since are taken out or moved, and only their components are
//! grouped again. A group's id is the smallest seen-face id in it: it stays while faces
//! join and changes only when the group itself is corrected.

use std::collections::{HashMap, HashSet};

use facerec_contract::grouping::{Face, Grouper, Params, Placement};

use super::{FaceStore, FaceStoreError, UnknownFace};

/// Unknown faces read from the store at a time.
const PAGE: usize = 2000;
/// Faces named in a group's listing to show it by.
const SHOWN: usize = 4;

/// A group: its id (its smallest seen id) and its faces' seen ids, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: i64,
    pub faces: Vec<i64>,
}

/// How the unknown faces held are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counts {
    pub grouped: u64,
    /// Like no one else yet.
    pub alone: u64,
    /// Under the quality floor.
    pub waiting: u64,
}

/// One collection's grouping, as of the store's state when it was last brought up to
/// date.
pub struct PeopleGroups {
    grouper: Grouper,
    /// Each face's seen id, by its place in the grouper, and the place of each face held.
    ids: Vec<i64>,
    place: HashMap<i64, usize>,
    /// Faces named here and not yet tagged by re-tagging: kept out meanwhile.
    named: HashSet<i64>,
    /// The newest unknown face read, and what the store said of the unknown faces up to
    /// it (count, id sum, corrections) when they were last compared.
    last_id: i64,
    count: u64,
    id_sum: i64,
    version: i64,
}

impl Default for PeopleGroups {
    fn default() -> Self {
        Self::new()
    }
}

impl PeopleGroups {
    pub fn new() -> Self {
        Self {
            grouper: Grouper::new(Params::DEFAULT),
            ids: Vec::new(),
            place: HashMap::new(),
            named: HashSet::new(),
            last_id: 0,
            count: 0,
            id_sum: 0,
            version: -1,
        }
    }

    fn add(&mut self, f: UnknownFace) {
        if self.place.contains_key(&f.id) {
            return;
        }
        self.place.insert(f.id, self.ids.len());
        self.ids.push(f.id);
        self.grouper.add(Face {
            image: f.request_id,
            index: f.face_index,
            embedding: f.embedding,
            side: f.side,
            quality: f.quality,
            pin: f.pin,
        });
    }

    /// Reads the faces recorded since, then compares the rest with the store and takes out,
    /// moves or brings back what changed.
    pub async fn sync(&mut self, store: &dyn FaceStore) -> Result<(), FaceStoreError> {
        loop {
            let page = store.unknown_faces(self.last_id, PAGE).await?;
            let full = page.len() == PAGE;
            for f in page {
                self.last_id = self.last_id.max(f.id);
                self.count += 1;
                self.id_sum += f.id;
                if !self.named.contains(&f.id) {
                    self.add(f);
                }
            }
            if !full {
                break;
            }
        }
        let summary = store.unknown_summary(self.last_id).await?;
        if (summary.count, summary.id_sum, summary.version)
            == (self.count, self.id_sum, self.version)
        {
            return Ok(());
        }
        let pins = store.unknown_pins(self.last_id).await?;
        let listed: HashMap<i64, Option<i64>> = pins.iter().copied().collect();
        self.named.retain(|id| listed.contains_key(id));
        let mut remove = Vec::new();
        for (&id, &at) in &self.place {
            if !listed.contains_key(&id) {
                remove.push(at);
            }
        }
        let mut moved = Vec::new();
        let mut back = Vec::new();
        for &(id, pin) in &pins {
            match self.place.get(&id) {
                Some(&at) if self.grouper.faces()[at].pin != pin => moved.push((at, pin)),
                Some(_) => {}
                None if !self.named.contains(&id) => back.push(id),
                None => {}
            }
        }
        for &at in &remove {
            self.place.remove(&self.ids[at]);
        }
        remove.sort_unstable();
        self.grouper.update(&remove, &moved);
        if !back.is_empty() {
            let records = store.seen_faces(&back).await?;
            let mut faces: Vec<UnknownFace> = records
                .into_iter()
                .filter(|r| r.identity.is_none())
                .map(|r| UnknownFace {
                    id: r.at.id,
                    request_id: r.at.request_id,
                    face_index: r.at.face_index,
                    embedding: r.embedding,
                    side: r.side,
                    quality: r.at.quality,
                    pin: listed.get(&r.at.id).copied().flatten(),
                })
                .collect();
            faces.sort_by_key(|f| f.id);
            for f in faces {
                self.add(f);
            }
        }
        self.count = pins.len() as u64;
        self.id_sum = pins.iter().map(|p| p.0).sum();
        self.version = summary.version;
        // Faces taken out stay in the grouper as places; start afresh when they outnumber
        // the faces held.
        if self.ids.len() > 4096 && self.ids.len() > 2 * self.place.len() {
            self.rebuild();
        }
        Ok(())
    }

    fn rebuild(&mut self) {
        let mut kept: Vec<(i64, Face)> = self
            .place
            .iter()
            .map(|(&id, &at)| (id, self.grouper.faces()[at].clone()))
            .collect();
        kept.sort_by_key(|k| k.0);
        self.ids = kept.iter().map(|k| k.0).collect();
        self.place = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();
        self.grouper =
            Grouper::with_faces(Params::DEFAULT, kept.into_iter().map(|k| k.1).collect());
    }

    /// Every group, largest first (then by id).
    pub fn groups(&self) -> Vec<Group> {
        let mut by: HashMap<u32, Vec<usize>> = HashMap::new();
        for &at in self.place.values() {
            if let Placement::Group(g) = self.grouper.placements()[at] {
                by.entry(g).or_default().push(at);
            }
        }
        let mut groups: Vec<Group> = by.into_values().map(|at| self.group_at(at)).collect();
        groups.sort_by_key(|g| (std::cmp::Reverse(g.faces.len()), g.id));
        groups
    }

    /// The group with id `id`, if there is one now.
    pub fn group(&self, id: i64) -> Option<Group> {
        self.group_of(id).filter(|g| g.id == id)
    }

    /// The group seen face `face` is in now.
    pub fn group_of(&self, face: i64) -> Option<Group> {
        let &at = self.place.get(&face)?;
        let here = self.grouper.placements()[at];
        here.group()?;
        let places: Vec<usize> = self
            .place
            .values()
            .copied()
            .filter(|&p| self.grouper.placements()[p] == here)
            .collect();
        Some(self.group_at(places))
    }

    fn group_at(&self, places: Vec<usize>) -> Group {
        let mut faces: Vec<i64> = places.into_iter().map(|at| self.ids[at]).collect();
        faces.sort_unstable();
        Group {
            id: faces[0],
            faces,
        }
    }

    /// A face held, by seen id: its image (request id), embedding, size and pin.
    pub fn face(&self, id: i64) -> Option<&Face> {
        self.place.get(&id).map(|&at| &self.grouper.faces()[at])
    }

    /// The faces to show a group by: the largest, most frontal ones.
    pub fn shown(&self, g: &Group) -> Vec<i64> {
        let score = |id: i64| {
            self.face(id).map_or(0.0, |f| {
                f.side * (1.0 - f.quality.map_or(0.0, |q| q.yaw.abs()))
            })
        };
        let mut faces = g.faces.clone();
        faces.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(a.cmp(&b)));
        faces.truncate(SHOWN);
        faces
    }

    /// How the faces held are placed.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for &at in self.place.values() {
            match self.grouper.placements()[at] {
                Placement::Group(_) => c.grouped += 1,
                Placement::Alone => c.alone += 1,
                Placement::Waiting => c.waiting += 1,
            }
        }
        c
    }

    /// Takes faces just enrolled under a name out at once, before re-tagging tags them
    /// (they stay out while the store still lists them as unknown).
    pub fn named(&mut self, faces: &[i64]) {
        let mut places = Vec::new();
        for id in faces {
            if let Some(at) = self.place.remove(id) {
                places.push(at);
            }
            self.named.insert(*id);
        }
        places.sort_unstable();
        self.grouper.update(&places, &[]);
    }
}
