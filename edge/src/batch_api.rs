//! The `/v1/batches` routes: submit a bulk job (multipart with many files, or a tar body),
//! read its progress, stream its results as NDJSON.

use std::sync::Arc;

use bytes::Bytes;
use facerec_engine::{ErrorKind, ImageError};
use facerec_worker::message::input_key;
use facerec_worker::{Bucket, Request, ResultMessage};
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Response, StatusCode};
use serde_json::json;

use crate::api::{ApiError, Body, json_response, result_line};
use crate::archive::{ArchiveError, Entry, TarReader, ZipReader};
use crate::batch::Job;
use crate::{Edge, multipart};

/// Requests queued per send call (SQS batches hold 10).
const SEND_BATCH: usize = 10;

/// Collects a job's requests and sends them ten at a time.
struct Submitter<'a> {
    edge: &'a Edge,
    job: Arc<Job>,
    next: usize,
    /// Request id, file name and message body of each request not yet sent.
    queued: Vec<(String, String, String)>,
}

impl Submitter<'_> {
    /// The next item's request id, within the per-batch bound.
    fn next_id(&mut self) -> Result<String, ApiError> {
        let max = self.edge.config.max_batch_files;
        if self.next == max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_files",
                format!("at most {max} images per batch"),
            ));
        }
        self.next += 1;
        Ok(format!("{}-{}", self.job.id, self.next - 1))
    }

    /// The NDJSON line of an item that failed here, before any worker saw it.
    fn error_line(&self, request_id: &str, filename: &str, error: ImageError) -> String {
        result_line(&ResultMessage {
            batch: Some(self.job.id.clone()),
            ..ResultMessage::error(request_id, filename, error)
        })
    }

    fn fail(&self, request_id: String, filename: &str, error: ImageError) {
        let line = self.error_line(&request_id, filename, error);
        self.edge.batches.add_failed(&self.job, request_id, line);
    }

    /// Validates, stores and queues one image; a bad one becomes a failed item at once.
    async fn submit(&mut self, filename: &str, bytes: Bytes) -> Result<(), ApiError> {
        let request_id = self.next_id()?;
        if let Err(e) = facerec_engine::decode::sniff(&bytes) {
            self.fail(request_id, filename, e);
            return Ok(());
        }
        if let Err(e) = self
            .edge
            .seams
            .store
            .put(Bucket::In, &input_key(&request_id), bytes)
            .await
        {
            self.fail(
                request_id,
                filename,
                ImageError::new(ErrorKind::Io, format!("storing the upload: {e}")),
            );
            return Ok(());
        }
        let mut req = Request::new(&request_id, filename);
        req.batch = Some(self.job.id.clone());
        self.edge.batches.add(&self.job, request_id.clone());
        self.queued
            .push((request_id, filename.to_string(), req.to_json()));
        if self.queued.len() >= SEND_BATCH {
            self.flush().await;
        }
        Ok(())
    }

    /// An entry too large to read: a failed item, its bytes never buffered.
    fn too_large(&mut self, filename: &str, size: u64) -> Result<(), ApiError> {
        let request_id = self.next_id()?;
        let msg = format!(
            "{size} bytes, more than MAX_FILE_SIZE ({} bytes)",
            self.edge.config.max_file_size
        );
        self.fail(
            request_id,
            filename,
            ImageError::new(ErrorKind::TooLarge, msg),
        );
        Ok(())
    }

    async fn flush(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.queued);
        let bodies = batch.iter().map(|(_, _, body)| body.clone()).collect();
        if let Err(e) = self.edge.seams.requests.send(bodies).await {
            tracing::warn!(batch = %self.job.id, error = %e, "queueing batch requests failed");
            for (id, filename, _) in batch {
                let error = ImageError::new(ErrorKind::Io, format!("queueing the request: {e}"));
                let line = self.error_line(&id, &filename, error);
                self.edge.batches.deliver(&id, line, true);
            }
        }
    }
}

impl Edge {
    pub(crate) async fn create_batch(
        &self,
        req: hyper::Request<Incoming>,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        self.check_key(req.headers())?;
        let (parts, body) = req.into_parts();
        let content_type = parts
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let job = self.batches.create(rid.to_string());
        let mut sub = Submitter {
            edge: self,
            job: job.clone(),
            next: 0,
            queued: Vec::new(),
        };
        let read = if content_type.starts_with("multipart/form-data") {
            self.read_multipart(&parts.headers, body, &mut sub).await
        } else if content_type.starts_with("application/x-tar")
            || content_type.starts_with("application/tar")
        {
            self.read_tar(body, &mut sub).await
        } else if content_type.starts_with("application/zip")
            || content_type.starts_with("application/x-zip-compressed")
        {
            self.read_zip(body, &mut sub).await
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_body",
                "a batch is multipart/form-data with image files, an application/zip or an \
                 application/x-tar body",
            ))
        };
        sub.flush().await;
        self.batches.seal(&job);
        // The job exists even if the upload broke off: its id is this request's id.
        read?;
        let p = job.progress();
        if p.total == 0 {
            return Err(ApiError::bad_request("no image files in the batch"));
        }
        tracing::info!(batch = %job.id, total = p.total, rejected = p.failed, "batch accepted");
        let body = json!({"id": job.id, "total": p.total, "done": p.done, "failed": p.failed});
        Ok(json_response(StatusCode::ACCEPTED, &body, rid))
    }

    async fn read_multipart(
        &self,
        headers: &hyper::HeaderMap,
        body: Incoming,
        sub: &mut Submitter<'_>,
    ) -> Result<(), ApiError> {
        let max = self.config.max_batch_files.saturating_add(1);
        let mut files = multipart::Files::new(
            headers,
            body,
            self.config.max_file_size,
            max,
            self.config.read_timeout,
        )?;
        // A file over MAX_FILE_SIZE is a failed item of the job, as in a tar body; the
        // files after it are read on.
        while let Some(item) = files.next().await? {
            match item {
                multipart::Item::File(p) => sub.submit(&p.filename, p.bytes).await?,
                multipart::Item::TooLarge { filename, size } => sub.too_large(&filename, size)?,
            }
        }
        Ok(())
    }

    async fn read_tar(&self, body: Incoming, sub: &mut Submitter<'_>) -> Result<(), ApiError> {
        let frames = multipart::data_frames(body, self.config.read_timeout);
        let mut tar = TarReader::new(frames, self.config.max_file_size as u64);
        loop {
            let entry = tar.next_entry().await;
            if !submit_entry(sub, entry, "tar").await? {
                return Ok(());
            }
        }
    }

    async fn read_zip(&self, body: Incoming, sub: &mut Submitter<'_>) -> Result<(), ApiError> {
        let frames = multipart::data_frames(body, self.config.read_timeout);
        let mut zip = ZipReader::new(frames, self.config.max_file_size as u64);
        loop {
            let entry = zip.next_entry().await;
            if !submit_entry(sub, entry, "zip").await? {
                return Ok(());
            }
        }
    }

    fn job(&self, headers: &hyper::HeaderMap, id: &str) -> Result<Arc<Job>, ApiError> {
        self.check_key(headers)?;
        self.batches
            .get(id)
            .ok_or_else(|| ApiError::not_found(&format!("no batch {id}")))
    }

    pub(crate) fn batch_progress(
        &self,
        headers: &hyper::HeaderMap,
        id: &str,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        let job = self.job(headers, id)?;
        Ok(json_response(StatusCode::OK, &progress_json(&job), rid))
    }

    /// `GET /v1/batches`: the jobs this edge holds (until their retention), newest first.
    pub(crate) fn batch_list(
        &self,
        headers: &hyper::HeaderMap,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        self.check_key(headers)?;
        let jobs: Vec<serde_json::Value> = self
            .batches
            .newest_first()
            .iter()
            .map(|j| progress_json(j))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "batches": jobs }),
            rid,
        ))
    }

    /// NDJSON, one line per image, streamed as results arrive; ends when all are in.
    pub(crate) fn batch_results(
        &self,
        headers: &hyper::HeaderMap,
        id: &str,
        rid: &str,
    ) -> Result<Response<Body>, ApiError> {
        let job = self.job(headers, id)?;
        let frames = job
            .stream()
            .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/x-ndjson")
            .header("x-request-id", rid)
            .body(BodyExt::boxed(StreamBody::new(frames)))
            .expect("valid response parts"))
    }
}

/// Queues one archive entry (a file over the limit becomes a failed item); false at the
/// end of the archive.
async fn submit_entry(
    sub: &mut Submitter<'_>,
    entry: Result<Option<Entry>, ArchiveError>,
    what: &str,
) -> Result<bool, ApiError> {
    match entry {
        Ok(None) => Ok(false),
        Ok(Some(Entry::File { name, bytes })) => sub.submit(&name, bytes).await.map(|()| true),
        Ok(Some(Entry::TooLarge { name, size })) => sub.too_large(&name, size).map(|()| true),
        Err(ArchiveError::Body(e)) => Err(multipart::BodyError::answer(e.as_ref())),
        Err(e) => Err(ApiError::bad_request(&format!("bad {what} body: {e}"))),
    }
}

/// A job's progress, as `GET /v1/batches/{id}` and the list report it.
fn progress_json(job: &Job) -> serde_json::Value {
    let p = job.progress();
    json!({
        "id": job.id,
        "total": p.total,
        "done": p.done,
        "failed": p.failed,
        "finished": p.finished(),
        "elapsed_s": job.created.elapsed().as_secs_f64(),
    })
}
