//! Multipart bodies read as a stream, with per-file and whole-body size limits enforced
//! while reading: nothing beyond `MAX_FILE_SIZE` per file is ever buffered.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::BodyStream;
use hyper::StatusCode;
use hyper::body::Incoming;

use crate::api::ApiError;

/// One uploaded file.
pub struct Part {
    pub field: String,
    pub filename: String,
    pub bytes: Bytes,
}

pub(crate) type Frames = Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

/// The data frames of a request body as a stream of bytes (trailers dropped).
pub(crate) fn data_frames(body: Incoming) -> Frames {
    Box::pin(BodyStream::new(body).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(e)),
        }
    }))
}

/// Reads every file part into memory (at most `max_files` of at most `max_file` bytes).
pub async fn read(
    headers: &hyper::HeaderMap,
    body: Incoming,
    max_file: usize,
    max_files: usize,
) -> Result<Vec<Part>, ApiError> {
    let mut files = Files::new(headers, body, max_file, max_files)?;
    let mut parts = Vec::new();
    while let Some(p) = files.next().await? {
        parts.push(p);
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
        body: Incoming,
        max_file: usize,
        max_files: usize,
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
        let stream = data_frames(body);
        let constraints = multer::Constraints::new().size_limit(
            multer::SizeLimit::new()
                .per_field(max_file as u64)
                .whole_stream(whole),
        );
        Ok(Self {
            mp: multer::Multipart::with_constraints(stream, boundary, constraints),
            max_file,
            max_files,
            count: 0,
        })
    }

    /// The next file part (plain form fields are skipped), or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Part>, ApiError> {
        while let Some(field) = self
            .mp
            .next_field()
            .await
            .map_err(|e| error(e, self.max_file))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let filename = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.map_err(|e| error(e, self.max_file))?;
            let Some(filename) = filename else { continue };
            if self.count == self.max_files {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_many_files",
                    format!("at most {} files per request", self.max_files),
                ));
            }
            self.count += 1;
            return Ok(Some(Part {
                field: name,
                filename,
                bytes,
            }));
        }
        Ok(None)
    }
}

fn error(e: multer::Error, max_file: usize) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            ApiError::too_large(max_file)
        }
        other => ApiError::bad_request(&format!("malformed multipart body: {other}")),
    }
}
