//! The one HTTP client of the workspace: hyper's HTTP/1.1 client, one connection per
//! request (`connection: close`). The scaler scrapes `/metrics` and queries Prometheus with
//! it, the load generator sends its uploads with it (one connection per request, as the
//! original workload's clients did, so a benchmark measures the server's accept path too).
//! `http://host:port` only: these are calls inside a deployment, never to the internet.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad URL {0:?}: http://host:port/path expected")]
    Url(String),
    #[error("connect {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("HTTP exchange with {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("body from {addr}: {message}")]
    Body { addr: String, message: String },
    #[error("no answer from {addr} within {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("{addr} answered {status}: {snippet}")]
    Status {
        addr: String,
        status: u16,
        /// The start of the answer's body (an error message, usually).
        snippet: String,
    },
}

/// Sends `req` to `addr` (`host:port`) on a new connection; the answer's head, its body to
/// be read as it arrives (`Incoming` streams: NDJSON lines come out as they are sent).
pub async fn send(
    addr: &str,
    mut req: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, ClientError> {
    let headers = req.headers_mut();
    if !headers.contains_key(hyper::header::HOST) {
        headers.insert(
            hyper::header::HOST,
            addr.parse()
                .map_err(|_| ClientError::Url(addr.to_string()))?,
        );
    }
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let http = |source| ClientError::Http {
        addr: addr.to_string(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    // The connection's I/O runs beside the exchange and ends with it.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(http)
}

/// Reads a whole body, at most `max` bytes.
pub async fn read_body(addr: &str, body: Incoming, max: usize) -> Result<Bytes, ClientError> {
    Limited::new(body, max)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Body {
            addr: addr.to_string(),
            message: e.to_string(),
        })
}

/// `host:port` and the path of an `http://` URL (port 80 when none is given).
pub fn split_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return Err(ClientError::Url(url.to_string()));
    }
    let addr = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((addr, path.to_string()))
}

/// GETs `url` within `timeout`: the body of a 2xx answer (at most `max` bytes), else an
/// error naming the status.
pub async fn get(url: &str, timeout: Duration, max: usize) -> Result<Bytes, ClientError> {
    let (addr, path) = split_url(url)?;
    let exchange = async {
        let req = Request::get(path)
            .header(hyper::header::ACCEPT, "*/*")
            .header(hyper::header::USER_AGENT, "facerec")
            .body(Full::default())
            .map_err(|_| ClientError::Url(url.to_string()))?;
        let resp = send(&addr, req).await?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let body = read_body(&addr, resp.into_body(), 4096)
                .await
                .unwrap_or_default();
            return Err(ClientError::Status {
                addr: addr.clone(),
                status,
                snippet: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        read_body(&addr, resp.into_body(), max).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.clone(),
            after: timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_an_address_and_a_path() {
        let (a, p) = split_url("http://10.0.0.5:9090/api/v1/query?query=up").unwrap();
        assert_eq!(
            (a.as_str(), p.as_str()),
            ("10.0.0.5:9090", "/api/v1/query?query=up")
        );
        let (a, p) = split_url("http://worker").unwrap();
        assert_eq!((a.as_str(), p.as_str()), ("worker:80", "/"));
        assert!(split_url("https://example.com/").is_err());
        assert!(split_url("http:///metrics").is_err());
    }
}
