//! The built-in web page (GET `/`): static, embedded in the binary, no build step.

use axum::body::Body;
use axum::response::Response;
use hyper::StatusCode;

const INDEX: &str = include_str!("page.html");

pub(crate) async fn index() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' blob: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
        )
        .body(Body::from(INDEX))
        .expect("valid response parts")
}

/// The page's icon (SVG; browsers ask for `/favicon.ico` on every load).
const ICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">\
<rect width=\"32\" height=\"32\" rx=\"6\" fill=\"#1d232b\"/>\
<rect x=\"7\" y=\"7\" width=\"18\" height=\"18\" fill=\"none\" stroke=\"#2ecc71\" stroke-width=\"2.5\"/>\
</svg>";

pub(crate) async fn icon() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "image/svg+xml")
        .header("cache-control", "public, max-age=86400")
        .body(Body::from(ICON))
        .expect("valid response parts")
}
