//! Collections: several independent galleries in one deployment, each with its own
//! identities and seen faces (`facerec_seams::faces`). Every gallery and seen-face route
//! answers at its own path in the default collection and under
//! `/v1/collections/{collection}/…` in another; these routes list, create and delete them.

use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Path, State};
use axum::response::Response;
use facerec_seams::GalleryHandle;
use facerec_seams::faces::{DEFAULT_COLLECTION, FaceStoreError};
use facerec_seams::gallery::GalleryChangeError;
use hyper::http::request::Parts;
use hyper::{HeaderMap, StatusCode};
use serde_json::json;

use crate::edge::Edge;
use crate::identities::change_error;
use crate::response::{ApiError, Kind, json_response};
use crate::routes::{RequestId, Shared};

/// The prefix of the routes of a collection named in the path.
pub(crate) const PREFIX: &str = "/v1/collections/{collection}";

/// The collection a request works in: `{collection}` of its path (a route under
/// [`PREFIX`]), else the default one; its gallery loaded. An unknown collection is 404.
pub(crate) struct InCollection {
    /// `None`: the default collection.
    pub name: Option<String>,
    pub gallery: Arc<GalleryHandle>,
}

impl FromRequestParts<Arc<Edge>> for InCollection {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, edge: &Arc<Edge>) -> Result<Self, ApiError> {
        let named = parts
            .extensions
            .get::<MatchedPath>()
            .is_some_and(|m| m.as_str().starts_with(PREFIX));
        if !named {
            return Ok(Self {
                name: None,
                gallery: edge.gallery.clone(),
            });
        }
        let name = path_param(parts, edge, |k| k == "collection").await?;
        let gallery = edge
            .galleries
            .get(&name)
            .await
            .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
        Ok(Self {
            name: (name != DEFAULT_COLLECTION).then_some(name),
            gallery,
        })
    }
}

/// The `{collection}` of a route's path, not looked up.
pub(crate) struct CollectionName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for CollectionName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        path_param(parts, state, |k| k == "collection")
            .await
            .map(Self)
    }
}

impl InCollection {
    /// The collection's face store, or the `404` of a server that keeps none.
    pub(crate) fn store(&self) -> Result<Arc<dyn facerec_seams::FaceStore>, ApiError> {
        self.gallery.store().cloned().ok_or_else(|| {
            ApiError::not_found("this server keeps no face store, so nothing seen is kept")
        })
    }

    /// The collection's name as the answers give it.
    pub(crate) fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(DEFAULT_COLLECTION)
    }
}

/// The first parameter of the route's path whose name `wanted` accepts, `%XX` escapes
/// decoded; bytes that are not UTF-8 are refused.
pub(crate) async fn path_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    wanted: impl Fn(&str) -> bool,
) -> Result<String, ApiError> {
    let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map_err(|_| ApiError::bad_request("path segments are UTF-8 (after %-decoding)"))?;
    params
        .into_iter()
        .find(|(k, _)| wanted(k))
        .map(|(_, v)| v)
        .ok_or_else(|| ApiError::bad_request("a path segment is missing"))
}

/// `GET /v1/collections`: every collection with its identities and enrolled faces.
pub(crate) async fn list(State(edge): Shared) -> Result<Response, ApiError> {
    let Some(store) = edge.galleries.store() else {
        let g = edge.gallery.get();
        let only = json!({"name": DEFAULT_COLLECTION, "identities": g.identities().len(), "faces": g.len()});
        return Ok(json_response(
            StatusCode::OK,
            &json!({"collections": [only]}),
        ));
    };
    let all = store
        .collections()
        .await
        .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
    let items: Vec<serde_json::Value> = all
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "identities": c.identities,
                "faces": c.faces,
                "created_ms": c.created_ms,
            })
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({"collections": items}),
    ))
}

/// `GET /v1/collections/{collection}`: its identities and faces, as this edge matches them.
pub(crate) async fn show(c: InCollection) -> Response {
    let g = c.gallery.get();
    json_response(
        StatusCode::OK,
        &json!({"name": c.label(), "identities": g.identities().len(), "faces": g.len()}),
    )
}

/// `PUT /v1/collections/{collection}`: creates it (201), or finds it there (200).
pub(crate) async fn create(
    State(edge): Shared,
    RequestId(rid): RequestId,
    CollectionName(name): CollectionName,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let Some(store) = edge.galleries.store() else {
        return Err(ApiError::new(
            Kind::ReadOnly,
            GalleryChangeError::ReadOnly.to_string(),
        ));
    };
    let created = store.create_collection(&name).await.map_err(|e| match e {
        FaceStoreError::Invalid(m) => ApiError::bad_request(m),
        e => change_error(GalleryChangeError::Store(e)),
    })?;
    if created {
        tracing::info!(request_id = rid, collection = name, "collection created");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_response(
        status,
        &json!({"name": name, "created": created}),
    ))
}

/// `DELETE /v1/collections/{collection}`: deletes it with its identities, enrolled faces
/// and seen faces. The default collection cannot be deleted (409).
pub(crate) async fn delete(
    State(edge): Shared,
    RequestId(rid): RequestId,
    CollectionName(name): CollectionName,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    edge.check_key(&headers)?;
    let Some(store) = edge.galleries.store() else {
        return Err(ApiError::not_found(format!("no collection {name:?}")));
    };
    let gone = store
        .delete_collection(&name)
        .await
        .map_err(|e| change_error(GalleryChangeError::Store(e)))?;
    edge.galleries.forget(&name);
    tracing::info!(
        request_id = rid,
        collection = name,
        identities = gone.identities,
        faces = gone.faces,
        "collection deleted"
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({"name": name, "deleted": true, "identities": gone.identities, "faces": gone.faces}),
    ))
}
