//! facerec's web tier.
//!
//! Every upload gets a request id (a UUID, also the `x-request-id` header), is stored in
//! the input bucket under a key derived from that id, and becomes one request message.
//! Answers come back on the response queue and are matched to the waiting HTTP request
//! by request id, never by file name, so two clients uploading `test_000.jpg` at once
//! each get their own answer. If a response message is missed (another edge took it),
//! the waiter finds the result in the output bucket, where every result is stored.

mod api;
pub mod archive;
pub mod batch;
mod batch_api;
pub mod metrics;
mod multipart;
mod page;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use facerec_contract::message::{input_key, result_key};
use facerec_contract::{Request, ResultMessage};
use facerec_seams::{Bucket, GalleryHandle, Seams};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use api::ApiError;
pub use metrics::EdgeMetrics;

/// Edge settings; defaults are the original design's (`REQUEST_TIMEOUT` 60 s,
/// `MAX_FILE_SIZE` 10485760 bytes).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub request_timeout: Duration,
    pub max_file_size: usize,
    /// Most files in one multipart request.
    pub max_files: usize,
    /// Uploads being processed at once; beyond that, 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// When set, gallery changes and batches need `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub threshold: facerec_contract::Threshold,
    /// How often a waiter also looks for its result in the output bucket.
    pub result_poll: Duration,
    /// Concurrent receivers on the response queue.
    pub response_pollers: usize,
    /// Long-poll wait on the response queue.
    pub response_wait: Duration,
    /// Most images in one bulk batch.
    pub max_batch_files: usize,
    /// Longest wait for a request's headers (an idle keep-alive connection included) and
    /// between two pieces of its body; past it, the connection closes (headers) or the
    /// request answers 408 (body).
    pub read_timeout: Duration,
    /// How long a finished bulk job stays listed (its results stay in the output bucket
    /// for the store's own retention).
    pub job_retention: Duration,
    /// On shutdown, how long open requests are still answered; then the ones still
    /// waiting answer 503.
    pub drain: Duration,
    /// Most open client connections; past it a new connection gets 503 and is closed.
    pub max_connections: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(60),
            max_file_size: 10_485_760,
            max_files: 100,
            max_in_flight: 512,
            api_key: None,
            threshold: facerec_contract::Threshold::DEFAULT,
            result_poll: Duration::from_secs(3),
            response_pollers: 2,
            response_wait: Duration::from_secs(20),
            max_batch_files: 10_000,
            read_timeout: Duration::from_secs(30),
            job_retention: Duration::from_secs(7 * 24 * 3600),
            drain: Duration::from_secs(10),
            max_connections: 10_000,
        }
    }
}

pub struct Edge {
    config: EdgeConfig,
    seams: Seams,
    gallery: Arc<GalleryHandle>,
    pending: Mutex<HashMap<String, oneshot::Sender<ResultMessage>>>,
    uploads: Arc<Semaphore>,
    metrics: EdgeMetrics,
    registry: Arc<Registry>,
    batches: batch::Batches,
    /// Cancelled when the drain time after a shutdown is over: waiters answer 503.
    closing: CancellationToken,
    /// Set on the shutdown signal: new requests answer 503.
    draining: std::sync::atomic::AtomicBool,
    /// One permit per open connection (`max_connections`).
    connections: Arc<Semaphore>,
}

impl Edge {
    pub fn new(
        config: EdgeConfig,
        seams: Seams,
        gallery: Arc<GalleryHandle>,
        metrics: EdgeMetrics,
        registry: Arc<Registry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            uploads: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            seams,
            gallery,
            pending: Mutex::new(HashMap::new()),
            metrics,
            registry,
            batches: batch::Batches::default(),
            closing: CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Serves HTTP on `listener` until `shutdown`, then lets open requests finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        for _ in 0..self.config.response_pollers.max(1) {
            tokio::spawn(self.clone().dispatch_responses(shutdown.clone()));
        }
        tokio::spawn(self.clone().sweep_batches(shutdown.clone()));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let drain = self.config.drain;
        // After the shutdown signal: connections are still accepted (nothing queued in the
        // kernel is reset) but every new request answers 503, while the open ones are
        // answered until the drain time is over or none is left.
        let mut drain_end: Option<Instant> = None;
        let (mut refused, mut last_refusal_log) = (0u64, None::<Instant>);
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled(), if drain_end.is_none() => {
                    tracing::info!(
                        waiting = lock(&self.pending).len(),
                        drain_s = drain.as_secs_f64(),
                        "shutting down: new requests answer 503, open ones are answered within the drain time"
                    );
                    self.draining.store(true, std::sync::atomic::Ordering::Relaxed);
                    drain_end = Some(Instant::now() + drain);
                    continue;
                }
                () = tokio::time::sleep_until(drain_end.unwrap_or_else(Instant::now)), if drain_end.is_some() => {
                    tracing::warn!(
                        unanswered = lock(&self.pending).len(),
                        "drain time over: the requests still waiting answer 503"
                    );
                    break;
                }
                () = tokio::time::sleep(Duration::from_millis(100)),
                    if drain_end.is_some() && self.metrics.in_flight.get() == 0 => {
                    tracing::info!("drained: every open request is answered");
                    break;
                }
            };
            // Past the connection limit, a connection is answered 503 and closed at once:
            // idle or slow clients cannot pin every descriptor.
            let permit = self.connections.clone().try_acquire_owned().ok();
            if permit.is_none() {
                refused += 1;
                // One line a second at most, however many are refused.
                if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(%peer, max = self.config.max_connections, refused, "connection limit reached: 503");
                    last_refusal_log = Some(Instant::now());
                }
                tokio::spawn(refuse(stream));
                continue;
            }
            let edge = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let edge = edge.clone();
                async move { Ok::<_, std::convert::Infallible>(edge.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(self.config.read_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        // The drain is over: whatever still waits answers 503 now.
        self.closing.cancel();
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(5)) => {
                tracing::warn!("connections still open 5 s after the drain; closing");
            }
        }
    }

    /// Routes response messages to the requests waiting for them.
    async fn dispatch_responses(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let received = tokio::select! {
                r = self.seams.responses.receive(10, self.config.response_wait) => r,
                () = shutdown.cancelled() => return,
            };
            let msgs = match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving responses failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut receipts = Vec::with_capacity(msgs.len());
            for m in msgs {
                receipts.push(m.receipt);
                match ResultMessage::parse(m.body.as_bytes()) {
                    Ok(r) => {
                        let waiter = lock(&self.pending).remove(&r.request_id);
                        match waiter {
                            Some(tx) => {
                                let _ = tx.send(r);
                            }
                            None if r.batch.is_some() => {
                                let (id, failed) = (r.request_id.clone(), r.error.is_some());
                                if !self.batches.deliver(&id, api::result_line(&r), failed) {
                                    tracing::debug!(request_id = %id, "batch result without a job here");
                                }
                            }
                            // Nobody waits (timed out, or answered from the bucket): the
                            // result stays in the output bucket.
                            None => {
                                tracing::debug!(request_id = %r.request_id, "response without a waiter")
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "malformed response message dropped"),
                }
            }
            if let Err(e) = self.seams.responses.ack(receipts).await {
                tracing::warn!(error = %e, "acknowledging responses failed");
            }
        }
    }

    /// Looks in the output bucket for batch results whose response message this edge did
    /// not see (another edge took it, or it was lost): every result is stored there.
    async fn sweep_batches(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.config.result_poll) => {}
                () = shutdown.cancelled() => return,
            }
            let forgotten = self
                .batches
                .forget_finished_before(self.config.job_retention);
            if forgotten > 0 {
                tracing::info!(forgotten, "finished batches past their retention forgotten");
            }
            // A job that finished: its manifest with the outcome, for listings.
            for job in self.batches.newest_first() {
                if job.take_outcome_to_store() && !self.save_manifest(&job.manifest()).await {
                    job.outcome_not_stored();
                }
            }
            for job in self.batches.unfinished() {
                // A job loaded from the store whose upload was still going on: read its
                // manifest again for the items added since, and the seal.
                if job.restored
                    && !job.progress().sealed
                    && let Ok(Some(m)) = self.load_manifest(&job.id).await
                {
                    let known = job.progress().total.min(m.items.len());
                    let mut results = vec![None; known];
                    results.extend(self.stored_results(&m.items[known..]).await);
                    self.batches
                        .extend_restored(&job, &m, results, self.manifest_quiet());
                }
                if job.created.elapsed() < self.config.result_poll * 10 {
                    continue;
                }
                // Bounded work per sweep.
                let missing: Vec<String> = job.missing().into_iter().take(256).collect();
                for (id, found) in missing.iter().zip(self.stored_results(&missing).await) {
                    if let Some((line, failed)) = found {
                        self.batches.deliver(id, line, failed);
                    }
                }
            }
        }
    }

    /// Stores one upload, enqueues its request and waits for the result.
    pub async fn recognize(
        &self,
        request_id: &str,
        filename: &str,
        bytes: Bytes,
        embeddings: bool,
    ) -> Result<ResultMessage, ApiError> {
        api::validate_image(&bytes)?;
        let _permit = self
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded())?;
        self.metrics.uploads.inc();
        let mut req = Request::new(request_id, filename);
        req.embeddings = embeddings;
        self.seams
            .store
            .put(Bucket::In, &input_key(request_id), bytes)
            .await
            .map_err(|e| ApiError::unavailable(format!("storing the upload: {e}")))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(request_id.to_string(), tx);
        let waiter = Waiter {
            edge: self,
            id: request_id,
        };
        if let Err(e) = self.seams.requests.send(vec![req.to_json()]).await {
            return Err(ApiError::unavailable(format!("queueing the request: {e}")));
        }
        waiter.wait(rx).await
    }

    fn check_key(&self, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.config.api_key else {
            return Ok(());
        };
        let given = headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), key.as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                hyper::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong API key (Authorization: Bearer <FACEREC_API_KEY>)",
            )),
        }
    }
}

/// Answers a connection over the limit with a bare 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = r#"{"error":"too many open connections, retry shortly","kind":"overloaded"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Removes the pending entry however the wait ends.
struct Waiter<'a> {
    edge: &'a Edge,
    id: &'a str,
}

impl Waiter<'_> {
    async fn wait(
        &self,
        mut rx: oneshot::Receiver<ResultMessage>,
    ) -> Result<ResultMessage, ApiError> {
        let deadline = Instant::now() + self.edge.config.request_timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ApiError::timeout(self.edge.config.request_timeout));
            }
            let nap = self.edge.config.result_poll.min(deadline - now);
            tokio::select! {
                r = &mut rx => match r {
                    Ok(result) => return Ok(result),
                    Err(_) => return Err(ApiError::unavailable("the edge is shutting down".into())),
                },
                () = self.edge.closing.cancelled() => {
                    return Err(ApiError::unavailable(
                        "the server is shutting down (drain time over); retry".into(),
                    ));
                }
                () = tokio::time::sleep(nap) => {}
            }
            match self
                .edge
                .seams
                .store
                .get(Bucket::Out, &result_key(self.id))
                .await
            {
                Ok(body) => {
                    if let Ok(r) = ResultMessage::parse(&body) {
                        return Ok(r);
                    }
                }
                Err(_) => continue,
            }
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        lock(&self.edge.pending).remove(self.id);
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
