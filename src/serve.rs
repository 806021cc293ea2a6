//! The service roles: `facerec worker` (SQS/S3), `facerec edge` and `facerec up`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use facerec_worker::aws::{Aws, AwsSettings};
use facerec_worker::{Compute, GalleryHandle, Metrics, Seams, Worker, WorkerConfig};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::cli::EngineArgs;

/// Where the AWS resources are: the original design's `.env` names.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Deployment id: resources are `${ID}-in-bucket`, `${ID}-req-queue`, ...
    #[arg(long, env = "ID")]
    pub id: String,
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// An AWS-compatible endpoint (an emulator such as moto); AWS itself when unset.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Retries of a failed AWS call (standard retry mode); also the deliveries after
    /// which a failing request is dead-lettered.
    #[arg(long, env = "MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
}

impl AwsArgs {
    pub fn settings(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            endpoint: self.endpoint.clone(),
            max_retries: self.max_retries,
        }
    }
}

/// Worker loop settings.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Seconds a stopping worker (SIGTERM) may spend finishing the work it holds before it
    /// hands the rest back to the queue; in `up`, also how long the web tier keeps
    /// answering open requests (the rest get 503).
    #[arg(long, env = "FACEREC_DRAIN_SECONDS", default_value_t = 10.0)]
    pub drain_seconds: f64,
    /// Request visibility timeout, seconds (held messages are extended before it ends).
    #[arg(long, env = "VISIBILITY_TIMEOUT", default_value_t = 300)]
    pub visibility_timeout: u64,
    /// Base delay before a failed request is tried again, seconds (doubles each time).
    #[arg(long, env = "RETRY_DELAY", default_value_t = 2.0)]
    pub retry_delay: f64,
    /// Concurrent long-polling receivers.
    #[arg(long, env = "FACEREC_POLLERS", default_value_t = 2)]
    pub pollers: usize,
    /// Long-poll wait per receive, seconds (at most 20).
    #[arg(long, env = "FACEREC_POLL_WAIT", default_value_t = 20)]
    pub poll_wait: u64,
    /// How long a batch waits to fill once it has one image, milliseconds.
    #[arg(long, env = "FACEREC_BATCH_WAIT_MS", default_value_t = 10)]
    pub batch_wait_ms: u64,
    /// Consecutive queue/store failures after which the worker exits non-zero.
    #[arg(long, env = "FACEREC_MAX_FAILURES", default_value_t = 50)]
    pub max_failures: u32,
    /// Serve /metrics and /health on this address (e.g. 0.0.0.0:9101).
    #[arg(long, env = "FACEREC_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Engine threads: batches of every worker in the process run on these, first formed,
    /// first run. Two (the default) let one batch's CPU stages (decode, pre-processing)
    /// overlap another's networks; one keeps the order strict.
    #[arg(long, env = "FACEREC_ENGINE_THREADS", default_value_t = facerec_worker::compute::DEFAULT_THREADS)]
    pub engine_threads: usize,
}

impl WorkerArgs {
    /// The worker's settings; `max_batch` is the loaded engine's (`--batch`, or the
    /// autotune's choice with `--batch auto`).
    pub fn config(
        &self,
        engine: &EngineArgs,
        max_batch: usize,
        max_retries: u32,
    ) -> Result<WorkerConfig> {
        anyhow::ensure!(
            self.retry_delay.is_finite() && self.retry_delay >= 0.0,
            "RETRY_DELAY must be a non-negative number of seconds"
        );
        Ok(WorkerConfig {
            name: std::env::var("FACEREC_WORKER_NAME")
                .unwrap_or_else(|_| format!("worker-{}", std::process::id())),
            pollers: self.pollers.max(1),
            wait: Duration::from_secs(self.poll_wait.min(20)),
            max_batch: max_batch.max(1),
            batch_wait: Duration::from_millis(self.batch_wait_ms),
            max_in_hand: (max_batch.max(1) * 3).max(20),
            visibility: Duration::from_secs(self.visibility_timeout.max(1)),
            max_retries: max_retries.max(1),
            retry_delay: Duration::from_secs_f64(self.retry_delay),
            max_consecutive_failures: self.max_failures.max(1),
            threshold: engine.threshold,
            shutdown_grace: Duration::from_secs_f64(self.drain_seconds.max(0.0)),
            ..WorkerConfig::default()
        })
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Cancelled on SIGINT or SIGTERM.
pub(crate) fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

pub fn worker(engine_args: &EngineArgs, aws_args: &AwsArgs, args: &WorkerArgs) -> Result<ExitCode> {
    let engine = Arc::new(crate::offline::build_engine(engine_args)?);
    let config = args.config(engine_args, engine.config().max_batch, aws_args.max_retries)?;
    let rt = runtime()?;
    rt.block_on(async {
        let shutdown = shutdown_signal();
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        if let Some(addr) = args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tracing::info!(addr = %listener.local_addr()?, "metrics endpoint");
            tokio::spawn(facerec_worker::http::serve_metrics(
                listener,
                Arc::new(registry),
                shutdown.clone(),
            ));
        }
        let aws = Aws::connect(&aws_args.id, &aws_args.settings()).await;
        // A worker started during an outage waits for AWS instead of exiting: transient
        // errors are retried with backoff (up to --max-failures attempts, or until
        // stopped); a missing queue is an error at once.
        let mut attempt = 0u32;
        let seams = loop {
            match aws.seams().await {
                Ok(s) => {
                    metrics.circuit_open.set(0);
                    break s;
                }
                Err(e @ facerec_worker::SeamError::Transient(_))
                    if attempt + 1 < config.max_consecutive_failures && !shutdown.is_cancelled() =>
                {
                    attempt += 1;
                    // Open, as it is when polling fails later on.
                    metrics.circuit_open.set(1);
                    let wait = Duration::from_millis(250 << attempt.min(5));
                    tracing::warn!(attempt, error = %e, retry_in_ms = wait.as_millis() as u64, "AWS unreachable at start");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let gallery = Arc::new(GalleryHandle::new(engine.models().recognition_id()));
        let compute = Compute::new(engine, args.engine_threads);
        let worker = Worker::new(compute, gallery, seams, config, metrics);
        worker.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Web tier settings (the original `.env` names where they exist).
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Address to listen on.
    #[arg(long, env = "FACEREC_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Seconds to wait for a result before answering 504.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 60)]
    pub request_timeout: u64,
    /// Largest accepted upload, bytes (413 beyond).
    #[arg(long, env = "MAX_FILE_SIZE", default_value_t = 10_485_760)]
    pub max_file_size: usize,
    /// Uploads in progress at once; beyond that, 503 with Retry-After.
    #[arg(long, env = "FACEREC_MAX_IN_FLIGHT", default_value_t = 512)]
    pub max_in_flight: usize,
    /// When set, gallery changes and batches need `Authorization: Bearer <key>`.
    #[arg(long, env = "FACEREC_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seconds a client may take to send a request's headers (an idle keep-alive
    /// connection too: it is closed) or to send the next piece of its body (408).
    #[arg(long, env = "FACEREC_READ_TIMEOUT", default_value_t = 30.0)]
    pub read_timeout: f64,
    /// Most open client connections; past it a new connection is answered 503 and closed.
    #[arg(long, env = "FACEREC_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

impl EdgeArgs {
    fn config(&self, threshold: facerec_engine::Threshold) -> facerec_edge::EdgeConfig {
        facerec_edge::EdgeConfig {
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            max_file_size: self.max_file_size.max(1),
            max_in_flight: self.max_in_flight.max(1),
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            threshold,
            read_timeout: Duration::from_secs_f64(self.read_timeout.max(0.1)),
            max_connections: self.max_connections.max(1),
            ..facerec_edge::EdgeConfig::default()
        }
    }
}

/// Binds and serves the edge until shutdown; prints the address it listens on.
async fn serve_edge(
    edge: Arc<facerec_edge::Edge>,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    eprintln!("facerec listening on http://{addr}");
    edge.serve(listener, shutdown).await;
    Ok(())
}

/// `facerec up`'s own settings.
#[derive(Debug, Clone)]
pub struct UpArgs {
    /// State directory: uploads, results, gallery.
    pub data: std::path::PathBuf,
    /// Workers kept running.
    pub workers: u32,
    /// Workers the local autoscaler may run under a backlog.
    pub max_workers: u32,
    /// Seconds between the autoscaler's decisions.
    pub check_interval: f64,
    pub max_retries: u32,
    /// Keep uploads after their result is answered.
    pub keep_uploads: bool,
    /// Hours results and leftover uploads are kept.
    pub retention_hours: f64,
}

/// `facerec up`: edge + in-process workers sized by the local autoscaler, on a local queue
/// and a filesystem store.
pub fn up(
    engine_args: &EngineArgs,
    edge_args: &EdgeArgs,
    worker_args: &WorkerArgs,
    up: &UpArgs,
) -> Result<ExitCode> {
    use facerec_scaler::fleet::{LocalWorker, Spawn};
    use facerec_scaler::{
        Combined, Controller, ControllerConfig, Fleet, InProcess, Policy, QueueDepth, Scaler,
        ScalerMetrics,
    };
    use facerec_worker::sqlite_queue::SqliteQueues;
    use facerec_worker::{FsStore, LocalQueue};
    anyhow::ensure!(
        up.check_interval.is_finite() && up.check_interval > 0.0,
        "CHECK_INTERVAL must be a positive number of seconds"
    );
    anyhow::ensure!(
        up.retention_hours.is_finite() && up.retention_hours > 0.0,
        "FACEREC_RETENTION_HOURS must be a positive number of hours"
    );
    // A result must outlive the wait for it.
    let retention = Duration::from_secs_f64(up.retention_hours * 3600.0)
        .max(Duration::from_secs(edge_args.request_timeout.max(1) * 2));
    let max_retries = up.max_retries;
    let engine = Arc::new(crate::offline::build_engine(engine_args)?);
    let config = worker_args.config(engine_args, engine.config().max_batch, max_retries)?;
    let data = &up.data;
    let store =
        Arc::new(FsStore::new(data).with_context(|| format!("data directory {}", data.display()))?);
    let queues = SqliteQueues::open(&data.join("queue.db"))?;
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        // Requests and dead letters are durable (a restart on the same --data finishes
        // every accepted request); responses only reach waiters in this process's memory.
        let dlq = Arc::new(queues.queue("dlq", Duration::from_secs(30)));
        let requests = Arc::new(
            queues.queue("requests", config.visibility).with_redrive("dlq", max_retries.max(1) + 1),
        );
        let seams = Seams {
            requests: requests.clone(),
            responses: Arc::new(LocalQueue::new("responses", Duration::from_secs(30))),
            dead_letters: dlq,
            store: store.clone(),
        };
        let gallery = Arc::new(GalleryHandle::new(engine.models().recognition_id()));
        gallery
            .refresh(seams.store.as_ref())
            .await
            .context("loading the gallery")?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let edge_metrics = facerec_edge::EdgeMetrics::register(&mut registry);
        let scaler_metrics = ScalerMetrics::register(&mut registry);
        let store_metrics = facerec_worker::metrics::StoreMetrics::register(&mut registry);
        let registry = Arc::new(registry);
        let janitor = tokio::spawn(sweep_store(store.clone(), retention, store_metrics, shutdown.clone()));

        let spawn: Spawn = {
            let compute = Compute::new(engine.clone(), worker_args.engine_threads);
            let (gallery, seams, metrics) = (gallery.clone(), seams.clone(), metrics.clone());
            let config = WorkerConfig {
                gallery_refresh: None,
                wait: Duration::from_secs(1),
                delete_uploads: !up.keep_uploads,
                // The web tier drains first (the drain time); by then the requests still
                // waiting have had their 503, so the workers only finish the batch in
                // hand.
                shutdown_grace: config.shutdown_grace.min(Duration::from_secs(5)),
                ..config.clone()
            };
            Box::new(move |name, stop| {
                let w = Worker::new(
                    compute.clone(),
                    gallery.clone(),
                    seams.clone(),
                    WorkerConfig { name: name.clone(), ..config.clone() },
                    metrics.clone(),
                );
                let task = tokio::spawn({
                    let w = w.clone();
                    async move {
                        if let Err(e) = w.run(stop).await {
                            tracing::error!(worker = %name, error = %e, "worker stopped on failures");
                        }
                    }
                });
                (w as Arc<dyn LocalWorker>, task)
            })
        };
        let fleet = Arc::new(InProcess::new(spawn));
        fleet.launch(up.workers).await?;
        let max = up.max_workers.max(up.workers);
        let policy = Policy {
            min_workers: up.workers,
            max_workers: max,
            // Interactive use on one machine: a short acceptable wait, a quick scale-in.
            target_latency: 5.0,
            scale_in_window: 30.0,
            ..Policy::default()
        };
        let stop_scaler = CancellationToken::new();
        // Always running, also at a fixed size: it exports the queue depth.
        let scaler = {
            let controller = Controller::new(
                Scaler::new(policy),
                Combined { sources: vec![Arc::new(QueueDepth { queue: requests.clone() })] },
                fleet.clone(),
                scaler_metrics,
                ControllerConfig { interval: Duration::from_secs_f64(up.check_interval), ..ControllerConfig::default() },
            );
            tokio::spawn(controller.run(stop_scaler.clone()))
        };
        let edge = facerec_edge::Edge::new(
            facerec_edge::EdgeConfig {
                response_wait: Duration::from_secs(1),
                job_retention: retention,
                drain: Duration::from_secs_f64(worker_args.drain_seconds.max(0.0)),
                ..edge_args.config(engine_args.threshold)
            },
            seams,
            gallery,
            edge_metrics,
            registry,
        );
        let served = serve_edge(edge, edge_args.listen, shutdown.clone()).await;
        stop_scaler.cancel();
        let _ = scaler.await;
        fleet.stop_all().await;
        janitor.abort();
        served?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Every minute (more often for a retention under two minutes) and at start: deletes results and leftover uploads older than
/// `retention` and exports what is left.
async fn sweep_store(
    store: Arc<facerec_worker::FsStore>,
    retention: Duration,
    metrics: facerec_worker::metrics::StoreMetrics,
    shutdown: CancellationToken,
) {
    tracing::info!(
        retention_hours = retention.as_secs_f64() / 3600.0,
        "store retention"
    );
    loop {
        let s = store.clone();
        if let Ok(stats) = tokio::task::spawn_blocking(move || s.sweep(retention)).await {
            metrics.record(&stats);
            if stats.expired.iter().any(|&n| n > 0) {
                tracing::info!(
                    expired_in = stats.expired[0],
                    expired_out = stats.expired[1],
                    "retention sweep"
                );
            }
        }
        let every = (retention / 2).min(Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// `facerec edge`: the web tier in front of SQS/S3.
pub fn edge(
    aws_args: &AwsArgs,
    edge_args: &EdgeArgs,
    models: &Option<std::path::PathBuf>,
    recognizer: facerec_engine::Recognizer,
    threshold: facerec_engine::Threshold,
) -> Result<ExitCode> {
    let model_id = recognition_model_id(&crate::offline::models_dir(models), recognizer)?;
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let aws = Aws::connect(&aws_args.id, &aws_args.settings()).await;
        let seams = aws.seams().await?;
        let gallery = Arc::new(GalleryHandle::new(model_id));
        if let Err(e) = gallery.refresh(seams.store.as_ref()).await {
            tracing::warn!(error = %e, "gallery not loaded");
        }
        let mut registry = Registry::default();
        let edge_metrics = facerec_edge::EdgeMetrics::register(&mut registry);
        let edge = facerec_edge::Edge::new(
            edge_args.config(threshold),
            seams,
            gallery,
            edge_metrics,
            Arc::new(registry),
        );
        serve_edge(edge, edge_args.listen, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The recognition model's id (sha256 of its ONNX file), as the engine computes it, so
/// an edge without the models loaded creates galleries workers accept.
fn recognition_model_id(
    dir: &std::path::Path,
    recognizer: facerec_engine::Recognizer,
) -> Result<String> {
    use sha2::{Digest, Sha256};
    let path = dir.join(format!("{}.onnx", recognizer.file_stem()));
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
