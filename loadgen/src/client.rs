//! The harness's requests, sent with the workspace's HTTP client
//! (`facerec_seams::http_client`: hyper, one connection per request, as the original
//! workload's clients did).

use bytes::Bytes;
use facerec_seams::http_client;
use http_body_util::Full;
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};

use crate::config::{Config, Route};
use crate::items::Item;

/// Largest answer read whole (a JSON answer, a batch listing).
const MAX_ANSWER: usize = 64 << 20;

const BOUNDARY: &str = "facerec-bench-5f0c1d";

/// A multipart body of `(field, filename, bytes)` parts.
pub(crate) fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, filename, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{field}\"; filename=\"{}\"\r\ncontent-type: application/octet-stream\r\n\r\n",
                filename.replace(['"', '\r', '\n'], "_")
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A request to the edge; `parts` (field, filename, bytes) make a multipart body.
pub(crate) fn request(
    method: &str,
    path: &str,
    api_key: Option<&str>,
    parts: &[(&str, &str, &[u8])],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    if !parts.is_empty() {
        builder = builder.header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        );
    }
    if let Some(k) = api_key {
        builder = builder.header(AUTHORIZATION, format!("Bearer {k}"));
    }
    let body = if parts.is_empty() {
        Bytes::new()
    } else {
        Bytes::from(multipart(parts))
    };
    builder
        .body(Full::new(body))
        .expect("a method, path and headers of this harness are valid")
}

/// The request for one image on the run's route.
pub(crate) fn item_request(cfg: &Config, item: &Item) -> Request<Full<Bytes>> {
    let key = cfg.api_key.as_deref();
    let image = |field| [(field, item.filename.as_str(), &item.bytes[..])];
    match cfg.route {
        Route::Original => request("POST", "/", key, &image("inputFile")),
        Route::Recognize => request("POST", "/v1/recognize", key, &image("image")),
        Route::Health => request("GET", "/health", key, &[]),
        Route::Batch => request("POST", "/v1/batches", key, &image("images")),
    }
}

/// One request on its own connection, e.g. `GET /ready` or an enrollment: the status and
/// body, or a transport error. `parts` (field, filename, bytes) make a multipart body.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    parts: &[(&str, &str, &[u8])],
) -> Result<(u16, Vec<u8>), String> {
    exchange(addr, request(method, path, api_key, parts)).await
}

/// One exchange: the status and whole body, or a transport error.
pub(crate) async fn exchange(
    addr: &str,
    req: Request<Full<Bytes>>,
) -> Result<(u16, Vec<u8>), String> {
    let resp = http_client::send(addr, req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = http_client::read_body(addr, resp.into_body(), MAX_ANSWER)
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_vec()))
}
