//! The route table of the HTTP API (docs/interfaces.md), in one place: each route, its
//! methods and its handler. The handlers are functions over the shared `Edge`; `track` is
//! the layer every request passes: its request id (`x-request-id`), the 503 while the
//! server drains, its metrics and its log line. `GET` routes answer `HEAD` too; a known
//! route with another method answers 405 with `Allow`; anything else 404, both as JSON.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post};
use facerec_seams::metrics::render;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, StatusCode, Uri};
use serde_json::json;

use crate::collections::PREFIX;
use crate::edge::Edge;
use crate::response::{ApiError, Kind, json_response, text_response};
use crate::{batch_api, collections, groups, identities, page, recognize, search};

/// The shared state every handler gets.
pub(crate) type Shared = State<Arc<Edge>>;

/// The routes that work in a collection: each answers at `/v1/<path>` in the default
/// collection and at `/v1/collections/{collection}/<path>` in the one named.
fn in_collection() -> Vec<(&'static str, MethodRouter<Arc<Edge>>)> {
    vec![
        ("/recognize", post(recognize::recognize)),
        ("/verify", post(recognize::verify)),
        ("/identities", get(identities::list)),
        (
            "/identities/{name}",
            patch(identities::rename).delete(identities::remove),
        ),
        ("/identities/{name}/faces", post(identities::enroll)),
        (
            "/identities/{name}/appearances",
            get(identities::appearances),
        ),
        ("/retagging", get(identities::retagging)),
        ("/faces/search", post(search::by_upload)),
        ("/faces/{id}/similar", get(search::by_seen)),
        ("/batches/{id}/faces", delete(search::forget_batch)),
        ("/groups", get(groups::list)),
        ("/groups/{id}/faces", get(groups::faces)),
        ("/groups/{id}/name", post(groups::name)),
        ("/groups/{id}/merge", post(groups::merge)),
        ("/groups/{id}/split", post(groups::split)),
        ("/groups/{id}/reject", post(groups::reject)),
    ]
}

/// Every route of the API.
pub(crate) fn router(edge: Arc<Edge>) -> Router {
    let mut router = Router::new()
        .route("/", get(page::index).post(recognize::original))
        .route("/favicon.ico", get(page::icon))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/stats", get(stats))
        .route("/v1/collections", get(collections::list))
        .route(
            PREFIX,
            get(collections::show)
                .put(collections::create)
                .delete(collections::delete),
        )
        .route("/v1/batches", get(batch_api::list).post(batch_api::create))
        .route(&format!("{PREFIX}/batches"), post(batch_api::create))
        .route("/v1/batches/{id}", get(batch_api::progress))
        .route("/v1/batches/{id}/results", get(batch_api::results));
    for (path, methods) in in_collection() {
        router = router
            .route(&format!("/v1{path}"), methods.clone())
            .route(&format!("{PREFIX}{path}"), methods);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(from_fn_with_state(edge.clone(), track))
        .with_state(edge)
}

/// The id of one HTTP request: a UUID, the `x-request-id` of its answer, and the message
/// id of a single upload.
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Self>()
            .cloned()
            .unwrap_or_else(|| Self(uuid::Uuid::new_v4().to_string())))
    }
}

/// The one `{name}` or `{id}` of a route's path (besides its `{collection}`), `%XX`
/// escapes decoded; bytes that are not UTF-8 are refused (two different invalid names
/// must not both become U+FFFD and collide).
pub(crate) struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::bad_request("identity names are UTF-8 (after %-decoding)"))?;
        params
            .into_iter()
            .find(|(k, _)| k != "collection")
            .map(|(_, v)| Self(v))
            .ok_or_else(|| ApiError::bad_request("a path segment is missing"))
    }
}

/// The layer around every route: request id, drain, metrics, log line.
async fn track(State(edge): Shared, mut req: Request, next: Next) -> Response {
    let rid = uuid::Uuid::new_v4().to_string();
    let start = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = label(&method, req.extensions().get::<MatchedPath>());
    req.extensions_mut().insert(RequestId(rid.clone()));
    let draining = edge.draining.load(std::sync::atomic::Ordering::Relaxed);
    let mut response = if draining {
        let mut r =
            ApiError::unavailable("the server is shutting down; retry against another instance")
                .into_response();
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        r
    } else {
        edge.metrics.in_flight.inc();
        let r = next.run(req).await;
        edge.metrics.in_flight.dec();
        r
    };
    if let Ok(v) = HeaderValue::from_str(&rid) {
        response.headers_mut().insert("x-request-id", v);
    }
    let status = response.status().as_u16();
    let route = if draining || status == 405 {
        "other"
    } else {
        route.as_str()
    };
    edge.metrics
        .request(route, status, start.elapsed().as_secs_f64());
    let ms = start.elapsed().as_millis() as u64;
    if draining {
        tracing::info!(request_id = rid, %method, path, status, "http (shutting down)");
    } else {
        tracing::info!(request_id = rid, %method, path, status, ms, "http");
    }
    response
}

/// The `route` label of a request's metrics: the route's path as the table spells it
/// (`/v1/identities/{name}/faces`), `/page` for the page (`GET /`; `POST /` is the
/// original upload route), `other` for no route.
fn label(method: &Method, matched: Option<&MatchedPath>) -> String {
    match matched.map(MatchedPath::as_str) {
        None => "other".into(),
        Some("/") if matches!(*method, Method::GET | Method::HEAD) => "/page".into(),
        Some(path) => path.into(),
    }
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        Kind::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn health() -> Response {
    text_response(StatusCode::OK, "text/plain", "ok\n")
}

async fn metrics(State(edge): Shared) -> Response {
    text_response(
        StatusCode::OK,
        facerec_seams::http::METRICS_CONTENT_TYPE,
        render(&edge.registry),
    )
}

async fn ready(State(edge): Shared) -> Response {
    let store = edge.seams.store.ping().await;
    let queue = edge.seams.requests.depth().await;
    let ok = store.is_ok() && queue.is_ok();
    // The face store is reported, not required: recognition matches the gallery in
    // memory while the database is away (only changes to it wait).
    let faces = match edge.gallery.store() {
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
    json_response(status, &body)
}

async fn stats(State(edge): Shared) -> Response {
    let depth = edge.seams.requests.depth().await.unwrap_or_default();
    let body = json!({
        "queue": {"waiting": depth.visible, "in_flight": depth.in_flight},
        "uploads_total": edge.metrics.uploads.get(),
        "in_flight": edge.metrics.in_flight.get(),
        "gallery_faces": edge.gallery.get().len(),
    });
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use facerec_seams::{FsStore, GalleryHandle, LocalQueue, Seams};
    use http_body_util::BodyExt;
    use prometheus_client::registry::Registry;
    use tower::ServiceExt;

    use super::*;
    use crate::{EdgeConfig, EdgeMetrics};

    fn edge(dir: &std::path::Path) -> Arc<Edge> {
        let queue = |name| Arc::new(LocalQueue::new(name, Duration::from_secs(30)));
        let seams = Seams {
            requests: queue("req"),
            responses: queue("resp"),
            dead_letters: queue("dlq"),
            store: Arc::new(FsStore::new(dir).unwrap()),
        };
        let mut registry = Registry::default();
        let metrics = EdgeMetrics::register(&mut registry);
        let config = EdgeConfig {
            api_key: Some("sesame".into()),
            ..EdgeConfig::default()
        };
        Edge::new(
            config,
            seams,
            Arc::new(GalleryHandle::new("test-model")),
            metrics,
            Arc::new(registry),
        )
    }

    struct Answer {
        status: StatusCode,
        headers: hyper::HeaderMap,
        body: String,
    }

    async fn call(edge: &Arc<Edge>, method: &str, uri: &str, body: &str) -> Answer {
        let req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", "Bearer sesame")
            .body(Body::from(body.to_string()))
            .unwrap();
        let r = router(edge.clone()).oneshot(req).await.unwrap();
        let (parts, body) = r.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    fn kind(a: &Answer) -> String {
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        v["kind"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn every_answer_has_its_request_id_and_errors_are_json() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        let ok = call(&edge, "GET", "/health", "").await;
        assert_eq!((ok.status, ok.body.as_str()), (StatusCode::OK, "ok\n"));
        let missing = call(&edge, "GET", "/v1/nothing", "").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(kind(&missing), "not_found");
        assert_eq!(missing.headers["content-type"], "application/json");
        for a in [&ok, &missing] {
            let id = a.headers["x-request-id"].to_str().unwrap();
            assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        }
        assert_ne!(ok.headers["x-request-id"], missing.headers["x-request-id"]);
    }

    #[tokio::test]
    async fn a_known_route_with_another_method_is_405_naming_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        for (method, uri, allow) in [
            ("PUT", "/v1/identities/ada", "PATCH,DELETE"),
            ("GET", "/v1/recognize", "POST"),
            ("DELETE", "/", "GET,HEAD,POST"),
            ("POST", "/v1/batches/abc/results", "GET,HEAD"),
            ("POST", "/health", "GET,HEAD"),
        ] {
            let a = call(&edge, method, uri, "").await;
            assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
            assert_eq!(kind(&a), "method_not_allowed");
            assert!(
                a.body
                    .contains(&format!("{method} is not allowed on {uri}"))
            );
            assert_eq!(a.headers["allow"], allow, "{method} {uri}");
        }
        // Unknown paths stay 404 whatever the method.
        assert_eq!(
            call(&edge, "PUT", "/v1/nope", "").await.status,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn head_answers_every_get_route_without_a_body() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        for uri in [
            "/",
            "/favicon.ico",
            "/health",
            "/metrics",
            "/v1/stats",
            "/v1/identities",
        ] {
            let get = call(&edge, "GET", uri, "").await;
            let head = call(&edge, "HEAD", uri, "").await;
            assert_eq!(head.status, get.status, "{uri}");
            assert_eq!(
                head.headers["content-type"], get.headers["content-type"],
                "{uri}"
            );
            assert!(head.body.is_empty(), "{uri}");
            assert!(!get.body.is_empty(), "{uri}");
        }
    }

    #[tokio::test]
    async fn path_segments_are_percent_decoded_and_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        // Not UTF-8 once decoded: refused before anything else.
        let a = call(&edge, "DELETE", "/v1/identities/%FF%FE", "").await;
        assert_eq!(
            (a.status, kind(&a).as_str()),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
        // A decoded '/' is not a name to enrol under.
        let a = call(&edge, "POST", "/v1/identities/a%2Fb/faces", "").await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(a.body.contains("without '/'"), "{}", a.body);
        // A name that decodes well reaches the gallery: this edge has no face store.
        let a = call(&edge, "DELETE", "/v1/identities/J%C3%BCrgen", "").await;
        assert_eq!(
            (a.status, kind(&a).as_str()),
            (StatusCode::CONFLICT, "read_only")
        );
        let a = call(&edge, "GET", "/v1/batches/..%2Fx", "").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn routes_with_a_key_refuse_a_request_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        let req = hyper::Request::builder()
            .method("DELETE")
            .uri("/v1/identities/ada")
            .body(Body::empty())
            .unwrap();
        let r = router(edge).oneshot(req).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn while_draining_every_request_answers_503_and_closes() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        edge.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let a = call(&edge, "GET", "/health", "").await;
        assert_eq!(
            (a.status, kind(&a).as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        assert_eq!(a.headers["connection"], "close");
        assert_eq!(a.headers["retry-after"], "5");
        assert!(a.headers.contains_key("x-request-id"));
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route_as_the_table_spells_it() {
        let dir = tempfile::tempdir().unwrap();
        let edge = edge(dir.path());
        call(&edge, "GET", "/", "").await;
        call(&edge, "DELETE", "/v1/identities/ada", "").await;
        call(&edge, "GET", "/nowhere", "").await;
        let text = call(&edge, "GET", "/metrics", "").await.body;
        for line in [
            r#"facerec_edge_requests_total{route="/page",status="200"} 1"#,
            r#"facerec_edge_requests_total{route="/v1/identities/{name}",status="409"} 1"#,
            r#"facerec_edge_requests_total{route="other",status="404"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
