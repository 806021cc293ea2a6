//! The people routes: a collection's unknown faces grouped into people
//! (`facerec_seams::faces::groups`), listed, named, merged, split and rejected.
//!
//! An edge holds each collection's grouping and brings it up to date with the store before
//! answering; corrections are stored as pins every edge applies. Naming a group enrols its
//! faces under the name; re-tagging then tags them (and every other seen face they match),
//! so they leave the unknown faces.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use facerec_seams::FaceStore;
use facerec_seams::faces::groups::{Group, PeopleGroups};
use facerec_seams::faces::{FaceStoreError, NewFace, Pin};
use facerec_seams::gallery::GalleryChangeError;
use http_body_util::BodyExt;
use hyper::{HeaderMap, StatusCode, Uri};
use serde_json::json;

use crate::api::appearance_json;
use crate::collections::InCollection;
use crate::edge::Edge;
use crate::identities::{change_error, validate_name};
use crate::response::{ApiError, Kind, count_in, json_response, query_pairs};
use crate::routes::{RequestId, Segment, Shared};

/// Groups answered without `limit`, and at most.
const DEFAULT_GROUPS: usize = 100;
const MAX_GROUPS: usize = 1000;

/// Every collection's grouping, held by this edge.
#[derive(Default)]
pub(crate) struct Groups {
    held: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<PeopleGroups>>>>,
}

impl Groups {
    /// The grouping of collection `name`, brought up to date with `store`.
    async fn of(
        &self,
        name: &str,
        store: &dyn FaceStore,
    ) -> Result<tokio::sync::OwnedMutexGuard<PeopleGroups>, FaceStoreError> {
        let cell = self
            .held
            .lock()
            .await
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(PeopleGroups::new())))
            .clone();
        let mut held = cell.lock_owned().await;
        if let Err(e) = held.sync(store).await {
            // Half brought up to date: start again from the store next time.
            *held = PeopleGroups::new();
            return Err(e);
        }
        Ok(held)
    }
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
    let store = c.store()?;
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
    let (store, held, group) = grouping(&edge, &c, id).await?;
    let ids = group.faces;
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
    let (_, mut held, group) = grouping(&edge, &c, id).await?;
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
        .filter_map(|&id| {
            held.face(id).map(|f| NewFace {
                embedding: f.embedding.clone(),
                side: f.side,
                source: Some(format!("seen face {id}")),
            })
        })
        .collect();
    let enrolled = c
        .gallery
        .enroll(edge.seams.store.as_ref(), &name, &faces)
        .await
        .map_err(change_error)?;
    held.named(&group.faces);
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
        .ok_or_else(|| {
            ApiError::bad_request("merging takes {\"group\": <the other group's id>}")
        })?;
    if other == id {
        return Err(ApiError::bad_request(
            "a group cannot be merged with itself",
        ));
    }
    let (store, held, a) = grouping(&edge, &c, id).await?;
    let b = held.group(other).ok_or_else(|| no_group(other))?;
    let images: HashSet<&str> = a
        .faces
        .iter()
        .filter_map(|&f| held.face(f).map(|f| f.image.as_str()))
        .collect();
    if b.faces
        .iter()
        .filter_map(|&f| held.face(f))
        .any(|f| images.contains(f.image.as_str()))
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
        .map(|&f| (f, Pin::New(1)))
        .collect();
    let anchor = a.faces[0];
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
        &json!({"id": now.as_ref().map(|g| g.id), "faces": now.map_or(0, |g| g.faces.len())}),
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
    let (store, held, ids, out) = some_faces(&edge, &c, id, req, "splitting").await?;
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
        &json!({"id": group_id_of(&held, stay), "split": group_id_of(&held, gone)}),
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
    let (store, held, ids, out) = some_faces(&edge, &c, id, req, "rejecting").await?;
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
        &json!({"id": stay.and_then(|f| group_id_of(&held, f)), "rejected": out.len()}),
    ))
}

type Held = tokio::sync::OwnedMutexGuard<PeopleGroups>;

/// The collection's face store, its grouping brought up to date, and group `id` in it
/// (`404` when there is none).
async fn grouping(
    edge: &Edge,
    c: &InCollection,
    id: i64,
) -> Result<(Arc<dyn FaceStore>, Held, Group), ApiError> {
    let store = c.store()?;
    let held = edge
        .groups
        .of(c.label(), store.as_ref())
        .await
        .map_err(store_error)?;
    let group = held.group(id).ok_or_else(|| no_group(id))?;
    Ok((store, held, group))
}

/// [`grouping`], with the group's faces and the ones a correction names (`{"faces": […]}`,
/// each in the group).
async fn some_faces(
    edge: &Edge,
    c: &InCollection,
    id: i64,
    req: Request,
    what: &str,
) -> Result<(Arc<dyn FaceStore>, Held, Vec<i64>, Vec<i64>), ApiError> {
    let out = face_ids(&body(req).await?, what)?;
    let (store, held, group) = grouping(edge, c, id).await?;
    check_members(&out, &group.faces, id)?;
    Ok((store, held, group.faces, out))
}

/// Stores a correction and brings the grouping up to date with it.
async fn correct(
    store: &dyn FaceStore,
    mut held: Held,
    pins: &[(i64, Pin)],
) -> Result<Held, ApiError> {
    store.pin_faces(pins).await.map_err(store_error)?;
    if let Err(e) = held.sync(store).await {
        *held = PeopleGroups::new();
        return Err(store_error(e));
    }
    Ok(held)
}

/// The id of the group seen face `face` is in now.
fn group_id_of(held: &PeopleGroups, face: i64) -> Option<i64> {
    held.group_of(face).map(|g| g.id)
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
