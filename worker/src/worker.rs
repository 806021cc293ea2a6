//! The worker loop.
//!
//! ```text
//!  pollers (N, long poll, ≤10/receive) ──► per-message task: parse, dedupe, fetch upload
//!                                                   │ Job
//!                                                   ▼
//!            batcher: fill up to max_batch or batch_wait, whichever first
//!                                                   │ one engine call (rayon decode, Burn)
//!                                                   ▼
//!            finisher: put result (if absent) ─► send responses (batch) ─► ack (batch)
//! ```
//!
//! Delivery is at-least-once and a message is acknowledged only after its result is
//! durably written and its response sent. A result is written once per request id: a
//! redelivered message finds the stored result and answers with it again instead of
//! computing a new one. Messages that cannot succeed (malformed, missing upload after
//! `max_retries` deliveries, undecodable image) get an error result *and* a dead-letter
//! record with the reason. A heartbeat extends the visibility of everything held; on
//! shutdown, polling stops, held work finishes within a grace period and the rest is
//! released (visibility 0) for other workers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use facerec_engine::report;
use facerec_engine::{Engine, ErrorKind, ImageError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use facerec_contract::message::{DeadLetter, Request, ResultMessage, VERSION, result_key};
use facerec_seams::gallery::GalleryHandle;
use facerec_seams::metrics::{Metrics, dlq_reason};
use facerec_seams::queue::{MAX_BATCH, Received};
use facerec_seams::store::Bucket;
use facerec_seams::{SeamError, Seams};

use crate::compute::{self, Compute};

/// Worker settings. Defaults follow the original design's `.env` (`VISIBILITY_TIMEOUT`
/// 300 s, `MAX_RETRIES` 3, `RETRY_DELAY` 2 s).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Name in logs.
    pub name: String,
    /// Concurrent long-polling receivers.
    pub pollers: usize,
    /// Long-poll wait per receive (SQS allows up to 20 s).
    pub wait: Duration,
    /// Largest engine batch.
    pub max_batch: usize,
    /// How long the batcher waits for more images once it has one.
    pub batch_wait: Duration,
    /// Most request messages held at once (received and not yet answered).
    pub max_in_hand: usize,
    /// The request queue's visibility timeout; held messages are extended before it ends.
    pub visibility: Duration,
    /// Deliveries after which a failing message is dead-lettered.
    pub max_retries: u32,
    /// Base delay before a failed message is tried again (doubles per delivery).
    pub retry_delay: Duration,
    /// Consecutive queue/store failures that pause polling (circuit open).
    pub breaker_after: u32,
    /// Consecutive queue/store failures after which the worker gives up (exit non-zero).
    pub max_consecutive_failures: u32,
    /// The same-person rule.
    pub threshold: facerec_contract::Threshold,
    /// On shutdown, how long held work may take before it is released.
    pub shutdown_grace: Duration,
    /// How often to check the stored gallery for changes (`None`: never).
    pub gallery_refresh: Option<Duration>,
    /// Delete an upload once its result is stored and answered (`facerec up`; on AWS the
    /// input bucket keeps uploads, as the original design's did, for a lifecycle rule).
    /// Dead-lettered uploads stay for inspection.
    pub delete_uploads: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            name: "worker".into(),
            pollers: 2,
            wait: Duration::from_secs(20),
            max_batch: 32,
            batch_wait: Duration::from_millis(10),
            max_in_hand: 96,
            visibility: Duration::from_secs(300),
            max_retries: 3,
            retry_delay: Duration::from_secs(2),
            breaker_after: 3,
            max_consecutive_failures: 50,
            threshold: facerec_contract::Threshold::DEFAULT,
            shutdown_grace: Duration::from_secs(30),
            gallery_refresh: Some(Duration::from_secs(10)),
            delete_uploads: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("giving up after {count} consecutive failed polls; last error: {last}")]
    TooManyFailures { count: u32, last: String },
}

/// A request ready for the engine.
struct Job {
    msg: Received,
    req: Request,
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
}

/// Pauses polling after consecutive failures, with a doubling cool-down.
struct Breaker {
    /// Failed operations of any kind since the last success (opens the circuit).
    consecutive: AtomicU32,
    /// Failed receives since the last success: the measure of an outage that makes the
    /// worker give up. Concurrent operations failing together count once per poll.
    failed_polls: AtomicU32,
    open_until: Mutex<Option<Instant>>,
    last: Mutex<String>,
}

const BREAKER_MIN: Duration = Duration::from_millis(500);
const BREAKER_MAX: Duration = Duration::from_secs(30);

pub struct Worker {
    compute: Compute,
    gallery: Arc<GalleryHandle>,
    seams: Seams,
    config: WorkerConfig,
    metrics: Metrics,
    /// Receipts held, with when their visibility was last extended.
    in_hand: Mutex<HashMap<String, Instant>>,
    breaker: Breaker,
    /// Cancelled when the worker must stop on its own (too many failures).
    fatal: CancellationToken,
    jobs: mpsc::Sender<Job>,
    jobs_rx: Mutex<Option<mpsc::Receiver<Job>>>,
    permits: Arc<Semaphore>,
}

impl Worker {
    pub fn new(
        compute: Compute,
        gallery: Arc<GalleryHandle>,
        seams: Seams,
        config: WorkerConfig,
        metrics: Metrics,
    ) -> Arc<Self> {
        let (jobs, rx) = mpsc::channel(config.max_in_hand.max(1));
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(config.max_in_hand.max(MAX_BATCH))),
            compute,
            gallery,
            seams,
            config,
            metrics,
            in_hand: Mutex::new(HashMap::new()),
            breaker: Breaker {
                consecutive: AtomicU32::new(0),
                failed_polls: AtomicU32::new(0),
                open_until: Mutex::new(None),
                last: Mutex::new(String::new()),
            },
            fatal: CancellationToken::new(),
            jobs,
            jobs_rx: Mutex::new(Some(rx)),
        })
    }

    /// Request messages this worker holds now (received, not yet deleted or released).
    pub fn in_hand(&self) -> usize {
        lock(&self.in_hand).len()
    }

    /// Runs until `shutdown` is cancelled (then finishes or releases what it holds and
    /// returns Ok) or until too many consecutive failures (returns the error).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let rx = lock(&self.jobs_rx)
            .take()
            .expect("Worker::run is called once");
        let stop = CancellationToken::new();
        let mut background = Vec::new();
        background.push(tokio::spawn(self.clone().batcher(rx)));
        background.push(tokio::spawn(self.clone().heartbeat(stop.clone())));
        if let Some(every) = self.config.gallery_refresh {
            background.push(tokio::spawn(
                self.clone().gallery_refresher(every, stop.clone()),
            ));
        }
        if let Err(e) = self.gallery.refresh(self.seams.store.as_ref()).await {
            tracing::warn!(error = %e, "gallery not loaded");
        }
        self.prepare_gallery().await;
        self.metrics
            .gallery_faces
            .set(self.gallery.get().len() as i64);
        tracing::info!(worker = %self.config.name, pollers = self.config.pollers, max_batch = self.config.max_batch, "worker started");

        let pollers: Vec<_> = (0..self.config.pollers.max(1))
            .map(|i| tokio::spawn(self.clone().poller(i, shutdown.clone())))
            .collect();
        for p in pollers {
            let _ = p.await;
        }

        // Finish what is held, within the grace period; release the rest.
        tracing::info!(
            worker = %self.config.name,
            held = lock(&self.in_hand).len(),
            grace_s = self.config.shutdown_grace.as_secs_f64(),
            "stopping: polling stopped, finishing held work within the grace period"
        );
        let grace_end = Instant::now() + self.config.shutdown_grace;
        while !lock(&self.in_hand).is_empty() && Instant::now() < grace_end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<String> = lock(&self.in_hand).keys().cloned().collect();
        if !left.is_empty() {
            tracing::warn!(count = left.len(), "releasing unfinished messages");
            Metrics::count(&self.metrics.messages, "result", "released");
            if let Err(e) = self
                .seams
                .requests
                .set_visibility(left.clone(), Duration::ZERO)
                .await
            {
                tracing::warn!(error = %e, "could not release messages; they reappear after the visibility timeout");
            }
            for receipt in &left {
                self.unhold(receipt);
            }
        }
        stop.cancel();
        for b in background {
            b.abort();
        }
        tracing::info!(worker = %self.config.name, "worker stopped");
        if self.fatal.is_cancelled() {
            let count = self.breaker.failed_polls.load(Ordering::Relaxed);
            let last = lock(&self.breaker.last).clone();
            return Err(WorkerError::TooManyFailures { count, last });
        }
        Ok(())
    }

    async fn poller(self: Arc<Self>, index: usize, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() || self.fatal.is_cancelled() {
                return;
            }
            let open_until = *lock(&self.breaker.open_until);
            if let Some(until) = open_until {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = shutdown.cancelled() => return,
                    () = self.fatal.cancelled() => return,
                }
            }
            // Only receive what we have room for.
            let permits = tokio::select! {
                p = self.permits.clone().acquire_many_owned(MAX_BATCH as u32) => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                () = shutdown.cancelled() => return,
                () = self.fatal.cancelled() => return,
            };
            let received = tokio::select! {
                r = self.seams.requests.receive(MAX_BATCH, self.config.wait) => r,
                () = shutdown.cancelled() => return,
                () = self.fatal.cancelled() => return,
            };
            match received {
                Ok(msgs) => {
                    self.success();
                    let mut permits = permits;
                    for msg in msgs {
                        let permit = permits
                            .split(1)
                            .expect("at most MAX_BATCH messages per receive");
                        self.hold(&msg.receipt);
                        tokio::spawn(self.clone().handle(msg, permit));
                    }
                }
                Err(e) => {
                    tracing::warn!(poller = index, error = %e, "receive failed");
                    self.failure("receive", &e);
                }
            }
        }
    }

    /// Parses, deduplicates and fetches one message; hands it to the batcher or
    /// finishes it here.
    async fn handle(self: Arc<Self>, msg: Received, permit: OwnedSemaphorePermit) {
        let req = match Request::parse(&msg.body) {
            Ok(r) => r,
            Err(reason) => {
                let result = Request::salvage_id(&msg.body).map(|(id, filename)| {
                    ResultMessage::error(
                        &id,
                        &filename,
                        ImageError::new(ErrorKind::Io, format!("malformed request: {reason}")),
                    )
                });
                self.dead_letter(&msg, dlq_reason::MALFORMED, &reason, result)
                    .await;
                return;
            }
        };
        // Answered before (a redelivery or a duplicate send): answer the same again.
        match self
            .seams
            .store
            .get(Bucket::Out, &result_key(&req.request_id))
            .await
        {
            Ok(existing) => {
                self.success();
                match ResultMessage::parse(&existing) {
                    Ok(r) => {
                        tracing::info!(request_id = %req.request_id, "duplicate delivery answered from the stored result");
                        Metrics::count(&self.metrics.messages, "result", "duplicate");
                        let answered = self.respond_and_ack(vec![(msg, r.to_json())], None).await;
                        if answered && self.config.delete_uploads && r.error.is_none() {
                            // Left over when the process stopped between answer and delete.
                            let _ = self.seams.store.delete(Bucket::In, &req.key).await;
                        }
                    }
                    Err(e) => self.retry_later(&msg, &e).await,
                }
                return;
            }
            Err(SeamError::NotFound(_)) => {}
            Err(e) => {
                self.failure("get_result", &e);
                self.back_off(&msg, &e.to_string()).await;
                return;
            }
        }

        let t = std::time::Instant::now();
        match self.seams.store.get(Bucket::In, &req.key).await {
            Ok(bytes) => {
                self.success();
                self.metrics.stage("io", t.elapsed());
                let job = Job {
                    msg,
                    req,
                    bytes,
                    _permit: permit,
                };
                if let Err(mpsc::error::SendError(job)) = self.jobs.send(job).await {
                    // Only while shutting down.
                    self.release(&job.msg).await;
                }
            }
            Err(SeamError::NotFound(e)) => {
                if msg.receive_count >= self.config.max_retries {
                    let err = ImageError::new(
                        ErrorKind::Io,
                        format!("the upload {} does not exist", req.key),
                    );
                    let result = ResultMessage::error_for(&req, err);
                    self.dead_letter(&msg, dlq_reason::MISSING_OBJECT, &e, Some(result))
                        .await;
                } else {
                    self.retry_later(&msg, &e).await;
                }
            }
            Err(e @ SeamError::Permanent(_)) => {
                self.failure("get_upload", &e);
                self.retry_later(&msg, &e.to_string()).await;
            }
            Err(e) => {
                self.failure("get_upload", &e);
                self.back_off(&msg, &e.to_string()).await;
            }
        }
    }

    /// Forms batches from the jobs in arrival order and queues each on the engine threads
    /// at once (up to one per engine thread outstanding), so jobs never wait here while an
    /// engine thread is free and batches run in the order their jobs arrived.
    async fn batcher(self: Arc<Self>, mut rx: mpsc::Receiver<Job>) {
        let outstanding = Arc::new(Semaphore::new(self.compute.threads()));
        while let Some(first) = rx.recv().await {
            let Ok(permit) = outstanding.clone().acquire_owned().await else {
                return;
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.config.batch_wait;
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(job) => {
                        batch.push(job);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {}
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
            let worker = self.clone();
            let inputs: Vec<Bytes> = batch.iter().map(|j| j.bytes.clone()).collect();
            let reqs: Vec<Request> = batch.iter().map(|j| j.req.clone()).collect();
            let pending = self
                .compute
                .submit(move |engine| worker.recognize(engine, &inputs, &reqs));
            let worker = self.clone();
            tokio::spawn(async move {
                let results = match pending {
                    Ok(p) => compute::answer(p).await,
                    Err(e) => Err(e),
                }
                .unwrap_or_else(|e| {
                    let err = ImageError::new(ErrorKind::Inference, format!("engine task: {e}"));
                    batch_errors(&batch, &err)
                });
                drop(permit);
                // Responses and acks overlap with the next engine batch.
                worker.finish(batch, results).await;
            });
        }
    }

    /// Runs the engine on one batch and matches the faces (blocking).
    fn recognize(&self, engine: &Engine, inputs: &[Bytes], reqs: &[Request]) -> Vec<ResultMessage> {
        let slices: Vec<&[u8]> = inputs.iter().map(|b| b.as_ref()).collect();
        let (analyses, times) = engine.analyze(&slices);
        let m = &self.metrics;
        m.batch_size.observe(slices.len() as f64);
        m.stage("decode", times.decode);
        m.stage("detect", times.detect);
        m.stage("align", times.align);
        m.stage("embed", times.embed);
        let t = std::time::Instant::now();
        let gallery = self.gallery.get();
        let results: Vec<_> = analyses.iter().map(Result::as_ref).collect();
        // Every face of every image in one search.
        let matches = report::match_faces(engine.matcher(), Some(&gallery), &results);
        let out = results
            .into_iter()
            .zip(matches)
            .zip(reqs)
            .map(|((a, found), req)| {
                let rep = report::report(
                    &req.filename,
                    a,
                    found,
                    self.config.threshold,
                    req.embeddings,
                );
                let size = a.ok().map(|a| (a.width, a.height));
                ResultMessage::from_report(req, rep, size)
            })
            .collect();
        m.stage("match", t.elapsed());
        out
    }

    /// Stores results, sends responses and dead letters, acknowledges.
    async fn finish(self: Arc<Self>, batch: Vec<Job>, results: Vec<ResultMessage>) {
        let mut answered = Vec::new();
        let mut dead = Vec::new();
        for (job, result) in batch.into_iter().zip(results) {
            match &result.error {
                Some(e) if e.kind == ErrorKind::Inference => {
                    // The engine failed, not the image: try again later.
                    Metrics::count(&self.metrics.images, "outcome", "inference_error");
                    self.retry_later(&job.msg, &e.message).await;
                    continue;
                }
                Some(e) => {
                    Metrics::count(&self.metrics.images, "outcome", e.kind.as_str());
                    dead.push((job.msg.clone(), e.kind.as_str(), e.message.clone()));
                }
                None => {
                    Metrics::count(&self.metrics.images, "outcome", "ok");
                    let faces = result.faces.as_ref().map_or(0, Vec::len);
                    self.metrics.faces.inc_by(faces as u64);
                }
            }
            tracing::info!(
                request_id = %result.request_id,
                name = result.name.as_deref().unwrap_or(""),
                error = result.error.as_ref().map(|e| e.kind.as_str()).unwrap_or(""),
                receive_count = job.msg.receive_count,
                "recognized"
            );
            answered.push((job, result));
        }
        // Results are written concurrently, each only if absent.
        let t = std::time::Instant::now();
        let writes = answered.iter().map(|(_, r)| self.store_result(r));
        let stored = futures_util::future::join_all(writes).await;
        self.metrics.stage("io", t.elapsed());
        let mut to_send = Vec::new();
        let mut uploads = Vec::new();
        for ((job, _), body) in answered.into_iter().zip(stored) {
            match body {
                Ok(body) => {
                    uploads.push((job.msg.receipt.clone(), job.req.key.clone()));
                    to_send.push((job.msg, body));
                }
                Err(e) => {
                    self.failure("put_result", &e);
                    self.back_off(&job.msg, &e.to_string()).await;
                }
            }
        }
        if !dead.is_empty() {
            let receipts_ok: Vec<&str> = to_send.iter().map(|(m, _)| m.receipt.as_str()).collect();
            dead.retain(|(m, _, _)| receipts_ok.contains(&m.receipt.as_str()));
            uploads.retain(|(r, _)| !dead.iter().any(|(m, _, _)| &m.receipt == r));
        }
        let answered = self.respond_and_ack(to_send, Some(dead)).await;
        if self.config.delete_uploads && answered {
            // The result is durable and answered: the upload is no longer needed (a
            // redelivery finds the result first). A failed delete leaves it to retention.
            let deletes = uploads
                .iter()
                .map(|(_, key)| self.seams.store.delete(Bucket::In, key));
            for (r, (_, key)) in futures_util::future::join_all(deletes)
                .await
                .iter()
                .zip(&uploads)
            {
                if let Err(e) = r {
                    tracing::warn!(key, error = %e, "deleting an answered upload failed");
                }
            }
        }
    }

    /// Writes a result unless one exists; returns the stored body either way.
    async fn store_result(&self, result: &ResultMessage) -> Result<String, SeamError> {
        let key = result_key(&result.request_id);
        let body = result.to_json();
        if self
            .seams
            .store
            .put_if_absent(Bucket::Out, &key, Bytes::from(body.clone()))
            .await?
        {
            Ok(body)
        } else {
            let existing = self.seams.store.get(Bucket::Out, &key).await?;
            String::from_utf8(existing.to_vec())
                .map_err(|_| SeamError::Permanent(format!("{key} is not UTF-8")))
        }
    }

    /// Sends responses (and dead letters) for stored results, then acknowledges; false
    /// when the responses could not be sent (the messages are retried).
    async fn respond_and_ack(
        &self,
        done: Vec<(Received, String)>,
        dead: Option<Vec<(Received, &'static str, String)>>,
    ) -> bool {
        if done.is_empty() {
            return false;
        }
        let bodies: Vec<String> = done.iter().map(|(_, b)| b.clone()).collect();
        if let Err(e) = self.seams.responses.send(bodies).await {
            self.failure("send_response", &e);
            for (m, _) in &done {
                self.back_off(m, &e.to_string()).await;
            }
            return false;
        }
        if let Some(dead) = dead.filter(|d| !d.is_empty()) {
            let letters: Vec<String> = dead
                .iter()
                .map(|(m, reason, message)| dead_letter_body(m, reason, message))
                .collect();
            if let Err(e) = self.seams.dead_letters.send(letters).await {
                // The result is stored and answered; the record of the bad input is
                // best-effort beyond this point.
                self.failure("send_dead_letter", &e);
            } else {
                for (_, reason, _) in &dead {
                    Metrics::count(&self.metrics.dlq, "reason", reason);
                }
            }
        }
        self.ack(done.into_iter().map(|(m, _)| m).collect()).await;
        true
    }

    async fn ack(&self, msgs: Vec<Received>) {
        let receipts: Vec<String> = msgs.iter().map(|m| m.receipt.clone()).collect();
        match self.seams.requests.ack(receipts).await {
            Ok(()) => {
                self.success();
                for m in &msgs {
                    Metrics::count(&self.metrics.messages, "result", "answered");
                    self.unhold(&m.receipt);
                }
            }
            Err(e) => {
                // Not acknowledged: the message comes back and is answered from the
                // stored result.
                self.failure("ack", &e);
                for m in &msgs {
                    self.unhold(&m.receipt);
                }
            }
        }
    }

    /// Gives up on a message: error result to the client (when we know who asked),
    /// dead-letter record with the reason, acknowledgement.
    async fn dead_letter(
        &self,
        msg: &Received,
        reason: &'static str,
        message: &str,
        result: Option<ResultMessage>,
    ) {
        tracing::warn!(message_id = %msg.message_id, reason, detail = message, "dead-lettering");
        if let Some(result) = result {
            match self.store_result(&result).await {
                Ok(body) => {
                    self.respond_and_ack(
                        vec![(msg.clone(), body)],
                        Some(vec![(msg.clone(), reason, message.to_string())]),
                    )
                    .await;
                }
                Err(e) => {
                    self.failure("put_result", &e);
                    self.back_off(msg, &e.to_string()).await;
                }
            }
            return;
        }
        let letter = dead_letter_body(msg, reason, message);
        match self.seams.dead_letters.send(vec![letter]).await {
            Ok(()) => {
                Metrics::count(&self.metrics.dlq, "reason", reason);
                self.ack(vec![msg.clone()]).await;
            }
            Err(e) => {
                self.failure("send_dead_letter", &e);
                self.back_off(msg, &e.to_string()).await;
            }
        }
    }

    /// A failure of this message (not of the infrastructure): tried again after a
    /// backoff, dead-lettered with an error result once delivered `max_retries` times.
    async fn retry_later(&self, msg: &Received, why: &str) {
        if msg.receive_count >= self.config.max_retries {
            let result = Request::parse(&msg.body).ok().map(|req| {
                let why = format!("gave up after {} attempts: {why}", msg.receive_count);
                ResultMessage::error_for(&req, ImageError::new(ErrorKind::Io, why))
            });
            self.dead_letter(msg, dlq_reason::RETRIES_EXHAUSTED, why, result)
                .await;
        } else {
            self.back_off(msg, why).await;
        }
    }

    /// Hands a message back to be delivered again after a backoff (doubling per
    /// delivery). Used for transient failures, which never dead-letter a message
    /// themselves: the circuit breaker keeps an outage from burning deliveries, and
    /// the queue's redrive policy is the last resort.
    async fn back_off(&self, msg: &Received, why: &str) {
        let exp = msg.receive_count.saturating_sub(1).min(10);
        let backoff = (self.config.retry_delay * 2u32.pow(exp)).min(self.config.visibility);
        tracing::info!(message_id = %msg.message_id, receive_count = msg.receive_count, backoff_s = backoff.as_secs_f32(), reason = why, "will retry");
        Metrics::count(&self.metrics.messages, "result", "retried");
        if let Err(e) = self
            .seams
            .requests
            .set_visibility(vec![msg.receipt.clone()], backoff)
            .await
        {
            // It reappears after the visibility timeout instead.
            self.failure("visibility", &e);
        }
        self.unhold(&msg.receipt);
    }

    async fn release(&self, msg: &Received) {
        let _ = self
            .seams
            .requests
            .set_visibility(vec![msg.receipt.clone()], Duration::ZERO)
            .await;
        self.unhold(&msg.receipt);
    }

    async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        let period = (self.config.visibility / 3).max(Duration::from_millis(200));
        loop {
            tokio::select! {
                () = tokio::time::sleep(period / 2) => {}
                () = stop.cancelled() => return,
            }
            let now = Instant::now();
            let due: Vec<String> = {
                let mut held = lock(&self.in_hand);
                held.iter_mut()
                    .filter(|(_, t)| now.duration_since(**t) >= period)
                    .map(|(r, t)| {
                        *t = now;
                        r.clone()
                    })
                    .collect()
            };
            if due.is_empty() {
                continue;
            }
            tracing::debug!(count = due.len(), "extending visibility");
            if let Err(e) = self
                .seams
                .requests
                .set_visibility(due, self.config.visibility)
                .await
            {
                self.failure("heartbeat", &e);
            }
        }
    }

    async fn gallery_refresher(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            match self.gallery.refresh(self.seams.store.as_ref()).await {
                Ok(true) => {
                    self.metrics
                        .gallery_faces
                        .set(self.gallery.get().len() as i64);
                    self.prepare_gallery().await;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "gallery refresh failed"),
            }
        }
    }

    /// Puts the current gallery on the matcher's device (when it searches there) before
    /// the next batch needs it; otherwise the first batch of a new version uploads it.
    async fn prepare_gallery(&self) {
        let gallery = self.gallery.get();
        let _ = self
            .compute
            .run(move |engine| engine.matcher().prepare(&gallery))
            .await;
    }

    fn hold(&self, receipt: &str) {
        let mut held = lock(&self.in_hand);
        if held.insert(receipt.to_string(), Instant::now()).is_none() {
            self.metrics.in_flight.inc();
        }
    }

    fn unhold(&self, receipt: &str) {
        let mut held = lock(&self.in_hand);
        if held.remove(receipt).is_some() {
            self.metrics.in_flight.dec();
        }
    }

    fn success(&self) {
        self.breaker.failed_polls.store(0, Ordering::Relaxed);
        if self.breaker.consecutive.swap(0, Ordering::Relaxed) >= self.config.breaker_after {
            tracing::info!("circuit closed");
        }
        *lock(&self.breaker.open_until) = None;
        self.metrics.circuit_open.set(0);
    }

    fn failure(&self, op: &'static str, e: &SeamError) {
        Metrics::count(&self.metrics.seam_errors, "op", op);
        let n = self.breaker.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&self.breaker.last) = format!("{op}: {e}");
        let polls = if op == "receive" {
            self.breaker.failed_polls.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.breaker.failed_polls.load(Ordering::Relaxed)
        };
        if polls >= self.config.max_consecutive_failures {
            tracing::error!(failed_polls = polls, error = %e, "too many consecutive failures, stopping");
            self.fatal.cancel();
        } else if n >= self.config.breaker_after {
            let exp = (n - self.config.breaker_after).min(6);
            let cool = (BREAKER_MIN * 2u32.pow(exp)).min(BREAKER_MAX);
            tracing::warn!(failures = n, cool_down_s = cool.as_secs_f32(), error = %e, "circuit open: pausing polling");
            *lock(&self.breaker.open_until) = Some(Instant::now() + cool);
            self.metrics.circuit_open.set(1);
        }
    }
}

fn dead_letter_body(msg: &Received, reason: &str, message: &str) -> String {
    serde_json::to_string(&DeadLetter {
        v: VERSION,
        reason: reason.to_string(),
        message: message.to_string(),
        receive_count: msg.receive_count,
        body: msg.body.clone(),
    })
    .expect("a dead letter always serialises")
}

fn batch_errors(batch: &[Job], err: &ImageError) -> Vec<ResultMessage> {
    batch
        .iter()
        .map(|j| ResultMessage::error(&j.req.request_id, &j.req.filename, err.clone()))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
