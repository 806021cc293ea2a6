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

use crate::metrics::Metrics;
use facerec_contract::message::{DeadLetter, Request, ResultMessage, VERSION, result_key};
use facerec_seams::faces::SeenFace;
use facerec_seams::gallery::{Galleries, GalleryHandle};
use facerec_seams::metrics::dlq_reason;
use facerec_seams::queue::{MAX_BATCH, Received};
use facerec_seams::store::Bucket;
use facerec_seams::sync::lock;
use facerec_seams::{SeamError, SeamErrorKind, Seams};

use crate::compute::{self, Compute};
use breaker::Breaker;

mod batcher;
mod breaker;
mod finisher;
mod intake;
mod upkeep;

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
    /// Most request messages held at once (received and not yet answered); the command
    /// line makes it a batch per engine thread plus two (`WorkerArgs::config`).
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
    /// Record every face recognised in the face store (where it was seen, its embedding,
    /// whom it matched), before its result is stored. Needs a face store; without one
    /// nothing is recorded.
    pub index_faces: bool,
}

impl WorkerConfig {
    /// How long a stopping worker may finish the work it holds (`FACEREC_DRAIN_SECONDS`).
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
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
            shutdown_grace: Self::DEFAULT_SHUTDOWN_GRACE,
            gallery_refresh: Some(Duration::from_secs(10)),
            delete_uploads: false,
            index_faces: true,
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

pub struct Worker {
    compute: Compute,
    /// The default collection's gallery (`galleries.default_gallery()`).
    gallery: Arc<GalleryHandle>,
    /// Every collection's gallery, loaded when a request first names it.
    galleries: Arc<Galleries>,
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
        let galleries = Arc::new(Galleries::new(gallery));
        Self::sharing(compute, galleries, seams, config, metrics)
    }

    /// A worker matching against `galleries`, shared with the rest of its process (`facerec
    /// up`: the edge follows them).
    pub fn sharing(
        compute: Compute,
        galleries: Arc<Galleries>,
        seams: Seams,
        config: WorkerConfig,
        metrics: Metrics,
    ) -> Arc<Self> {
        let (jobs, rx) = mpsc::channel(config.max_in_hand.max(1));
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(config.max_in_hand.max(MAX_BATCH))),
            compute,
            gallery: galleries.default_gallery().clone(),
            galleries,
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
        if let Err(e) = self.gallery.sync(self.seams.store.as_ref()).await {
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
}
