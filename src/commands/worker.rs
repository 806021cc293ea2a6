//! `facerec worker`: the recognition worker on SQS/S3.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use facerec_seams::aws::Aws;
use facerec_worker::Metrics;
use facerec_worker::{Compute, Worker};
use prometheus_client::registry::Registry;

use crate::cli::serve::WorkerCommandArgs;
use crate::support::engine::{build_engine, warmed};
use crate::support::runtime::{runtime, shutdown_signal};

pub fn run(cmd: &WorkerCommandArgs) -> Result<ExitCode> {
    let (engine_args, aws_args, args) = (&cmd.engine, &cmd.aws, &cmd.worker);
    let engine = Arc::new(warmed(build_engine(engine_args, args.engine_threads)?)?);
    let config = args.config(
        engine_args,
        engine.config().max_batch,
        aws_args.client.retries.max_retries,
    )?;
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
            tokio::spawn(facerec_seams::http::serve_metrics(
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
                Err(e)
                    if e.is_retryable()
                        && attempt + 1 < config.max_consecutive_failures
                        && !shutdown.is_cancelled() =>
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
        let gallery = crate::support::serve::open_gallery(
            cmd.database.url.as_deref(),
            engine.models().recognition_id().to_string(),
            seams.store.as_ref(),
        )
        .await?;
        let compute = Compute::new(engine, args.engine_threads);
        let worker = Worker::new(compute, gallery, seams, config, metrics);
        worker.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
