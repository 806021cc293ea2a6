//! The built-in web page (GET `/`): static, embedded in the binary, no build step.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};

const INDEX: &str = include_str!("page.html");

pub fn index(request_id: &str) -> Response<crate::response::Body> {
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

/// The page's icon (SVG; browsers ask for `/favicon.ico` on every load).
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">\
<rect width=\"32\" height=\"32\" rx=\"6\" fill=\"#1d232b\"/>\
<rect x=\"7\" y=\"7\" width=\"18\" height=\"18\" fill=\"none\" stroke=\"#2ecc71\" stroke-width=\"2.5\"/>\
</svg>";

pub fn icon(request_id: &str) -> Response<crate::response::Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "image/svg+xml")
        .header("cache-control", "public, max-age=86400")
        .header("x-request-id", request_id)
        .body(Full::new(Bytes::from_static(ICON.as_bytes())).boxed())
        .expect("valid response parts")
}
