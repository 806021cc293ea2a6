//! The gallery routes: list, enroll faces under a name, rename, remove a name. Changes are
//! transactions of the face store (`facerec_seams::faces`), whatever the gallery's size.

use facerec_seams::faces::{FaceStoreError, NewFace};
use facerec_seams::gallery::GalleryChangeError;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::json;

use crate::edge::Edge;
use crate::recognize::largest_face;
use crate::response::{ApiError, Body, json_response};

impl Edge {
    pub(crate) fn identities(&self, rid: &str) -> Response<Body> {
        let ids: Vec<serde_json::Value> = self
            .gallery
            .get()
            .identities()
            .into_iter()
            .map(|i| json!({"name": i.name, "faces": i.faces}))
            .collect();
        json_response(StatusCode::OK, &json!({"identities": ids}), rid)
    }

    pub(crate) async fn enroll(
        &self,
        req: Request<Incoming>,
        name: &str,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        self.check_key(req.headers())?;
        validate_name(name)?;
        let parts = self.files(req).await?;
        if parts.is_empty() {
            return Err(ApiError::bad_request("no image files in the request"));
        }
        let faces = self
            .recognize_parts(parts, rid, true)
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
        let faces = self
            .gallery
            .enroll(self.seams.store.as_ref(), name, &faces)
            .await
            .map_err(change_error)?;
        tracing::info!(request_id = rid, name, added, "enrolled");
        Ok(json_response(
            StatusCode::OK,
            &json!({"name": name, "added": added, "faces": faces}),
            rid,
        ))
    }

    pub(crate) async fn remove(
        &self,
        headers: &hyper::HeaderMap,
        name: &str,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        self.check_key(headers)?;
        let removed = self
            .gallery
            .remove(self.seams.store.as_ref(), name)
            .await
            .map_err(change_error)?;
        tracing::info!(request_id = rid, name, removed, "identity removed");
        Ok(json_response(
            StatusCode::OK,
            &json!({"name": name, "removed": removed}),
            rid,
        ))
    }

    /// `PATCH /v1/identities/{name}` with `{"name": "<new name>"}`: renames, keeping the
    /// faces.
    pub(crate) async fn rename(
        &self,
        req: Request<Incoming>,
        name: &str,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        self.check_key(req.headers())?;
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
        let faces = self
            .gallery
            .rename(self.seams.store.as_ref(), name, &to)
            .await
            .map_err(change_error)?;
        tracing::info!(
            request_id = rid,
            from = name,
            to = to.as_str(),
            faces,
            "identity renamed"
        );
        Ok(json_response(
            StatusCode::OK,
            &json!({"name": to, "renamed_from": name, "faces": faces}),
            rid,
        ))
    }
}

/// A gallery change that failed, as the API answers it.
fn change_error(e: GalleryChangeError) -> ApiError {
    match e {
        GalleryChangeError::ReadOnly => {
            ApiError::new(StatusCode::CONFLICT, "read_only", e.to_string())
        }
        GalleryChangeError::Store(FaceStoreError::NotFound(m)) => ApiError::not_found(&m),
        GalleryChangeError::Store(FaceStoreError::Conflict(m)) => {
            ApiError::new(StatusCode::CONFLICT, "conflict", m)
        }
        GalleryChangeError::Store(FaceStoreError::Unavailable(m)) => ApiError::unavailable(m),
        GalleryChangeError::Store(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "face_store",
            e.to_string(),
        ),
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
