//! What the API answers: the one error type (`ApiError`: a `Kind`, whose status it is, and a
//! message) rendered as `{"error": "<message>", "kind": "<machine-readable>"}`, and the JSON
//! and text answers. Every answer gets its `x-request-id` from the route table's layer
//! (`routes::track`), not from the handler.

use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use facerec_contract::{ErrorKind, ImageError};
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use serde_json::json;

/// Why a request failed, as a machine reads it: each kind has one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: a malformed request (body, field, name, header).
    BadRequest,
    /// 401: `FACEREC_API_KEY` is set and the request lacks it.
    Unauthorized,
    /// 404: no such route, identity or batch.
    NotFound,
    /// 405: a known route with another method (the `Allow` header names the known ones).
    MethodNotAllowed,
    /// 408: the request body stopped arriving for `FACEREC_READ_TIMEOUT`.
    BodyTimeout,
    /// 409: the new name of a rename is taken.
    Conflict,
    /// 409: the job an `Idempotency-Key` names is still uploading, or was cut off.
    BatchExists,
    /// 409: a gallery change on an edge without a face store.
    ReadOnly,
    /// 413: a file over `MAX_FILE_SIZE`.
    TooLarge,
    /// 413: more files than one request or batch holds.
    TooManyFiles,
    /// 415: a batch body that is neither multipart, zip nor tar.
    UnsupportedBody,
    /// 422: an image without a face where one is needed (verify, enrol).
    NoFace,
    /// 503 with `Retry-After: 1`: too many uploads or connections at once.
    Overloaded,
    /// 503 with `Retry-After: 5`: the store, queue or face store cannot be reached, or
    /// the server is shutting down.
    Unavailable,
    /// 504: no result within `REQUEST_TIMEOUT`.
    Timeout,
    /// 500: the face store answered with an error that is not the request's fault.
    FaceStore,
    /// An image the sniffing here or the engine rejected: its own kind and status.
    Image(ErrorKind),
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTimeout => "body_timeout",
            Self::Conflict => "conflict",
            Self::BatchExists => "batch_exists",
            Self::ReadOnly => "read_only",
            Self::TooLarge => "too_large",
            Self::TooManyFiles => "too_many_files",
            Self::UnsupportedBody => "unsupported_body",
            Self::NoFace => "no_face",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::FaceStore => "face_store",
            Self::Image(k) => k.as_str(),
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict | Self::BatchExists | Self::ReadOnly => StatusCode::CONFLICT,
            Self::TooLarge | Self::TooManyFiles => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedBody => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NoFace => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Overloaded | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::FaceStore => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Image(k) => match k {
                ErrorKind::Empty => StatusCode::BAD_REQUEST,
                ErrorKind::NotAnImage | ErrorKind::UnsupportedFormat => {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                }
                ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::Corrupt | ErrorKind::Unusable => StatusCode::UNPROCESSABLE_ENTITY,
                ErrorKind::Io | ErrorKind::Inference => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorKind::UnknownCollection => StatusCode::NOT_FOUND,
            },
        }
    }

    /// Seconds a client should wait before trying again, for the kinds that pass.
    fn retry_after(self) -> Option<u64> {
        match self {
            Self::Overloaded => Some(1),
            Self::Unavailable => Some(5),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Kind::BadRequest, message)
    }

    pub fn too_large(max: usize) -> Self {
        Self::new(
            Kind::TooLarge,
            format!("file larger than MAX_FILE_SIZE ({max} bytes)"),
        )
    }

    pub fn overloaded() -> Self {
        Self::new(
            Kind::Overloaded,
            "too many uploads in progress, retry shortly",
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, message)
    }

    pub fn timeout(after: Duration) -> Self {
        Self::new(
            Kind::Timeout,
            format!("no result within REQUEST_TIMEOUT ({} s)", after.as_secs()),
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, what)
    }

    /// An image the engine (or the sniffing here) rejected.
    pub fn image(e: &ImageError) -> Self {
        Self::new(Kind::Image(e.kind), e.message.clone())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.message, "kind": self.kind.as_str()});
        let mut r = json_response(self.status(), &body);
        if let Some(s) = self.kind.retry_after() {
            r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(s));
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

/// A request's query as (key, value) pairs (a key without `=` has an empty value).
pub(crate) fn query_pairs(uri: &hyper::Uri) -> impl Iterator<Item = (&str, &str)> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// A query's count `key`: a number from 1 to `max`.
pub(crate) fn count_in(key: &str, value: &str, max: usize) -> Result<usize, ApiError> {
    value
        .parse()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::bad_request(format!("{key} is 1 to {max}")))
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    text_response(status, "application/json", body.to_string())
}

pub(crate) fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut r = Response::new(Body::from(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_the_status_the_docs_give_it() {
        assert_eq!(Kind::NoFace.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(Kind::ReadOnly.status(), StatusCode::CONFLICT);
        assert_eq!(
            Kind::Image(ErrorKind::NotAnImage).status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(Kind::Image(ErrorKind::TooLarge).as_str(), "too_large");
        let r = ApiError::unavailable("db away").into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[RETRY_AFTER], "5");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        assert!(
            ApiError::bad_request("x")
                .into_response()
                .headers()
                .get(RETRY_AFTER)
                .is_none()
        );
    }
}
