//! Multipart bodies read as a stream, with per-file and whole-body size limits enforced
//! while reading: nothing beyond `MAX_FILE_SIZE` per file is ever buffered, and a body
//! that stops arriving fails after the read timeout instead of holding its connection.

use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http_body_util::BodyStream;

use crate::response::{ApiError, Kind};

/// One uploaded file.
pub struct Part {
    pub field: String,
    pub filename: String,
    pub bytes: Bytes,
}

/// One file part of a body: its bytes, or only its size when it is over the limit (the
/// bytes were read and dropped, never buffered).
pub enum Item {
    File(Part),
    TooLarge { filename: String, size: u64 },
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body stalled: no bytes for {} s", .0.as_secs_f64())]
    Stalled(Duration),
    #[error("reading the request body: {0}")]
    Read(#[from] axum::Error),
}

impl BodyError {
    /// The answer for a body that could not be read, from the error a body reader (multer,
    /// an archive reader) passed on: 408 when the body stalled, else 400.
    pub fn answer(e: &(dyn std::error::Error + Send + Sync + 'static)) -> ApiError {
        match e.downcast_ref::<Self>() {
            Some(stalled @ Self::Stalled(_)) => {
                ApiError::new(Kind::BodyTimeout, stalled.to_string())
            }
            Some(read @ Self::Read(_)) => ApiError::bad_request(read.to_string()),
            None => ApiError::bad_request(format!("reading the request body: {e}")),
        }
    }
}

pub(crate) type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// The data frames of a request body as a stream of bytes (trailers dropped); the stream
/// fails with `BodyError::Stalled` when no frame arrives within `idle`.
pub(crate) fn data_frames(body: Body, idle: Duration) -> Frames {
    let frames = BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(BodyError::from(e))),
        }
    });
    Box::pin(futures_util::stream::unfold(
        Some(Box::pin(frames)),
        move |state| async move {
            let mut frames = state?;
            match tokio::time::timeout(idle, frames.next()).await {
                Ok(Some(Ok(b))) => Some((Ok(b), Some(frames))),
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => None,
                Err(_) => Some((Err(BodyError::Stalled(idle)), None)),
            }
        },
    ))
}

/// Reads every file part into memory (at most `max_files` of at most `max_file` bytes);
/// a file over the limit fails the request with 413.
pub async fn read(
    headers: &hyper::HeaderMap,
    body: Body,
    max_file: usize,
    max_files: usize,
    idle: Duration,
) -> Result<Vec<Part>, ApiError> {
    let mut files = Files::new(headers, body, max_file, max_files, idle)?;
    let mut parts = Vec::new();
    while let Some(item) = files.next().await? {
        match item {
            Item::File(p) => parts.push(p),
            Item::TooLarge { .. } => return Err(ApiError::too_large(max_file)),
        }
    }
    Ok(parts)
}

/// File parts one at a time, so a caller can hold only one file in memory (bulk batches).
pub struct Files {
    mp: multer::Multipart<'static>,
    max_file: usize,
    max_files: usize,
    count: usize,
}

impl Files {
    pub fn new(
        headers: &hyper::HeaderMap,
        body: Body,
        max_file: usize,
        max_files: usize,
        idle: Duration,
    ) -> Result<Self, ApiError> {
        let content_type = headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let boundary = multer::parse_boundary(content_type).map_err(|_| {
            ApiError::bad_request("expected a multipart/form-data body with a boundary")
        })?;
        // Headroom for part headers and boundaries.
        let whole = (max_file as u64 + 64 * 1024).saturating_mul(max_files as u64);
        if let Some(len) = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > whole
        {
            return Err(ApiError::too_large(max_file));
        }
        let stream = data_frames(body, idle);
        // Per file, the limit is applied here (an oversized file is an item, not the end of
        // the body); the whole body stays bounded.
        let constraints =
            multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(whole));
        Ok(Self {
            mp: multer::Multipart::with_constraints(stream, boundary, constraints),
            max_file,
            max_files,
            count: 0,
        })
    }

    /// The next file part (plain form fields are skipped), or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Item>, ApiError> {
        while let Some(mut field) = self
            .mp
            .next_field()
            .await
            .map_err(|e| error(e, self.max_file))?
        {
            let Some(name) = field.name().map(str::to_string) else {
                return Err(ApiError::bad_request(
                    "malformed multipart body: a part without a Content-Disposition name",
                ));
            };
            let filename = field.file_name().map(str::to_string);
            let mut bytes = BytesMut::new();
            let mut size = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(|e| error(e, self.max_file))? {
                size += chunk.len() as u64;
                if size <= self.max_file as u64 && filename.is_some() {
                    bytes.extend_from_slice(&chunk);
                }
            }
            let Some(filename) = filename else { continue };
            if self.count == self.max_files {
                return Err(ApiError::new(
                    Kind::TooManyFiles,
                    format!("at most {} files per request", self.max_files),
                ));
            }
            self.count += 1;
            if size > self.max_file as u64 {
                return Ok(Some(Item::TooLarge { filename, size }));
            }
            return Ok(Some(Item::File(Part {
                field: name,
                filename,
                bytes: bytes.freeze(),
            })));
        }
        Ok(None)
    }
}

fn error(e: multer::Error, max_file: usize) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { .. } => ApiError::too_large(max_file),
        multer::Error::StreamReadFailed(inner) => BodyError::answer(inner.as_ref()),
        other => ApiError::bad_request(format!("malformed multipart body: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "XyZ";

    fn headers() -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        h.insert(
            hyper::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}")
                .parse()
                .unwrap(),
        );
        h
    }

    /// A multipart body of `(field, filename, bytes)` parts; a `None` filename is a plain
    /// form field.
    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for (field, filename, bytes) in parts {
            b.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            let disposition = match filename {
                Some(f) => format!("form-data; name=\"{field}\"; filename=\"{f}\""),
                None => format!("form-data; name=\"{field}\""),
            };
            b.extend_from_slice(format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes());
            b.extend_from_slice(bytes);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        b
    }

    const IDLE: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn files_are_read_in_order_and_form_fields_skipped() {
        let b = body(&[
            ("image", Some("a.jpg"), b"aaa"),
            ("note", None, b"hello"),
            ("image", Some("b.png"), b"bb"),
        ]);
        let parts = read(&headers(), Body::from(b), 10, 5, IDLE).await.unwrap();
        let got: Vec<(&str, &str, &[u8])> = parts
            .iter()
            .map(|p| (p.field.as_str(), p.filename.as_str(), p.bytes.as_ref()))
            .collect();
        assert_eq!(
            got,
            [
                ("image", "a.jpg", &b"aaa"[..]),
                ("image", "b.png", &b"bb"[..])
            ]
        );
    }

    #[tokio::test]
    async fn a_file_over_the_limit_is_413_or_an_item_and_the_next_files_are_read() {
        let b = body(&[
            ("image", Some("big.jpg"), &[7u8; 11]),
            ("image", Some("ok.jpg"), b"fine"),
        ]);
        let e = read(&headers(), Body::from(b.clone()), 10, 5, IDLE)
            .await
            .err()
            .unwrap();
        assert_eq!((e.kind, e.status().as_u16()), (Kind::TooLarge, 413));
        let mut files = Files::new(&headers(), Body::from(b), 10, 5, IDLE).unwrap();
        assert!(matches!(
            files.next().await.unwrap(),
            Some(Item::TooLarge { size: 11, .. })
        ));
        assert!(
            matches!(files.next().await.unwrap(), Some(Item::File(p)) if p.filename == "ok.jpg")
        );
        assert!(files.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn more_files_than_allowed_is_413_too_many_files() {
        let b = body(&[
            ("image", Some("1.jpg"), b"1"),
            ("image", Some("2.jpg"), b"2"),
            ("image", Some("3.jpg"), b"3"),
        ]);
        let e = read(&headers(), Body::from(b), 10, 2, IDLE)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, Kind::TooManyFiles);
    }

    #[tokio::test]
    async fn malformed_bodies_are_400_with_what_is_wrong() {
        // No boundary in the content type.
        let mut plain = hyper::HeaderMap::new();
        plain.insert(hyper::header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let e = read(&plain, Body::from("x"), 10, 5, IDLE)
            .await
            .err()
            .unwrap();
        assert!(e.message.contains("boundary"), "{}", e.message);
        // A part without a Content-Disposition name.
        let b = format!("--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n\r\nxx\r\n--{BOUNDARY}--\r\n");
        let e = read(&headers(), Body::from(b), 10, 5, IDLE)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, Kind::BadRequest);
        assert!(
            e.message.starts_with("malformed multipart body"),
            "{}",
            e.message
        );
        // A declared length past what MAX_FILE_SIZE x max_files allows: refused unread.
        let mut long = headers();
        long.insert(hyper::header::CONTENT_LENGTH, "999999999".parse().unwrap());
        let e = read(&long, Body::from("x"), 10, 5, IDLE)
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind, Kind::TooLarge);
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_408_after_the_idle_time() {
        let first = body(&[("image", Some("a.jpg"), b"aaa")]);
        let head = Bytes::copy_from_slice(&first[..first.len() / 2]);
        let stalls = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
            .chain(futures_util::stream::pending());
        let started = std::time::Instant::now();
        let e = read(&headers(), Body::from_stream(stalls), 10, 5, IDLE)
            .await
            .err()
            .unwrap();
        assert_eq!((e.kind, e.status().as_u16()), (Kind::BodyTimeout, 408));
        assert!(started.elapsed() >= IDLE);
    }
}
