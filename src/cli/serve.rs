//! `worker`, `edge`, `up`: the service roles, and the flags they share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use facerec_edge::EdgeConfig;
use facerec_worker::WorkerConfig;

use super::engine::EngineArgs;
use super::shared::{
    ApiKeyArg, AwsClientArgs, DatabaseArg, ModelsArg, RecognizerArg, Retries, ThresholdArg,
};
use facerec_seams::aws::AwsSettings;

/// Where the AWS resources are: the original design's `.env` names.
#[derive(Debug, Clone, Args)]
pub struct AwsArgs {
    /// Deployment id: resources are `${ID}-in-bucket`, `${ID}-req-queue`, ...
    #[arg(long, env = "ID")]
    pub id: String,
    #[command(flatten)]
    pub client: AwsClientArgs,
}

impl AwsArgs {
    pub fn settings(&self) -> AwsSettings {
        self.client.settings()
    }
}

/// Worker loop settings.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// Seconds a stopping worker (SIGTERM) may spend finishing the work it holds before it
    /// hands the rest back to the queue; in `up`, also how long the web tier keeps
    /// answering open requests (the rest get 503).
    #[arg(long, env = "FACEREC_DRAIN_SECONDS", default_value_t = WorkerConfig::DEFAULT_SHUTDOWN_GRACE.as_secs_f64())]
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
    /// overlap another's networks, and on onnxruntime each thread runs its own sessions on
    /// its share of the cores; one keeps the order strict.
    #[arg(long, env = "FACEREC_ENGINE_THREADS", default_value_t = facerec_worker::compute::DEFAULT_THREADS)]
    pub engine_threads: usize,
    /// Record every recognised face in the face store (where it was seen, its embedding,
    /// whom it matched), so that `GET /v1/identities/{name}/appearances` finds it; `false`
    /// records nothing.
    #[arg(long, env = "FACEREC_INDEX_FACES", default_value_t = true, action = clap::ArgAction::Set)]
    pub index_faces: bool,
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
            // A batch on each engine thread, one being answered and one ready: a thread
            // that frees up finds a full batch (holding one batch fewer, the batch after
            // an answer waited on the queue and often ran part-full).
            max_in_hand: ((self.engine_threads.max(1) + 2) * max_batch.max(1)).max(20),
            visibility: Duration::from_secs(self.visibility_timeout.max(1)),
            max_retries: max_retries.max(1),
            retry_delay: Duration::from_secs_f64(self.retry_delay),
            max_consecutive_failures: self.max_failures.max(1),
            threshold: engine.threshold.rule,
            shutdown_grace: Duration::from_secs_f64(self.drain_seconds.max(0.0)),
            index_faces: self.index_faces,
            ..WorkerConfig::default()
        })
    }
}

/// Web tier settings (the original `.env` names where they exist).
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// Address to listen on.
    #[arg(long, env = "FACEREC_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Seconds to wait for a result before answering 504.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = EdgeConfig::DEFAULT.request_timeout.as_secs())]
    pub request_timeout: u64,
    /// Largest accepted upload, bytes (413 beyond).
    #[arg(long, env = "MAX_FILE_SIZE", default_value_t = EdgeConfig::DEFAULT.max_file_size)]
    pub max_file_size: usize,
    /// Uploads in progress at once; beyond that, 503 with Retry-After.
    #[arg(long, env = "FACEREC_MAX_IN_FLIGHT", default_value_t = EdgeConfig::DEFAULT.max_in_flight)]
    pub max_in_flight: usize,
    #[command(flatten)]
    pub api_key: ApiKeyArg,
    /// Seconds a client may take to send a request's headers (an idle keep-alive
    /// connection too: it is closed) or to send the next piece of its body (408).
    #[arg(long, env = "FACEREC_READ_TIMEOUT", default_value_t = EdgeConfig::DEFAULT.read_timeout.as_secs_f64())]
    pub read_timeout: f64,
    /// Most open client connections; past it a new connection is answered 503 and closed.
    #[arg(long, env = "FACEREC_MAX_CONNECTIONS", default_value_t = EdgeConfig::DEFAULT.max_connections)]
    pub max_connections: usize,
}

impl EdgeArgs {
    pub fn config(&self, threshold: facerec_engine::Threshold) -> EdgeConfig {
        EdgeConfig {
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            max_file_size: self.max_file_size.max(1),
            max_in_flight: self.max_in_flight.max(1),
            api_key: self.api_key.key.clone().filter(|k| !k.is_empty()),
            threshold,
            read_timeout: Duration::from_secs_f64(self.read_timeout.max(0.1)),
            max_connections: self.max_connections.max(1),
            ..EdgeConfig::DEFAULT
        }
    }
}

/// Recognition worker: pulls requests from SQS, reads uploads from S3, writes results.
#[derive(Debug, Args)]
pub struct WorkerCommandArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[command(flatten)]
    pub database: DatabaseArg,
}

/// Web tier only, in front of SQS/S3 (or AWS_ENDPOINT_URL).
#[derive(Debug, Args)]
pub struct EdgeCommandArgs {
    #[command(flatten)]
    pub aws: AwsArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub models: ModelsArg,
    #[command(flatten)]
    pub recognizer: RecognizerArg,
    #[command(flatten)]
    pub threshold: ThresholdArg,
    #[command(flatten)]
    pub database: DatabaseArg,
    /// Hours the faces seen in uploads stay in the face store (every edge forgets older
    /// ones each minute); without it they stay until deleted.
    #[arg(long, env = "FACEREC_RETENTION_HOURS")]
    pub retention_hours: Option<f64>,
}

/// The embedded default: web tier + recognition workers in one process, local queue,
/// filesystem store under --data. No cloud account needed.
#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub worker: WorkerArgs,
    /// State directory: uploads, results, the queue and the face store (`faces.db`).
    #[arg(long, env = "FACEREC_DATA", default_value = "facerec-data")]
    pub data: PathBuf,
    /// The face store; by default SQLite at `--data/faces.db`.
    #[command(flatten)]
    pub database: DatabaseArg,
    /// In-process workers kept running, sharing the models (0 with --max-workers 0:
    /// the web tier alone).
    #[arg(long, env = "FACEREC_WORKERS", default_value_t = 1)]
    pub workers: u32,
    /// The local autoscaler adds workers up to this many while a backlog lasts. They
    /// share the one engine, so more of them hold more requests in hand without adding
    /// compute (and answer less in arrival order): 1 unless the store is slow.
    #[arg(long, env = "FACEREC_MAX_WORKERS", default_value_t = 1)]
    pub max_workers: u32,
    /// Seconds between the local autoscaler's decisions.
    #[arg(long, env = "CHECK_INTERVAL", default_value_t = 5.0)]
    pub check_interval: f64,
    #[command(flatten)]
    pub retries: Retries,
    /// Keep every upload under --data/in (by default an upload is deleted once its
    /// result is stored and answered; dead-lettered ones are kept until --retention-hours).
    #[arg(long, env = "FACEREC_KEEP_UPLOADS", value_parser = clap::builder::BoolishValueParser::new())]
    pub keep_uploads: bool,
    /// Hours that results (and uploads still there) stay under --data before they are
    /// deleted; swept every minute. The gallery is never swept.
    #[arg(long, env = "FACEREC_RETENTION_HOURS", default_value_t = 168.0)]
    pub retention_hours: f64,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        engine: EngineArgs,
    }

    /// A worker holds a batch for each engine thread, one being answered and one ready.
    #[test]
    fn a_worker_holds_a_batch_per_engine_thread_plus_two() {
        for (threads, batch, held) in [("2", 8, 32), ("1", 16, 48), ("3", 64, 320), ("2", 1, 20)] {
            let flags = Flags::try_parse_from(["facerec", "--engine-threads", threads])
                .expect("flags parse");
            let config = flags
                .worker
                .config(&flags.engine, batch, 3)
                .expect("a worker config");
            assert_eq!(config.max_in_hand, held, "{threads} threads, batch {batch}");
            assert_eq!(config.max_batch, batch);
        }
    }
}
