//! The gallery routes: list, enroll faces under a name, remove a name.

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
        let gallery = self
            .gallery
            .update(self.seams.store.as_ref(), |g| {
                for (e, side) in &faces {
                    g.add_face(name, e, *side);
                }
            })
            .await
            .map_err(|e| ApiError::unavailable(format!("saving the gallery: {e}")))?;
        let faces = gallery
            .identities()
            .into_iter()
            .find(|i| i.name == name)
            .map_or(0, |i| i.faces);
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
        if !self
            .gallery
            .get()
            .identities()
            .iter()
            .any(|i| i.name == name)
        {
            return Err(ApiError::not_found(&format!("no identity {name:?}")));
        }
        let mut removed = 0;
        self.gallery
            .update(self.seams.store.as_ref(), |g| removed = g.remove(name))
            .await
            .map_err(|e| ApiError::unavailable(format!("saving the gallery: {e}")))?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"name": name, "removed": removed}),
            rid,
        ))
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
