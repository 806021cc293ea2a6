//! The `/v1/batches` routes: submit a bulk job (multipart with many files, or a tar body),
//! read its progress, stream its results as NDJSON. A job is stored as it is read: its
//! manifest (`batch::Manifest`) is written after each group of requests is queued (and at
//! least every `MANIFEST_EVERY` while the upload goes on), a file rejected here gets its
//! result stored like a worker's, and the manifest is sealed before the answer; so every
//! item of a stored manifest gets a stored result, and any edge can serve the job. A crash
//! between queueing and writing leaves a few answered files outside the job, which says it
//! was cut off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request as HttpRequest, State};
use axum::response::Response;
use bytes::Bytes;
use facerec_contract::message::{input_key, result_key};
use facerec_contract::{ErrorKind, ImageError};
use facerec_contract::{Request, ResultMessage};
use facerec_seams::Bucket;
use futures_util::StreamExt;
use hyper::{HeaderMap, StatusCode};
use serde_json::json;

use crate::api::result_line;
use crate::archive::{Archive, ArchiveError, Entry, TarReader, ZipReader};
use crate::batch::{Job, Manifest, manifest_key};
use crate::collections::InCollection;
use crate::edge::Edge;
use crate::idempotency::{idempotency_key, keyed_id};
use crate::multipart;
use crate::response::{ApiError, Kind, json_response};
use crate::routes::{RequestId, Segment, Shared};

/// Requests queued per send call (SQS batches hold 10).
const SEND_BATCH: usize = 10;
/// Longest time between two writes of the manifest while an upload goes on.
const MANIFEST_EVERY: Duration = Duration::from_secs(5);
/// Results read at once when a job is loaded from the store.
const RESTORE_READS: usize = 16;
/// Stored jobs `GET /v1/batches` reads besides the ones in this edge's table.
const LIST_STORED: usize = 100;

/// Collects a job's requests and sends them ten at a time.
struct Submitter<'a> {
    edge: &'a Edge,
    job: Arc<Job>,
    /// The collection its images are matched against (`None`: the default one).
    collection: Option<String>,
    next: usize,
    /// Request id, file name and message body of each request not yet sent.
    queued: Vec<(String, String, String)>,
    /// Results of files rejected here, not yet stored.
    rejected: Vec<ResultMessage>,
    saved: Instant,
}

impl Submitter<'_> {
    /// The next item's request id, within the per-batch bound.
    fn next_id(&mut self) -> Result<String, ApiError> {
        let max = self.edge.config.max_batch_files;
        if self.next == max {
            return Err(ApiError::new(
                Kind::TooManyFiles,
                format!("at most {max} images per batch"),
            ));
        }
        self.next += 1;
        Ok(format!("{}-{}", self.job.id, self.next - 1))
    }

    /// The result of an item that failed here, before any worker saw it.
    fn error_result(&self, request_id: &str, filename: &str, error: ImageError) -> ResultMessage {
        ResultMessage {
            batch: Some(self.job.id.clone()),
            ..ResultMessage::error(request_id, filename, error)
        }
    }

    fn fail(&mut self, request_id: String, filename: &str, error: ImageError) {
        let r = self.error_result(&request_id, filename, error);
        self.edge
            .batches
            .add_failed(&self.job, request_id, result_line(&r));
        self.rejected.push(r);
    }

    /// Validates, stores and queues one image; a bad one becomes a failed item at once.
    async fn submit(&mut self, filename: &str, bytes: Bytes) -> Result<(), ApiError> {
        let request_id = self.next_id()?;
        if let Err(e) = facerec_contract::format::sniff(&bytes) {
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
        req.collection = self.collection.clone();
        self.edge.batches.add(&self.job, request_id.clone());
        self.queued
            .push((request_id, filename.to_string(), req.to_json()));
        if self.queued.len() >= SEND_BATCH || self.saved.elapsed() >= MANIFEST_EVERY {
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

    /// Queues the requests held and stores the rejected files' results, then the
    /// manifest (in that order: every item of a stored manifest is queued or has its
    /// result stored, so a job loaded from the store always finishes).
    async fn flush(&mut self) {
        let batch = std::mem::take(&mut self.queued);
        if !batch.is_empty() {
            let bodies = batch.iter().map(|(_, _, body)| body.clone()).collect();
            if let Err(e) = self.edge.seams.requests.send(bodies).await {
                tracing::warn!(batch = %self.job.id, error = %e, "queueing batch requests failed");
                for (id, filename, _) in batch {
                    let error =
                        ImageError::new(ErrorKind::Io, format!("queueing the request: {e}"));
                    let r = self.error_result(&id, &filename, error);
                    self.rejected.push(r.clone());
                    self.edge.batches.deliver(&id, result_line(&r), true);
                }
            }
        }
        for r in std::mem::take(&mut self.rejected) {
            self.edge.store_result(&r).await;
        }
        self.edge.save_manifest(&self.job.manifest()).await;
        self.saved = Instant::now();
    }
}

/// `POST /v1/batches`: a bulk job from a multipart, zip or tar body.
pub(crate) async fn create(
    State(edge): Shared,
    RequestId(rid): RequestId,
    c: InCollection,
    req: HttpRequest,
) -> Result<Response, ApiError> {
    edge.create_batch(req, &rid, c.name).await
}

/// `GET /v1/batches/{id}`: a job's progress.
pub(crate) async fn progress(
    State(edge): Shared,
    Segment(id): Segment,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = edge.job(&headers, &id).await?;
    Ok(json_response(StatusCode::OK, &progress_json(&job)))
}

/// `GET /v1/batches`: the jobs this edge holds and the `LIST_STORED` newest stored
/// ones (taken by other edges, or by this one before a restart; until their
/// retention), newest first. A stored job is read from its manifest alone when it
/// finished (its outcome is there), else loaded like `GET /v1/batches/{id}`.
pub(crate) async fn list(State(edge): Shared, headers: HeaderMap) -> Result<Response, ApiError> {
    edge.batch_list(&headers).await
}

/// `GET /v1/batches/{id}/results`: NDJSON, one line per image, streamed as results
/// arrive; ends when all are in.
pub(crate) async fn results(
    State(edge): Shared,
    Segment(id): Segment,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let job = edge.job(&headers, &id).await?;
    let body = Body::from_stream(job.stream().map(Ok::<_, std::convert::Infallible>));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .expect("valid response parts"))
}

impl Edge {
    async fn create_batch(
        &self,
        req: HttpRequest,
        rid: &str,
        collection: Option<String>,
    ) -> Result<Response, ApiError> {
        self.check_key(req.headers())?;
        let (parts, body) = req.into_parts();
        let content_type = parts
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        // With an `Idempotency-Key` the job's id comes from the key, so a client that lost
        // the connection knows its job and a retry finds it instead of making another.
        let id = match idempotency_key(&parts.headers)? {
            None => rid.to_string(),
            Some(key) => {
                let id = keyed_id(&key);
                let replayed = self.replay(&parts.headers, &id).await;
                if !matches!(replayed, Ok(None)) {
                    // Read the body the client sends anyway, so it gets the answer rather
                    // than a reset connection.
                    self.drain(body).await;
                    return replayed.map(|answer| answer.expect("an answer"));
                }
                id
            }
        };
        let Some(job) = self.batches.create(id.clone()) else {
            self.drain(body).await;
            return Err(ApiError::new(
                Kind::BatchExists,
                format!("batch {id} for this Idempotency-Key is being uploaded by another request"),
            ));
        };
        let mut sub = Submitter {
            edge: self,
            job: job.clone(),
            collection,
            next: 0,
            queued: Vec::new(),
            rejected: Vec::new(),
            saved: Instant::now(),
        };
        let read = if content_type.starts_with("multipart/form-data") {
            self.read_multipart(&parts.headers, body, &mut sub).await
        } else if content_type.starts_with("application/x-tar")
            || content_type.starts_with("application/tar")
        {
            self.read_archive(body, &mut sub, false).await
        } else if content_type.starts_with("application/zip")
            || content_type.starts_with("application/x-zip-compressed")
        {
            self.read_archive(body, &mut sub, true).await
        } else {
            Err(ApiError::new(
                Kind::UnsupportedBody,
                "a batch is multipart/form-data with image files, an application/zip or an \
                 application/x-tar body",
            ))
        };
        sub.flush().await;
        // A job whose upload broke off keeps what was stored, and says so; its id is the
        // one its Idempotency-Key names, else this request's (`x-request-id` of the error
        // answer).
        let cut_off = read.as_ref().err().map(|e| {
            format!(
                "the upload ended early ({}: {}); the job holds the {} files read before",
                e.kind,
                e.message,
                job.progress().total
            )
        });
        self.batches.seal(&job, cut_off);
        self.save_manifest(&job.manifest()).await;
        read?;
        let p = job.progress();
        if p.total == 0 {
            return Err(ApiError::bad_request("no image files in the batch"));
        }
        tracing::info!(batch = %job.id, total = p.total, rejected = p.failed, "batch accepted");
        let body = json!({"id": job.id, "total": p.total, "done": p.done, "failed": p.failed});
        Ok(json_response(StatusCode::ACCEPTED, &body))
    }

    async fn read_multipart(
        &self,
        headers: &HeaderMap,
        body: Body,
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

    /// A tar body (`zip` false) or a zip body, entry by entry.
    async fn read_archive(
        &self,
        body: Body,
        sub: &mut Submitter<'_>,
        zip: bool,
    ) -> Result<(), ApiError> {
        let frames = multipart::data_frames(body, self.config.read_timeout);
        let max_file = self.config.max_file_size as u64;
        let mut archive = if zip {
            Archive::Zip(ZipReader::new(frames, max_file))
        } else {
            Archive::Tar(TarReader::new(frames, max_file))
        };
        loop {
            let entry = archive.next_entry().await;
            if !submit_entry(sub, entry, archive.kind()).await? {
                return Ok(());
            }
        }
    }

    /// The answer to a `POST /v1/batches` whose `Idempotency-Key` names the job `id` that
    /// exists already: the job itself when its upload was complete (`200`, nothing read
    /// again), `409` while another request is still uploading it or when its upload was cut
    /// off (it holds only part of the files: post again under a new key). `None`: no such
    /// job yet.
    async fn replay(&self, headers: &HeaderMap, id: &str) -> Result<Option<Response>, ApiError> {
        let job = match self.job(headers, id).await {
            Ok(job) => job,
            Err(e) if e.kind == Kind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let p = job.progress();
        let conflict = |why: String| ApiError::new(Kind::BatchExists, why);
        if let Some(why) = p.cut_off {
            return Err(conflict(format!(
                "batch {id} for this Idempotency-Key was cut off ({why}); post again with another key"
            )));
        }
        if !p.sealed {
            return Err(conflict(format!(
                "batch {id} for this Idempotency-Key is still being uploaded"
            )));
        }
        tracing::info!(batch = id, "batch answered again for its Idempotency-Key");
        Ok(Some(json_response(StatusCode::OK, &progress_json(&job))))
    }

    /// Reads a request body to its end (or until it stalls), keeping nothing.
    async fn drain(&self, body: Body) {
        let mut frames = std::pin::pin!(multipart::data_frames(body, self.config.read_timeout));
        while let Some(Ok(_)) = frames.next().await {}
    }

    /// A job by id: in this edge's table, else loaded from the store (taken by another
    /// edge, or by this one before a restart).
    async fn job(&self, headers: &HeaderMap, id: &str) -> Result<Arc<Job>, ApiError> {
        self.check_key(headers)?;
        if let Some(job) = self.batches.get(id) {
            return Ok(job);
        }
        let not_found = || ApiError::not_found(format!("no batch {id}"));
        if id.is_empty() || id.contains(['/', '\\', '.']) {
            return Err(not_found());
        }
        let manifest = match self.load_manifest(id).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(not_found()),
            Err(e) => return Err(ApiError::unavailable(format!("reading the batch: {e}"))),
        };
        let results = self.stored_results(&manifest.items).await;
        tracing::info!(
            batch = id,
            total = manifest.items.len(),
            "batch loaded from the store"
        );
        Ok(self
            .batches
            .restore(&manifest, results, self.manifest_quiet()))
    }

    /// How long an unsealed manifest may stay unchanged before its upload counts as
    /// ended: the longest silence a live upload allows (`read_timeout`) twice, plus the
    /// manifest's own rhythm.
    pub(crate) fn manifest_quiet(&self) -> Duration {
        self.config.read_timeout * 2 + MANIFEST_EVERY * 2
    }

    /// A job's stored manifest; `None` where there is none, or where the job is past its
    /// retention (`Manifest::past`).
    pub(crate) async fn load_manifest(&self, id: &str) -> Result<Option<Manifest>, String> {
        match self.seams.store.get(Bucket::Out, &manifest_key(id)).await {
            Ok(body) => Manifest::parse(&body)
                .map(|m| (!m.past(self.config.job_retention)).then_some(m))
                .map_err(|e| format!("manifest of {id}: {e}")),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Each item's stored result as (NDJSON line, failed), `None` where there is none yet.
    pub(crate) async fn stored_results(&self, ids: &[String]) -> Vec<Option<(String, bool)>> {
        futures_util::stream::iter(ids.iter().cloned())
            .map(|id| async move {
                let body = self
                    .seams
                    .store
                    .get(Bucket::Out, &result_key(&id))
                    .await
                    .ok()?;
                let r = ResultMessage::parse(&body).ok()?;
                Some((result_line(&r), r.error.is_some()))
            })
            .buffered(RESTORE_READS)
            .collect()
            .await
    }

    /// Writes a job's manifest; a failure is logged (the job still runs here, and the
    /// next write may succeed) and returned as false.
    pub(crate) async fn save_manifest(&self, m: &Manifest) -> bool {
        match self
            .seams
            .store
            .put(Bucket::Out, &manifest_key(&m.id), m.to_bytes())
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(batch = %m.id, error = %e, "storing the batch manifest failed");
                false
            }
        }
    }

    /// Stores the result of a file rejected here, where a worker would have put it.
    async fn store_result(&self, r: &ResultMessage) {
        let body = Bytes::from(r.to_json());
        if let Err(e) = self
            .seams
            .store
            .put_if_absent(Bucket::Out, &result_key(&r.request_id), body)
            .await
        {
            tracing::warn!(request_id = %r.request_id, error = %e, "storing a rejected file's result failed");
        }
    }

    async fn batch_list(&self, headers: &HeaderMap) -> Result<Response, ApiError> {
        self.check_key(headers)?;
        let mut jobs: Vec<(u64, serde_json::Value)> = self
            .batches
            .newest_first()
            .iter()
            .map(|j| (j.created_ms(), progress_json(j)))
            .collect();
        let mut stored = self
            .seams
            .store
            .list(Bucket::Out, "batches/")
            .await
            .map_err(|e| ApiError::unavailable(format!("listing the batches: {e}")))?;
        stored.sort_by_key(|l| std::cmp::Reverse(l.modified));
        for listed in stored.into_iter().take(LIST_STORED) {
            let Some(id) = listed
                .key
                .strip_prefix("batches/")
                .and_then(|k| k.strip_suffix(".json"))
            else {
                continue;
            };
            if self.batches.get(id).is_some() {
                continue;
            }
            let Ok(Some(m)) = self.load_manifest(id).await else {
                continue;
            };
            let entry = match m.outcome {
                Some(o) if m.sealed => manifest_json(&m, o),
                _ => {
                    let results = self.stored_results(&m.items).await;
                    let job = self.batches.restore(&m, results, self.manifest_quiet());
                    progress_json(&job)
                }
            };
            jobs.push((m.created_ms, entry));
        }
        jobs.sort_by_key(|j| std::cmp::Reverse(j.0));
        let jobs: Vec<serde_json::Value> = jobs.into_iter().map(|(_, v)| v).collect();
        Ok(json_response(StatusCode::OK, &json!({ "batches": jobs })))
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
        Err(e) => Err(ApiError::bad_request(format!("bad {what} body: {e}"))),
    }
}

/// A finished stored job as the list reports it, from its manifest alone.
fn manifest_json(m: &Manifest, o: crate::batch::Outcome) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut v = json!({
        "id": m.id,
        "total": m.items.len(),
        "done": o.done,
        "failed": o.failed,
        "sealed": true,
        "finished": true,
        "elapsed_s": now.saturating_sub(m.created_ms) as f64 / 1000.0,
    });
    if let Some(why) = &m.cut_off {
        v["cut_off"] = json!(why);
    }
    v
}

/// A job's progress, as `GET /v1/batches/{id}` and the list report it.
fn progress_json(job: &Job) -> serde_json::Value {
    let p = job.progress();
    let mut v = json!({
        "id": job.id,
        "total": p.total,
        "done": p.done,
        "failed": p.failed,
        "sealed": p.sealed,
        "finished": p.finished(),
        "elapsed_s": job.created.elapsed().as_secs_f64(),
    });
    if let Some(why) = p.cut_off {
        v["cut_off"] = json!(why);
    }
    v
}
