//! The gallery routes: list, enroll faces under a name, rename, remove a name. Changes are
//! transactions of the face store (`facerec_seams::faces`), whatever the gallery's size.

use axum::extract::{Request, State};
use axum::response::Response;
use facerec_seams::faces::{FaceStoreError, NewFace};
use facerec_seams::gallery::GalleryChangeError;
use http_body_util::BodyExt;
use hyper::{HeaderMap, StatusCode, Uri};
use serde_json::json;

use crate::api::appearance_json;
use crate::collections::InCollection;
use crate::recognize::largest_face;
use crate::response::{ApiError, Kind, count_in, json_response, query_pairs};
use crate::routes::{RequestId, Segment, Shared};

/// `GET /v1/identities`: names and face counts.
pub(crate) async fn list(c: InCollection) -> Response {
    let ids: Vec<serde_json::Value> = c
        .gallery
        .get()
        .identities()
        .into_iter()
        .map(|i| json!({"name": i.name, "faces": i.faces}))
        .collect();
    json_response(StatusCode::OK, &json!({"identities": ids}))
}

/// `POST /v1/identities/{name}/faces`: enrols the largest face of each image.
pub(crate) async fn enroll(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(name): Segment,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    edge.check_key(req.headers())?;
    validate_name(&name)?;
    let parts = edge.files(req).await?;
    if parts.is_empty() {
        return Err(ApiError::bad_request("no image files in the request"));
    }
    let faces = edge
        .recognize_parts(parts, &rid, true, c.name.as_deref())
        .await
        .into_iter()
        .map(|r| largest_face(r?))
        .collect::<Result<Vec<_>, _>>()?;
    let added = faces.len();
    let faces: Vec<NewFace> = faces
        .into_iter()
        .map(|(embedding, side)| NewFace {
            embedding,
            side,
            source: None,
        })
        .collect();
    let enrolled = c
        .gallery
        .enroll(edge.seams.store.as_ref(), &name, &faces)
        .await
        .map_err(change_error)?;
    tracing::info!(
        request_id = rid,
        collection = c.label(),
        name,
        added,
        change = enrolled.seq,
        "enrolled"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "added": added, "faces": enrolled.faces, "change": enrolled.seq}),
    ))
}

/// `DELETE /v1/identities/{name}`: removes an identity and its faces.
pub(crate) async fn remove(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(name): Segment,
    c: InCollection,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let removed = c
        .gallery
        .remove(edge.seams.store.as_ref(), &name)
        .await
        .map_err(change_error)?;
    tracing::info!(
        request_id = rid,
        collection = c.label(),
        name,
        removed,
        "identity removed"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "removed": removed}),
    ))
}

/// `PATCH /v1/identities/{name}` with `{"name": "<new name>"}`: renames, keeping the
/// faces.
pub(crate) async fn rename(
    State(edge): Shared,
    RequestId(rid): RequestId,
    Segment(name): Segment,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    edge.check_key(req.headers())?;
    let body = http_body_util::Limited::new(req.into_body(), 4096)
        .collect()
        .await
        .map_err(|_| ApiError::bad_request("a rename is a JSON body under 4 KiB"))?
        .to_bytes();
    let to = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_string))
        .ok_or_else(|| {
            ApiError::bad_request("a rename is a JSON body {\"name\": \"<new name>\"}")
        })?;
    validate_name(&to)?;
    let faces = c
        .gallery
        .rename(edge.seams.store.as_ref(), &name, &to)
        .await
        .map_err(change_error)?;
    tracing::info!(
        request_id = rid,
        collection = c.label(),
        from = name.as_str(),
        to = to.as_str(),
        faces,
        "identity renamed"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": to, "renamed_from": name, "faces": faces}),
    ))
}

/// Most appearances in one page, and the page size without `limit`.
const MAX_PAGE: usize = 1000;
const DEFAULT_PAGE: usize = 100;

/// `GET /v1/identities/{name}/appearances[?limit=N&before=ID]`: where the identity was
/// seen in what was uploaded, newest first; `next` is the `before` of the next page.
pub(crate) async fn appearances(
    State(edge): Shared,
    Segment(name): Segment,
    c: InCollection,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let (limit, before) = page(&uri)?;
    let store = c.store()?;
    let found = store
        .appearances(&name, before, limit)
        .await
        .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|a| a.id))
        .flatten();
    let items: Vec<serde_json::Value> = found.iter().map(appearance_json).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "appearances": items, "next": next}),
    ))
}

/// `GET /v1/retagging`: how far the seen faces have followed the gallery's changes. An
/// enrolment's answer gives its `change`; every seen face has met it once `cursor` is at
/// least that and `stale` is 0.
pub(crate) async fn retagging(
    State(edge): Shared,
    c: InCollection,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let store = c.store()?;
    let status = store
        .retag_status()
        .await
        .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "cursor": status.cursor,
            "latest": status.latest,
            "stale": status.stale,
            "done": status.cursor >= status.latest && status.stale == 0,
            "running": status.running.map(|r| json!({
                "target": r.target,
                "done": r.done,
                "total": r.total,
                "started_ms": r.started_ms,
            })),
        }),
    ))
}

/// `limit` (1 to `MAX_PAGE`) and `before` (a seen face's id) of a listing's query.
fn page(uri: &Uri) -> Result<(usize, Option<i64>), ApiError> {
    let (mut limit, mut before) = (DEFAULT_PAGE, None);
    for (key, value) in query_pairs(uri) {
        match key {
            "limit" => limit = count_in(key, value, MAX_PAGE)?,
            "before" => {
                before = Some(value.parse().map_err(|_| {
                    ApiError::bad_request("before is the id of a seen face (`next` of a page)")
                })?);
            }
            _ => {}
        }
    }
    Ok((limit, before))
}

/// A gallery change that failed, as the API answers it.
pub(crate) fn change_error(e: GalleryChangeError) -> ApiError {
    match e {
        GalleryChangeError::ReadOnly => ApiError::new(Kind::ReadOnly, e.to_string()),
        GalleryChangeError::Store(FaceStoreError::NotFound(m)) => ApiError::not_found(m),
        GalleryChangeError::Store(FaceStoreError::Conflict(m)) => ApiError::new(Kind::Conflict, m),
        GalleryChangeError::Store(FaceStoreError::Unavailable(m)) => ApiError::unavailable(m),
        GalleryChangeError::Store(e) => ApiError::new(Kind::FaceStore, e.to_string()),
    }
}

pub(crate) fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= 64
        && !matches!(name.trim(), "." | "..")
        && !name
            .chars()
            .any(|c| c.is_control() || c == '/' || c == '\\' || c == '\u{FFFD}');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "identity names are 1 to 64 characters of UTF-8, not \".\" or \"..\", without '/', '\\' or control characters",
        ))
    }
}
