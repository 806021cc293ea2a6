//! A minimal HTTP/1.0 GET for scraping `/metrics` and querying Prometheus on a trusted
//! network: `http://host:port/path` only, whole body read (HTTP/1.0 so no chunking), with a
//! timeout and a size cap.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest body accepted (a metrics page of a busy worker is a few tens of KiB).
const MAX_BODY: u64 = 16 << 20;

/// GETs `url`; a non-2xx status is an error carrying the status line.
pub async fn get(url: &str, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, get_inner(url))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn get_inner(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(format!("no host in {url}"));
    }
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    let mut stream = TcpStream::connect(&addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: */*\r\nUser-Agent: facerec-scaler\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP header in the answer")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    if !(200..300).contains(&status) {
        let snippet: String = body.chars().take(200).collect();
        return Err(format!("{status_line}: {snippet}"));
    }
    Ok(body)
}
