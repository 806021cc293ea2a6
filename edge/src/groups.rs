//! People: the unknown faces of a collection grouped into people
//! (`facerec_contract::grouping`), and the routes that list the groups and correct them.
//!
//! Groups are not stored: each edge works them out from the collection's unknown seen
//! faces and the pins a person's corrections left on them (`FaceStore::pin_faces`), so
//! every edge of a fleet shows the same groups. An edge keeps a [`Grouper`] per collection
//! and brings it up to date before answering: faces recorded since join in milliseconds;
//! faces named, forgotten or pinned since are taken out or moved, and only their
//! components are grouped again. A group's id is the smallest seen-face id in it: it stays
//! while faces join and changes only when the group itself is corrected.
//!
//! Naming a group enrols its faces under the name; re-tagging then tags them (and every
//! other seen face they match), so they leave the unknown faces.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use facerec_contract::grouping::{Face, Grouper, Params, Placement};
use facerec_seams::FaceStore;
use facerec_seams::faces::{FaceStoreError, NewFace, Pin, UnknownFace};
use facerec_seams::gallery::GalleryChangeError;
use http_body_util::BodyExt;
use hyper::{HeaderMap, StatusCode, Uri};
use serde_json::json;

use crate::api::appearance_json;
use crate::collections::InCollection;
use crate::identities::{change_error, validate_name};
use crate::response::{ApiError, Kind, count_in, json_response, query_pairs};
use crate::routes::{RequestId, Segment, Shared};

/// Unknown faces read from the store at a time.
const PAGE: usize = 2000;
/// Groups answered without `limit`, and at most.
const DEFAULT_GROUPS: usize = 100;
const MAX_GROUPS: usize = 1000;
/// Faces named in a group's listing to show it by.
const SHOWN: usize = 4;

/// Every collection's grouping, held by this edge.
#[derive(Default)]
pub(crate) struct Groups {
    held: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Held>>>>,
}

impl Groups {
    /// The grouping of collection `name`, brought up to date with `store`.
    async fn of(
        &self,
        name: &str,
        store: &dyn FaceStore,
    ) -> Result<tokio::sync::OwnedMutexGuard<Held>, FaceStoreError> {
        let cell = self
            .held
            .lock()
            .await
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Held::new())))
            .clone();
        let mut held = cell.lock_owned().await;
        if let Err(e) = held.sync(store).await {
            // Half brought up to date: start again from the store next time.
            *held = Held::new();
            return Err(e);
        }
        Ok(held)
    }
}

/// One collection's grouping, as of the store's state when it was last brought up to
/// date.
struct Held {
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

/// A group as the routes see it: its id (smallest seen id) and its faces' places.
struct Group {
    id: i64,
    faces: Vec<usize>,
}

impl Held {
    fn new() -> Self {
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
    async fn sync(&mut self, store: &dyn FaceStore) -> Result<(), FaceStoreError> {
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
        self.place = self.ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        self.grouper = Grouper::with_faces(Params::DEFAULT, kept.into_iter().map(|k| k.1).collect());
    }

    /// Every group, largest first (then by id).
    fn groups(&self) -> Vec<Group> {
        let mut by: HashMap<u32, Group> = HashMap::new();
        for &at in self.place.values() {
            if let Placement::Group(g) = self.grouper.placements()[at] {
                let group = by.entry(g).or_insert(Group {
                    id: i64::MAX,
                    faces: Vec::new(),
                });
                group.id = group.id.min(self.ids[at]);
                group.faces.push(at);
            }
        }
        let mut groups: Vec<Group> = by.into_values().collect();
        for g in &mut groups {
            g.faces.sort_by_key(|&at| self.ids[at]);
        }
        groups.sort_by_key(|g| (std::cmp::Reverse(g.faces.len()), g.id));
        groups
    }

    fn group(&self, id: i64) -> Option<Group> {
        let &at = self.place.get(&id)?;
        let Placement::Group(g) = self.grouper.placements()[at] else {
            return None;
        };
        let mut faces: Vec<usize> = self
            .place
            .values()
            .copied()
            .filter(|&p| self.grouper.placements()[p] == Placement::Group(g))
            .collect();
        faces.sort_by_key(|&p| self.ids[p]);
        (self.ids[faces[0]] == id).then_some(Group { id, faces })
    }

    /// The group face `id` is in now, by its id.
    fn group_of(&self, id: i64) -> Option<i64> {
        let &at = self.place.get(&id)?;
        let Placement::Group(g) = self.grouper.placements()[at] else {
            return None;
        };
        self.place
            .iter()
            .filter(|&(_, &p)| self.grouper.placements()[p] == Placement::Group(g))
            .map(|(&i, _)| i)
            .min()
    }

    /// The faces to show a group by: the largest, most frontal ones.
    fn shown(&self, g: &Group) -> Vec<i64> {
        let mut faces = g.faces.clone();
        let score = |at: usize| {
            let f = &self.grouper.faces()[at];
            f.side * (1.0 - f.quality.map_or(0.0, |q| q.yaw.abs()))
        };
        faces.sort_by(|&a, &b| score(b).total_cmp(&score(a)).then(self.ids[a].cmp(&self.ids[b])));
        faces.into_iter().take(SHOWN).map(|at| self.ids[at]).collect()
    }

    fn counts(&self) -> serde_json::Value {
        let (mut grouped, mut alone, mut waiting) = (0, 0, 0);
        for &at in self.place.values() {
            match self.grouper.placements()[at] {
                Placement::Group(_) => grouped += 1,
                Placement::Alone => alone += 1,
                Placement::Waiting => waiting += 1,
            }
        }
        json!({"grouped": grouped, "alone": alone, "waiting": waiting})
    }
}

/// The collection's face store, or the 404 of a server that keeps none.
fn store_of(c: &InCollection) -> Result<Arc<dyn FaceStore>, ApiError> {
    c.gallery.store().cloned().ok_or_else(|| {
        ApiError::not_found("this server keeps no face store, so no faces are grouped")
    })
}

fn store_error(e: FaceStoreError) -> ApiError {
    change_error(GalleryChangeError::Store(e))
}

/// `GET /v1/groups[?limit=N]`: the groups of unknown faces, largest first: each one's id,
/// size and the faces to show it by; and how many unknown faces are grouped, alone or
/// waiting (under the quality floor).
pub(crate) async fn list(
    State(edge): Shared,
    c: InCollection,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let mut limit = DEFAULT_GROUPS;
    for (key, value) in query_pairs(&uri) {
        if key == "limit" {
            limit = count_in(key, value, MAX_GROUPS)?;
        }
    }
    let store = store_of(&c)?;
    let held = edge
        .groups
        .of(c.label(), store.as_ref())
        .await
        .map_err(store_error)?;
    let groups = held.groups();
    let items: Vec<serde_json::Value> = groups
        .iter()
        .take(limit)
        .map(|g| json!({"id": g.id, "faces": g.faces.len(), "shown": held.shown(g)}))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"groups": items, "total": groups.len(), "faces": held.counts()}),
    ))
}

/// `GET /v1/groups/{id}/faces`: a group's faces, by seen id.
pub(crate) async fn faces(
    State(edge): Shared,
    Segment(id): Segment,
    c: InCollection,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let id = group_id(&id)?;
    let store = store_of(&c)?;
    let held = edge
        .groups
        .of(c.label(), store.as_ref())
        .await
        .map_err(store_error)?;
    let group = held.group(id).ok_or_else(|| no_group(id))?;
    let ids: Vec<i64> = group.faces.iter().map(|&at| held.ids[at]).collect();
    drop(held);
    let mut records = store.seen_faces(&ids).await.map_err(store_error)?;
    records.sort_by_key(|r| r.at.id);
    let items: Vec<serde_json::Value> = records.iter().map(|r| appearance_json(&r.at)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": id, "faces": items}),
    ))
}

/// `POST /v1/groups/{id}/name` with `{"name": "…", "merge": false}`: enrols the group's
/// faces under the name; `409` when the name exists, unless `merge` is true (the faces
/// are added to it).
pub(crate) async fn name(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(id): Segment,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    edge.check_key(req.headers())?;
    let id = group_id(&id)?;
    let body = body(req).await?;
    let name = body
        .get("name")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::bad_request("naming takes {\"name\": \"<name>\"}"))?
        .to_string();
    validate_name(&name)?;
    let merge = body.get("merge").and_then(|v| v.as_bool()).unwrap_or(false);
    let store = store_of(&c)?;
    let mut held = edge
        .groups
        .of(c.label(), store.as_ref())
        .await
        .map_err(store_error)?;
    let group = held.group(id).ok_or_else(|| no_group(id))?;
    let exists = c.gallery.get().identities().iter().any(|i| i.name == name);
    if exists && !merge {
        return Err(ApiError::new(
            Kind::Conflict,
            format!(
                "an identity {name:?} exists: name the group with \"merge\": true to add its faces to it"
            ),
        ));
    }
    let faces: Vec<NewFace> = group
        .faces
        .iter()
        .map(|&at| {
            let f = &held.grouper.faces()[at];
            NewFace {
                embedding: f.embedding.clone(),
                side: f.side,
                source: Some(format!("seen face {}", held.ids[at])),
            }
        })
        .collect();
    let enrolled = c
        .gallery
        .enroll(edge.seams.store.as_ref(), &name, &faces)
        .await
        .map_err(change_error)?;
    let named: Vec<i64> = group.faces.iter().map(|&at| held.ids[at]).collect();
    for &face in &named {
        held.place.remove(&face);
        held.named.insert(face);
    }
    held.grouper.update(&group.faces, &[]);
    tracing::info!(
        request_id = rid,
        collection = c.label(),
        group = id,
        name,
        faces = faces.len(),
        change = enrolled.seq,
        "group named"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": id,
            "name": name,
            "added": faces.len(),
            "faces": enrolled.faces,
            "change": enrolled.seq,
        }),
    ))
}

/// `POST /v1/groups/{id}/merge` with `{"group": <other id>}`: the two groups become one
/// for good. `409` when they hold faces of one image.
pub(crate) async fn merge(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(id): Segment,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    edge.check_key(req.headers())?;
    let id = group_id(&id)?;
    let other = body(req)
        .await?
        .get("group")
        .and_then(|v| v.as_i64())
        .ok_or_else(|| ApiError::bad_request("merging takes {\"group\": <the other group's id>}"))?;
    if other == id {
        return Err(ApiError::bad_request("a group cannot be merged with itself"));
    }
    let store = store_of(&c)?;
    let held = edge
        .groups
        .of(c.label(), store.as_ref())
        .await
        .map_err(store_error)?;
    let a = held.group(id).ok_or_else(|| no_group(id))?;
    let b = held.group(other).ok_or_else(|| no_group(other))?;
    let images: HashSet<&str> = a
        .faces
        .iter()
        .map(|&at| held.grouper.faces()[at].image.as_str())
        .collect();
    if b
        .faces
        .iter()
        .any(|&at| images.contains(held.grouper.faces()[at].image.as_str()))
    {
        return Err(ApiError::new(
            Kind::Conflict,
            format!("groups {id} and {other} hold faces of one image: they are two people"),
        ));
    }
    let pins: Vec<(i64, Pin)> = a
        .faces
        .iter()
        .chain(&b.faces)
        .map(|&at| (held.ids[at], Pin::New(1)))
        .collect();
    let anchor = held.ids[a.faces[0]];
    let held = correct(store.as_ref(), held, &pins).await?;
    let now = held.group_of(anchor);
    tracing::info!(
        request_id = rid,
        collection = c.label(),
        group = id,
        other,
        faces = pins.len(),
        "groups merged"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": now, "faces": now.and_then(|g| held.group(g)).map_or(0, |g| g.faces.len())}),
    ))
}

/// `POST /v1/groups/{id}/split` with `{"faces": [<seen id>, …]}`: those faces leave the
/// group and are one group of their own (when more than one), and the two never join
/// again.
pub(crate) async fn split(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(id): Segment,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    edge.check_key(req.headers())?;
    let id = group_id(&id)?;
    let out = face_ids(&body(req).await?, "splitting")?;
    let store = store_of(&c)?;
    let held = edge
        .groups
        .of(c.label(), store.as_ref())
        .await
        .map_err(store_error)?;
    let group = held.group(id).ok_or_else(|| no_group(id))?;
    let ids: Vec<i64> = group.faces.iter().map(|&at| held.ids[at]).collect();
    check_members(&out, &ids, id)?;
    if out.len() == ids.len() {
        return Err(ApiError::bad_request(
            "a split leaves some faces in the group: name the faces that go, not all of them",
        ));
    }
    let pins: Vec<(i64, Pin)> = ids
        .iter()
        .map(|&f| (f, Pin::New(if out.contains(&f) { 2 } else { 1 })))
        .collect();
    let (stay, gone) = (
        *ids.iter().find(|f| !out.contains(f)).unwrap_or(&id),
        out[0],
    );
    let held = correct(store.as_ref(), held, &pins).await?;
    tracing::info!(
        request_id = rid,
        collection = c.label(),
        group = id,
        out = out.len(),
        "group split"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": held.group_of(stay), "split": held.group_of(gone)}),
    ))
}

/// `POST /v1/groups/{id}/reject` with `{"faces": [<seen id>, …]}`: those faces leave the
/// group and are never grouped again (they stay unknown). A group left with fewer than two
/// faces is no more.
pub(crate) async fn reject(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(id): Segment,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    edge.check_key(req.headers())?;
    let id = group_id(&id)?;
    let out = face_ids(&body(req).await?, "rejecting")?;
    let store = store_of(&c)?;
    let held = edge
        .groups
        .of(c.label(), store.as_ref())
        .await
        .map_err(store_error)?;
    let group = held.group(id).ok_or_else(|| no_group(id))?;
    let ids: Vec<i64> = group.faces.iter().map(|&at| held.ids[at]).collect();
    check_members(&out, &ids, id)?;
    let pins: Vec<(i64, Pin)> = out.iter().map(|&f| (f, Pin::Reject)).collect();
    let stay = ids.iter().find(|f| !out.contains(f)).copied();
    let held = correct(store.as_ref(), held, &pins).await?;
    tracing::info!(
        request_id = rid,
        collection = c.label(),
        group = id,
        rejected = out.len(),
        "faces rejected from a group"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"id": stay.and_then(|f| held.group_of(f)), "rejected": out.len()}),
    ))
}

/// Stores a correction and brings the grouping up to date with it.
async fn correct(
    store: &dyn FaceStore,
    mut held: tokio::sync::OwnedMutexGuard<Held>,
    pins: &[(i64, Pin)],
) -> Result<tokio::sync::OwnedMutexGuard<Held>, ApiError> {
    store.pin_faces(pins).await.map_err(store_error)?;
    if let Err(e) = held.sync(store).await {
        *held = Held::new();
        return Err(store_error(e));
    }
    Ok(held)
}

fn group_id(id: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request("a group's id is a number (`id` of GET /v1/groups)"))
}

fn no_group(id: i64) -> ApiError {
    ApiError::not_found(format!(
        "no group {id}: it was named, merged, split or emptied since (GET /v1/groups lists them)"
    ))
}

/// A correction's JSON body (at most 1 MiB).
async fn body(req: Request) -> Result<serde_json::Value, ApiError> {
    let bytes = http_body_util::Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|_| ApiError::bad_request("a correction is a JSON body under 1 MiB"))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("not JSON: {e}")))
}

/// `"faces"` of a body: one or more seen-face ids, each once.
fn face_ids(body: &serde_json::Value, what: &str) -> Result<Vec<i64>, ApiError> {
    let list = body
        .get("faces")
        .and_then(|v| v.as_array())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("{what} takes {{\"faces\": [<seen face id>, …]}}"))
        })?;
    let mut ids = Vec::with_capacity(list.len());
    for v in list {
        let id = v
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("a seen face's id is a number"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

/// Refuses faces that are not in the group.
fn check_members(faces: &[i64], group: &[i64], id: i64) -> Result<(), ApiError> {
    match faces.iter().find(|f| !group.contains(f)) {
        Some(f) => Err(ApiError::not_found(format!(
            "face {f} is not in group {id} (GET /v1/groups/{id}/faces lists its faces)"
        ))),
        None => Ok(()),
    }
}
