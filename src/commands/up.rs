//! `facerec up`: the embedded default, web tier, workers and autoscaler in one process on a
//! local queue and a filesystem store.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use facerec_seams::Seams;
use facerec_worker::Metrics;
use facerec_worker::{Compute, Worker, WorkerConfig};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::cli::serve::UpArgs;
use crate::support::engine::{build_engine, warmed};
use crate::support::runtime::{runtime, shutdown_signal};
use crate::support::serve::{open_gallery, serve_edge};

/// `facerec up`: edge + in-process workers sized by the local autoscaler, on a local queue
/// and a filesystem store.
pub fn run(up: &UpArgs) -> Result<ExitCode> {
    let (engine_args, edge_args, worker_args) = (&up.engine, &up.edge, &up.worker);
    use facerec_scaler::fleet::{LocalWorker, Spawn};
    use facerec_scaler::{
        Combined, Controller, ControllerConfig, Fleet, InProcess, Policy, QueueDepth, Scaler,
        ScalerMetrics,
    };
    use facerec_seams::sqlite_queue::SqliteQueues;
    use facerec_seams::{FsStore, LocalQueue};
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
    let max_retries = up.retries.max_retries;
    let engine = Arc::new(warmed(build_engine(
        engine_args,
        worker_args.engine_threads,
    )?)?);
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
        let database_url = up
            .database
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite:{}", data.join("faces.db").display()));
        let gallery = open_gallery(
            Some(&database_url),
            engine.models().recognition_id().to_string(),
            seams.store.as_ref(),
        )
        .await?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let edge_metrics = facerec_edge::EdgeMetrics::register(&mut registry);
        let scaler_metrics = ScalerMetrics::register(&mut registry);
        let store_metrics = facerec_seams::metrics::StoreMetrics::register(&mut registry);
        let registry = Arc::new(registry);
        let janitor = tokio::spawn(sweep_store(
            store.clone(),
            gallery.store().cloned(),
            retention,
            store_metrics,
            shutdown.clone(),
        ));

        // One set of galleries for the web tier and the workers: the edge follows them.
        let galleries = Arc::new(facerec_seams::Galleries::new(gallery.clone()));
        let spawn: Spawn = {
            let compute = Compute::new(engine.clone(), worker_args.engine_threads);
            let (galleries, seams, metrics) = (galleries.clone(), seams.clone(), metrics.clone());
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
                let w = Worker::sharing(
                    compute.clone(),
                    galleries.clone(),
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
                let in_hand = move || w.in_hand();
                (Arc::new(in_hand) as Arc<dyn LocalWorker>, task)
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
        let edge = facerec_edge::Edge::sharing(
            facerec_edge::EdgeConfig {
                response_wait: Duration::from_secs(1),
                job_retention: retention,
                drain: Duration::from_secs_f64(worker_args.drain_seconds.max(0.0)),
                ..edge_args.config(engine_args.threshold.rule)
            },
            seams,
            galleries,
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

/// Every minute (more often for a retention under two minutes) and at start: deletes results
/// and leftover uploads older than `retention`, and the faces seen longer ago than that from
/// the face store, and exports what is left.
async fn sweep_store(
    store: Arc<facerec_seams::FsStore>,
    faces: Option<Arc<dyn facerec_seams::FaceStore>>,
    retention: Duration,
    metrics: facerec_seams::metrics::StoreMetrics,
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
        if let Some(faces) = &faces {
            crate::support::serve::forget_seen_faces(faces.as_ref(), retention).await;
        }
        let every = crate::support::serve::sweep_interval(retention);
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
