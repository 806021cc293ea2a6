//! Routes of the HTTP API (docs/interfaces.md) and the JSON error shape
//! `{"error": "<message>", "kind": "<machine-readable>"}`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use facerec_contract::ResultMessage;
use facerec_contract::message::result_key;
use facerec_contract::{ErrorKind, ImageError};
use facerec_seams::Bucket;
use facerec_seams::metrics::render;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::multipart::{self, Part};
use crate::{Edge, page};

/// Every answer's body: whole (`Full`) or streamed (NDJSON batch results).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

/// The largest face of one recognised upload: its descriptor and its size
/// (`FaceBox::side`, the shorter side of the box), or why there is none.
fn largest_face(r: ResultMessage) -> Result<(Vec<f32>, f32), ApiError> {
    if let Some(e) = &r.error {
        return Err(ApiError::image(e));
    }
    r.faces
        .as_ref()
        .and_then(|f| f.first())
        .and_then(|f| Some((f.embedding.clone()?, f.bbox[2].min(f.bbox[3]))))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_face",
                format!("no face found in {}", r.filename),
            )
        })
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn too_large(max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("file larger than MAX_FILE_SIZE ({max} bytes)"),
        )
    }

    pub fn overloaded() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many uploads in progress, retry shortly",
            )
        }
    }

    pub fn unavailable(message: String) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
        }
    }

    pub fn timeout(after: Duration) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("no result within REQUEST_TIMEOUT ({} s)", after.as_secs()),
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// The status for an image the engine (or the sniffing here) rejected.
    pub fn image(e: &ImageError) -> Self {
        let status = match e.kind {
            ErrorKind::Empty => StatusCode::BAD_REQUEST,
            ErrorKind::NotAnImage | ErrorKind::UnsupportedFormat => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Corrupt | ErrorKind::Unusable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Io | ErrorKind::Inference => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.kind.as_str(), e.message.clone())
    }

    fn response(&self, request_id: &str) -> Response<Body> {
        let body = json!({"error": self.message, "kind": self.kind});
        let mut r = json_response(self.status, &body, request_id);
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(
                hyper::header::RETRY_AFTER,
                s.to_string().parse().expect("digits"),
            );
        }
        r
    }
}

/// Checks by content (magic bytes), not by file name, that an upload is an image.
pub fn validate_image(bytes: &[u8]) -> Result<(), ApiError> {
    facerec_contract::format::sniff(bytes)
        .map(|_| ())
        .map_err(|e| ApiError::image(&e))
}

pub(crate) fn json_response(
    status: StatusCode,
    body: &serde_json::Value,
    request_id: &str,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        .body(full(body.to_string()))
        .expect("valid response parts")
}

fn text_response(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
    request_id: &str,
) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-request-id", request_id)
        .body(full(body))
        .expect("valid response parts")
}

impl Edge {
    /// Answers one HTTP request; records metrics and a log line with the request id.
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            let mut response = ApiError::unavailable(
                "the server is shutting down; retry against another instance".into(),
            )
            .response(&request_id);
            response.headers_mut().insert(
                hyper::header::CONNECTION,
                hyper::header::HeaderValue::from_static("close"),
            );
            self.metrics
                .request("other", 503, start.elapsed().as_secs_f64());
            tracing::info!(request_id, %method, path, status = 503, "http (shutting down)");
            return response;
        }
        let (route, result) = {
            self.metrics.in_flight.inc();
            let r = self.route(req, &request_id).await;
            self.metrics.in_flight.dec();
            r
        };
        let response = match result {
            Ok(r) => r,
            Err(e) => e.response(&request_id),
        };
        let status = response.status().as_u16();
        self.metrics
            .request(route, status, start.elapsed().as_secs_f64());
        tracing::info!(request_id, %method, path, status, ms = start.elapsed().as_millis() as u64, "http");
        response
    }

    async fn route(
        self: &Arc<Self>,
        req: Request<Incoming>,
        rid: &str,
    ) -> (&'static str, Result<Response<Body>, ApiError>) {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let asked = req.method().clone();
        // HEAD answers as GET; hyper sends the head without the body.
        let method = match req.method() {
            &Method::HEAD => Method::GET,
            m => m.clone(),
        };
        match (&method, segments.as_slice()) {
            (&Method::GET, [""]) => ("/page", Ok(page::index(rid))),
            (&Method::GET, ["favicon.ico"]) => ("/favicon.ico", Ok(page::icon(rid))),
            (&Method::POST, [""]) => ("/", self.original(req, rid).await),
            (&Method::GET, ["health"]) => (
                "/health",
                Ok(text_response(StatusCode::OK, "text/plain", "ok\n", rid)),
            ),
            (&Method::GET, ["ready"]) => ("/ready", self.ready(rid).await),
            (&Method::GET, ["metrics"]) => (
                "/metrics",
                Ok(text_response(
                    StatusCode::OK,
                    facerec_seams::http::METRICS_CONTENT_TYPE,
                    render(&self.registry),
                    rid,
                )),
            ),
            (&Method::GET, ["v1", "stats"]) => ("/v1/stats", self.stats(rid).await),
            (&Method::POST, ["v1", "recognize"]) => {
                ("/v1/recognize", self.recognize_route(req, rid).await)
            }
            (&Method::POST, ["v1", "verify"]) => ("/v1/verify", self.verify(req, rid).await),
            (&Method::GET, ["v1", "identities"]) => ("/v1/identities", Ok(self.identities(rid))),
            (&Method::POST, ["v1", "identities", name, "faces"]) => match percent_decode(name) {
                Ok(name) => ("/v1/identities/faces", self.enroll(req, &name, rid).await),
                Err(e) => ("/v1/identities/faces", Err(e)),
            },
            (&Method::POST, ["v1", "batches"]) => {
                ("/v1/batches", self.create_batch(req, rid).await)
            }
            (&Method::GET, ["v1", "batches"]) => {
                ("/v1/batches", self.batch_list(req.headers(), rid).await)
            }
            (&Method::GET, ["v1", "batches", id]) => (
                "/v1/batches/id",
                self.batch_progress(req.headers(), id, rid).await,
            ),
            (&Method::GET, ["v1", "batches", id, "results"]) => (
                "/v1/batches/results",
                self.batch_results(req.headers(), id, rid).await,
            ),
            (&Method::DELETE, ["v1", "identities", name]) => match percent_decode(name) {
                Ok(name) => (
                    "/v1/identities",
                    self.remove(req.headers(), &name, rid).await,
                ),
                Err(e) => ("/v1/identities", Err(e)),
            },
            (_, [""] | ["health" | "ready" | "metrics" | "favicon.ico"] | ["v1", ..])
                if known(&segments) =>
            {
                (
                    "other",
                    Err(ApiError::new(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "method_not_allowed",
                        format!("{asked} is not allowed on {path}"),
                    )),
                )
            }
            _ => (
                "other",
                Err(ApiError::not_found(&format!("no route {path}"))),
            ),
        }
    }

    async fn files(&self, req: Request<Incoming>) -> Result<Vec<Part>, ApiError> {
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
    async fn recognize_parts(
        &self,
        parts: Vec<Part>,
        rid: &str,
        embeddings: bool,
    ) -> Vec<Result<ResultMessage, ApiError>> {
        self.recognize_parts_as(parts, rid, false, embeddings).await
    }

    /// As `recognize_parts`, the message ids made from `base`; with `replay`, an upload
    /// whose result is stored already (a retry under the same `Idempotency-Key`) is
    /// answered from the store, not processed again.
    async fn recognize_parts_as(
        &self,
        parts: Vec<Part>,
        base: &str,
        replay: bool,
        embeddings: bool,
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
                self.recognize(&id, &p.filename, p.bytes, embeddings).await
            }
        });
        futures_util::future::join_all(jobs).await
    }

    /// The original contract: multipart `inputFile` → `text/plain` `<stem>:<name>`.
    async fn original(
        &self,
        req: Request<Incoming>,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        let parts = self.files(req).await?;
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
        let result = self
            .recognize(rid, &part.filename, part.bytes, false)
            .await?;
        if let Some(e) = &result.error {
            return Err(ApiError::image(e));
        }
        Ok(text_response(
            StatusCode::OK,
            "text/plain",
            result.plain(),
            rid,
        ))
    }

    async fn recognize_route(
        &self,
        req: Request<Incoming>,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        // With an `Idempotency-Key` the uploads' ids come from the key: a retry is answered
        // with the results already stored instead of recognising them again.
        let key = crate::batch_api::idempotency_key(req.headers())?;
        let base = key
            .as_deref()
            .map_or_else(|| rid.to_string(), crate::batch_api::keyed_id);
        let parts = self.files(req).await?;
        if parts.is_empty() {
            return Err(ApiError::bad_request("no image files in the request"));
        }
        let names: Vec<String> = parts.iter().map(|p| p.filename.clone()).collect();
        let results = self
            .recognize_parts_as(parts, &base, key.is_some(), false)
            .await;
        if let [Err(e)] = results.as_slice() {
            return Err(e.clone());
        }
        let items: Vec<serde_json::Value> = results
            .into_iter()
            .zip(names)
            .map(|(r, filename)| match r {
                Ok(r) => result_json(&r),
                Err(e) => {
                    json!({"filename": filename, "error": {"kind": e.kind, "message": e.message}})
                }
            })
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({"results": items}),
            rid,
        ))
    }

    async fn verify(&self, req: Request<Incoming>, rid: &str) -> Result<Response<Body>, ApiError> {
        let parts = self.files(req).await?;
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
        let faces = self
            .recognize_parts(vec![a, b], rid, true)
            .await
            .into_iter()
            .map(|r| largest_face(r?))
            .collect::<Result<Vec<_>, _>>()?;
        let ((ea, sa), (eb, sb)) = (&faces[0], &faces[1]);
        let distance = facerec_contract::report::distance(ea, eb);
        let rule = self.config.threshold;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "same": rule.is_same(distance, *sa, *sb),
                "distance": distance,
                "threshold": rule.for_sides(*sa, *sb),
                "confidence": rule.confidence(distance, *sa, *sb),
            }),
            rid,
        ))
    }

    fn identities(&self, rid: &str) -> Response<Body> {
        let ids: Vec<serde_json::Value> = self
            .gallery
            .get()
            .identities()
            .into_iter()
            .map(|i| json!({"name": i.name, "faces": i.faces}))
            .collect();
        json_response(StatusCode::OK, &json!({"identities": ids}), rid)
    }

    async fn enroll(
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

    async fn remove(
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

    async fn ready(&self, rid: &str) -> Result<Response<Body>, ApiError> {
        let store = self.seams.store.ping().await;
        let queue = self.seams.requests.depth().await;
        let ok = store.is_ok() && queue.is_ok();
        let body = json!({
            "ready": ok,
            "store": store.err().map_or("ok".to_string(), |e| e.to_string()),
            "queue": queue.err().map_or("ok".to_string(), |e| e.to_string()),
        });
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Ok(json_response(status, &body, rid))
    }

    async fn stats(&self, rid: &str) -> Result<Response<Body>, ApiError> {
        let depth = self.seams.requests.depth().await.unwrap_or_default();
        let body = json!({
            "queue": {"waiting": depth.visible, "in_flight": depth.in_flight},
            "uploads_total": self.metrics.uploads.get(),
            "in_flight": self.metrics.in_flight.get(),
            "gallery_faces": self.gallery.get().len(),
        });
        Ok(json_response(StatusCode::OK, &body, rid))
    }
}

/// One NDJSON line of batch results.
pub(crate) fn result_line(r: &ResultMessage) -> String {
    result_json(r).to_string()
}

fn result_json(r: &ResultMessage) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("results serialise");
    if let Some(o) = v.as_object_mut() {
        o.remove("v");
    }
    v
}

fn known(segments: &[&str]) -> bool {
    matches!(
        segments,
        [""] | ["health"]
            | ["favicon.ico"]
            | ["ready"]
            | ["metrics"]
            | [
                "v1",
                "stats" | "recognize" | "verify" | "identities" | "batches"
            ]
            | ["v1", "batches", _]
            | ["v1", "batches", _, "results"]
            | ["v1", "identities", _]
            | ["v1", "identities", _, "faces"]
    )
}

fn validate_name(name: &str) -> Result<(), ApiError> {
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

/// A path segment with its `%XX` escapes decoded; an error when the bytes are not UTF-8
/// (two different invalid names must not both become U+FFFD and collide).
fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_request("identity names are UTF-8 (after %-decoding)"))
}
