//! The routes of the HTTP API (docs/interfaces.md): every request gets an id, a log line
//! and its metrics; health, readiness and stats answer here.

use std::sync::Arc;
use std::time::Instant;

use facerec_seams::metrics::render;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::edge::Edge;
use crate::page;
use crate::response::{ApiError, Body, json_response, text_response};

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

    pub(crate) async fn route(
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
            (&Method::PATCH, ["v1", "identities", name]) => match percent_decode(name) {
                Ok(name) => ("/v1/identities", self.rename(req, &name, rid).await),
                Err(e) => ("/v1/identities", Err(e)),
            },
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

    pub(crate) async fn ready(&self, rid: &str) -> Result<Response<Body>, ApiError> {
        let store = self.seams.store.ping().await;
        let queue = self.seams.requests.depth().await;
        let ok = store.is_ok() && queue.is_ok();
        // The face store is reported, not required: recognition matches the gallery in
        // memory while the database is away (only changes to it wait).
        let faces = match self.gallery.store() {
            None => "none".to_string(),
            Some(s) => s
                .status()
                .await
                .map_or_else(|e| e.to_string(), |_| "ok".to_string()),
        };
        let body = json!({
            "ready": ok,
            "store": store.err().map_or("ok".to_string(), |e| e.to_string()),
            "queue": queue.err().map_or("ok".to_string(), |e| e.to_string()),
            "face_store": faces,
        });
        let status = if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        Ok(json_response(status, &body, rid))
    }

    pub(crate) async fn stats(&self, rid: &str) -> Result<Response<Body>, ApiError> {
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

pub(crate) fn known(segments: &[&str]) -> bool {
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

/// A path segment with its `%XX` escapes decoded; an error when the bytes are not UTF-8
/// (two different invalid names must not both become U+FFFD and collide).
pub(crate) fn percent_decode(s: &str) -> Result<String, ApiError> {
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
