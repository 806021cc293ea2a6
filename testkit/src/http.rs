//! A raw HTTP/1.1 client: one request per connection, exactly the bytes a test writes (a
//! body the server answers before reading, a multipart part with a broken header), and the
//! edge's batch calls built on it.

use std::collections::HashMap;
use std::time::Duration;

/// An HTTP answer; header names lower-cased.
pub struct Reply {
    pub status: u16,
    pub headers: std::collections::HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// One HTTP/1.1 request on its own connection (`connection: close`); the body is read to
/// the end, so only for answers that are not chunked.
pub fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub const BOUNDARY: &str = "facerec-test-boundary";

/// A `multipart/form-data` body of `(field, filename, bytes)` parts.
pub fn multipart(files: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, filename, bytes) in files {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\ncontent-type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// POSTs the parts as `multipart/form-data`, with extra headers.
pub fn post_files(
    addr: &str,
    path: &str,
    files: &[(&str, &str, &[u8])],
    extra: &[(&str, &str)],
) -> Reply {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut headers = vec![("content-type", ct.as_str())];
    headers.extend_from_slice(extra);
    http(addr, "POST", path, &headers, &multipart(files))
}

/// Undoes `transfer-encoding: chunked` (streamed answers).
pub fn dechunk(r: &Reply) -> Vec<u8> {
    if r.headers.get("transfer-encoding").map(String::as_str) != Some("chunked") {
        return r.body.clone();
    }
    let (mut out, mut rest) = (Vec::new(), r.body.as_slice());
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Waits until `GET /v1/batches/{id}` at `addr` says finished; its progress.
pub fn wait_finished(addr: &str, id: &str, limit: Duration) -> serde_json::Value {
    let t = std::time::Instant::now();
    loop {
        let r = http(addr, "GET", &format!("/v1/batches/{id}"), &[], b"");
        assert_eq!(r.status, 200, "{addr}: {}", r.text());
        let v = r.json();
        if v["finished"] == true {
            return v;
        }
        assert!(t.elapsed() < limit, "{addr}: not finished: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `GET /v1/batches/{id}/results`: filename → name (or error kind), one line per image.
pub fn batch_results(addr: &str, id: &str, auth: &[(&str, &str)]) -> HashMap<String, String> {
    let r = http(addr, "GET", &format!("/v1/batches/{id}/results"), auth, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some("application/x-ndjson")
    );
    let body = String::from_utf8(dechunk(&r)).unwrap();
    body.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let name = v["name"]
                .as_str()
                .or(v["error"]["kind"].as_str())
                .unwrap_or("?")
                .to_string();
            (v["filename"].as_str().unwrap().to_string(), name)
        })
        .collect()
}
