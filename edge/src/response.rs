//! What the API answers: the body type, the JSON error shape
//! `{"error": "<message>", "kind": "<machine-readable>"}`, JSON and text answers, result
//! lines.

use std::time::Duration;

use bytes::Bytes;
use facerec_contract::{ErrorKind, ImageError, ResultMessage};
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};
use serde_json::json;

/// Every answer's body: whole (`Full`) or streamed (NDJSON batch results).
pub type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
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

    pub(crate) fn response(&self, request_id: &str) -> Response<Body> {
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

pub(crate) fn text_response(
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

/// One NDJSON line of batch results.
pub(crate) fn result_line(r: &ResultMessage) -> String {
    result_json(r).to_string()
}

pub(crate) fn result_json(r: &ResultMessage) -> serde_json::Value {
    let mut v = serde_json::to_value(r).expect("results serialise");
    if let Some(o) = v.as_object_mut() {
        o.remove("v");
    }
    v
}
