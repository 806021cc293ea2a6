//! The edge's state and its background work: uploads stored and queued, response messages
//! routed to the requests waiting for them, batch results swept from the store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use facerec_contract::message::{input_key, result_key};
use facerec_contract::{Request, ResultMessage};
use facerec_seams::{Bucket, Galleries, GalleryHandle, Seams};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api::result_line;
use crate::batch;
use crate::config::EdgeConfig;
use crate::metrics::EdgeMetrics;
use crate::response::{ApiError, Kind, validate_image};
use facerec_seams::sync::lock;

pub struct Edge {
    pub(crate) config: EdgeConfig,
    pub(crate) seams: Seams,
    /// The default collection's gallery.
    pub(crate) gallery: Arc<GalleryHandle>,
    /// Every collection's gallery, loaded when a request first names it.
    pub(crate) galleries: Arc<Galleries>,
    pub(crate) pending: Mutex<HashMap<String, oneshot::Sender<ResultMessage>>>,
    pub(crate) uploads: Arc<Semaphore>,
    pub(crate) metrics: EdgeMetrics,
    pub(crate) registry: Arc<Registry>,
    pub(crate) batches: batch::Batches,
    /// Cancelled when the drain time after a shutdown is over: waiters answer 503.
    pub(crate) closing: CancellationToken,
    /// Set on the shutdown signal: new requests answer 503.
    pub(crate) draining: std::sync::atomic::AtomicBool,
    /// One permit per open connection (`max_connections`).
    pub(crate) connections: Arc<Semaphore>,
    /// Every collection's unknown faces grouped into people, as of the last request.
    pub(crate) groups: crate::groups::Groups,
}

impl Edge {
    pub fn new(
        config: EdgeConfig,
        seams: Seams,
        gallery: Arc<GalleryHandle>,
        metrics: EdgeMetrics,
        registry: Arc<Registry>,
    ) -> Arc<Self> {
        let galleries = Arc::new(Galleries::new(gallery));
        Self::sharing(config, seams, galleries, metrics, registry)
    }

    /// An edge over `galleries`, shared with the rest of its process (`facerec up`: its
    /// workers match against them; the edge follows them).
    pub fn sharing(
        config: EdgeConfig,
        seams: Seams,
        galleries: Arc<Galleries>,
        metrics: EdgeMetrics,
        registry: Arc<Registry>,
    ) -> Arc<Self> {
        Arc::new(Self {
            uploads: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            connections: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            seams,
            gallery: galleries.default_gallery().clone(),
            galleries,
            pending: Mutex::new(HashMap::new()),
            metrics,
            registry,
            batches: batch::Batches::default(),
            closing: CancellationToken::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            groups: Default::default(),
        })
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    /// Routes response messages to the requests waiting for them.
    pub(crate) async fn dispatch_responses(self: Arc<Self>, shutdown: CancellationToken) {
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
                                if !self.batches.deliver(&id, result_line(&r), failed) {
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
    pub(crate) async fn sweep_batches(self: Arc<Self>, shutdown: CancellationToken) {
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

    /// Stores one upload, enqueues its request and waits for the result, matched against
    /// `collection`'s gallery (`None`: the default one). A `probe` (an enrolment, a
    /// verification, a search) gets its faces' embeddings and is not recorded as seen.
    pub async fn recognize(
        &self,
        request_id: &str,
        filename: &str,
        bytes: Bytes,
        probe: bool,
        collection: Option<&str>,
    ) -> Result<ResultMessage, ApiError> {
        validate_image(&bytes)?;
        let _permit = self
            .uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded())?;
        self.metrics.uploads.inc();
        let mut req = Request::new(request_id, filename);
        req.embeddings = probe;
        req.probe = probe;
        req.collection = collection.map(str::to_string);
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

    pub(crate) fn check_key(&self, headers: &hyper::HeaderMap) -> Result<(), ApiError> {
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
                Kind::Unauthorized,
                "missing or wrong API key (Authorization: Bearer <FACEREC_API_KEY>)",
            )),
        }
    }
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
                    Err(_) => return Err(ApiError::unavailable("the edge is shutting down")),
                },
                () = self.edge.closing.cancelled() => {
                    return Err(ApiError::unavailable(
                        "the server is shutting down (drain time over); retry",
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
