//! The built-in web page (GET `/`): static, embedded in the binary, no build step.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};

const INDEX: &str = include_str!("page.html");

pub fn index(request_id: &str) -> Response<crate::api::Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .header("x-request-id", request_id)
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        )
        .body(Full::new(Bytes::from_static(INDEX.as_bytes())).boxed())
        .expect("valid response parts")
}
