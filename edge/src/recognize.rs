//! Recognition routes: the original contract `POST /`, `/v1/recognize` (several files,
//! `Idempotency-Key` retries) and `/v1/verify`.

use std::path::Path;

use axum::extract::{Request, State};
use axum::response::Response;
use facerec_contract::ResultMessage;
use facerec_contract::message::result_key;
use facerec_seams::Bucket;
use hyper::StatusCode;
use serde_json::json;

use crate::api::recognition_json;
use crate::collections::InCollection;
use crate::edge::Edge;
use crate::idempotency::{idempotency_key, keyed_id};
use crate::multipart::{self, Part};
use crate::response::{ApiError, Kind, json_response, text_response};
use crate::routes::{RequestId, Shared};

impl Edge {
    pub(crate) async fn files(&self, req: Request) -> Result<Vec<Part>, ApiError> {
        let (parts, body) = req.into_parts();
        multipart::read(
            &parts.headers,
            body,
            self.config.max_file_size,
            self.config.max_files,
            self.config.read_timeout,
        )
        .await
    }

    /// Recognises uploads concurrently; results in upload order.
    pub(crate) async fn recognize_parts(
        &self,
        parts: Vec<Part>,
        rid: &str,
        probe: bool,
        collection: Option<&str>,
    ) -> Vec<Result<ResultMessage, ApiError>> {
        self.recognize_parts_as(parts, rid, false, probe, collection)
            .await
    }

    /// As `recognize_parts`, the message ids made from `base`; with `replay`, an upload
    /// whose result is stored already (a retry under the same `Idempotency-Key`) is
    /// answered from the store, not processed again.
    pub(crate) async fn recognize_parts_as(
        &self,
        parts: Vec<Part>,
        base: &str,
        replay: bool,
        probe: bool,
        collection: Option<&str>,
    ) -> Vec<Result<ResultMessage, ApiError>> {
        let single = parts.len() == 1;
        let jobs = parts.into_iter().enumerate().map(|(i, p)| {
            // The HTTP request id is the message id of a single upload.
            let id = if single {
                base.to_string()
            } else {
                format!("{base}-{i}")
            };
            async move {
                if replay
                    && let Ok(body) = self.seams.store.get(Bucket::Out, &result_key(&id)).await
                    && let Ok(r) = ResultMessage::parse(&body)
                {
                    tracing::info!(request_id = %id, "answered from the store for its Idempotency-Key");
                    return Ok(r);
                }
                self.recognize(&id, &p.filename, p.bytes, probe, collection)
                    .await
            }
        });
        futures_util::future::join_all(jobs).await
    }
}

/// The original contract: multipart `inputFile` → `text/plain` `<stem>:<name>`.
pub(crate) async fn original(
    State(edge): Shared,
    RequestId(rid): RequestId,
    req: Request,
) -> Result<Response, ApiError> {
    let parts = edge.files(req).await?;
    let Some(part) = parts.into_iter().find(|p| p.field == "inputFile") else {
        return Err(ApiError::bad_request("missing file field \"inputFile\""));
    };
    // The answer is `<file stem>:<name>`: a file without a name has no stem.
    if Path::new(&part.filename)
        .file_stem()
        .is_none_or(|s| s.is_empty())
    {
        return Err(ApiError::bad_request(
            "the inputFile part has an empty filename (no file chosen?)",
        ));
    }
    let result = edge
        .recognize(&rid, &part.filename, part.bytes, false, None)
        .await?;
    if let Some(e) = &result.error {
        return Err(ApiError::image(e));
    }
    Ok(text_response(StatusCode::OK, "text/plain", result.plain()))
}

/// `POST /v1/recognize`: one or more images, results in upload order.
pub(crate) async fn recognize(
    State(edge): Shared,
    RequestId(rid): RequestId,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    // With an `Idempotency-Key` the uploads' ids come from the key: a retry is answered
    // with the results already stored instead of recognising them again.
    let key = idempotency_key(req.headers())?;
    let base = key.as_deref().map_or_else(|| rid.clone(), keyed_id);
    let parts = edge.files(req).await?;
    if parts.is_empty() {
        return Err(ApiError::bad_request("no image files in the request"));
    }
    let names: Vec<String> = parts.iter().map(|p| p.filename.clone()).collect();
    let results = edge
        .recognize_parts_as(parts, &base, key.is_some(), false, c.name.as_deref())
        .await;
    if let [Err(e)] = results.as_slice() {
        return Err(e.clone());
    }
    let items: Vec<serde_json::Value> = results
            .into_iter()
            .zip(names)
            .map(|(r, filename)| match r {
                Ok(r) => recognition_json(&r),
                Err(e) => {
                    json!({"filename": filename, "error": {"kind": e.kind.as_str(), "message": e.message}})
                }
            })
            .collect();
    Ok(json_response(StatusCode::OK, &json!({"results": items})))
}

/// `POST /v1/verify`: the largest faces of files `a` and `b`, the same person or not.
pub(crate) async fn verify(
    State(edge): Shared,
    RequestId(rid): RequestId,
    c: InCollection,
    req: Request,
) -> Result<Response, ApiError> {
    let parts = edge.files(req).await?;
    let mut a = None;
    let mut b = None;
    for p in parts {
        match p.field.as_str() {
            "a" => a = Some(p),
            "b" => b = Some(p),
            _ => {}
        }
    }
    let (Some(a), Some(b)) = (a, b) else {
        return Err(ApiError::bad_request(
            "verify needs two files, fields \"a\" and \"b\"",
        ));
    };
    let faces = edge
        .recognize_parts(vec![a, b], &rid, true, c.name.as_deref())
        .await
        .into_iter()
        .map(|r| largest_face(r?))
        .collect::<Result<Vec<_>, _>>()?;
    let ((ea, sa), (eb, sb)) = (&faces[0], &faces[1]);
    let distance = facerec_contract::report::distance(ea, eb);
    let rule = edge.config.threshold;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "same": rule.is_same(distance, *sa, *sb),
            "distance": distance,
            "threshold": rule.for_sides(*sa, *sb),
            "confidence": rule.confidence(distance, *sa, *sb),
        }),
    ))
}

/// The largest face of one recognised upload: its descriptor and its size
/// (`FaceBox::side`, the shorter side of the box), or why there is none.
pub(crate) fn largest_face(r: ResultMessage) -> Result<(Vec<f32>, f32), ApiError> {
    if let Some(e) = &r.error {
        return Err(ApiError::image(e));
    }
    r.faces
        .as_ref()
        .and_then(|f| f.first())
        .and_then(|f| Some((f.embedding.clone()?, f.bbox[2].min(f.bbox[3]))))
        .ok_or_else(|| ApiError::new(Kind::NoFace, format!("no face found in {}", r.filename)))
}
