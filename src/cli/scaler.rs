//! `scaler` and `scaler simulate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use facerec_scaler::Policy;

use super::shared::AwsClientArgs;

/// Controller: keeps the worker fleet (EC2 or local processes) sized to the backlog.
#[derive(Debug, Args)]
pub struct ScalerCommandArgs {
    #[command(subcommand)]
    pub command: Option<ScalerCommand>,
    #[command(flatten)]
    pub args: Box<ScalerArgs>,
}

/// The backlog-per-worker policy's knobs (the original `.env` names where they exist).
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Most workers at once.
    #[arg(long, env = "MAX_INSTANCES", default_value_t = 15)]
    pub max_instances: u32,
    /// Workers kept even when idle.
    #[arg(long, env = "FACEREC_MIN_WORKERS", default_value_t = 0)]
    pub min_workers: u32,
    /// Seconds between decisions.
    #[arg(long, env = "CHECK_INTERVAL", default_value_t = 5.0)]
    pub check_interval: f64,
    /// Acceptable wait of a message in the backlog, seconds (target backlog per worker =
    /// this x the rate of one worker).
    #[arg(long, env = "FACEREC_TARGET_LATENCY", default_value_t = 30.0)]
    pub target_latency: f64,
    /// Messages/s one worker completes, until a rate has been measured.
    #[arg(long, env = "FACEREC_WORKER_RATE", default_value_t = 5.0)]
    pub worker_rate: f64,
    /// Scale in only after the need stayed lower for this many seconds.
    #[arg(long, env = "FACEREC_SCALE_IN_WINDOW", default_value_t = 60.0)]
    pub scale_in_window: f64,
    /// Most workers launched per decision.
    #[arg(long, env = "FACEREC_MAX_STEP_UP", default_value_t = 10)]
    pub max_step_up: u32,
    /// Most workers terminated per decision.
    #[arg(long, env = "FACEREC_MAX_STEP_DOWN", default_value_t = 4)]
    pub max_step_down: u32,
}

impl PolicyArgs {
    pub fn policy(&self) -> Result<Policy> {
        for (name, v) in [
            ("CHECK_INTERVAL", self.check_interval),
            ("FACEREC_TARGET_LATENCY", self.target_latency),
            ("FACEREC_WORKER_RATE", self.worker_rate),
        ] {
            anyhow::ensure!(v.is_finite() && v > 0.0, "{name} must be a positive number");
        }
        anyhow::ensure!(
            self.scale_in_window.is_finite() && self.scale_in_window >= 0.0,
            "FACEREC_SCALE_IN_WINDOW must be a non-negative number of seconds"
        );
        anyhow::ensure!(
            self.min_workers <= self.max_instances,
            "FACEREC_MIN_WORKERS exceeds MAX_INSTANCES"
        );
        Ok(Policy {
            min_workers: self.min_workers,
            max_workers: self.max_instances,
            target_latency: self.target_latency,
            default_rate: self.worker_rate,
            scale_in_window: self.scale_in_window,
            max_step_up: self.max_step_up.max(1),
            max_step_down: self.max_step_down.max(1),
        })
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.check_interval.max(0.05))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuleChoice {
    /// The backlog-per-worker policy.
    Backlog,
    /// Baseline: one worker per --per-worker messages, immediate scale-in.
    PerMessages,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// CSV `t_seconds,visible,in_flight` (header optional; an empty `visible` is an outage).
    #[arg(long)]
    pub trace: PathBuf,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Seconds from launch until a simulated worker takes work.
    #[arg(long, default_value_t = 60.0)]
    pub boot_delay: f64,
    /// Messages/s a simulated worker completes.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    #[arg(long, value_enum, default_value = "backlog")]
    pub rule: RuleChoice,
    /// Messages per worker for `--rule per-messages`.
    #[arg(long, default_value_t = 10)]
    pub per_worker: u64,
    /// Also run the other rule and print both summaries on stderr.
    #[arg(long)]
    pub compare: bool,
}

#[derive(Debug, Subcommand)]
pub enum ScalerCommand {
    /// Replay a queue-depth trace through the decision core on a simulated fleet; one CSV
    /// line per tick on stdout, a summary on stderr.
    Simulate(SimulateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceChoice {
    /// The request queue's depth (SQS attributes).
    Queue,
    /// A Prometheus server (--prometheus-url).
    Prometheus,
    /// Workers' /metrics pages (--scrape), for the completion rate.
    Scrape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FleetChoice {
    /// EC2 instances tagged facerec:id=ID, facerec:role=worker.
    Ec2,
    /// `facerec worker` processes on this machine.
    Processes,
    /// Decide and report only.
    None,
}

#[derive(Debug, Args)]
pub struct ScalerArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Deployment id (queues and instance tags).
    #[arg(long, env = "ID")]
    pub id: Option<String>,
    #[command(flatten)]
    pub aws: AwsClientArgs,
    /// Where the backlog and rate come from, in order of preference.
    #[arg(
        long,
        env = "FACEREC_SCALER_SOURCES",
        value_enum,
        value_delimiter = ',',
        default_value = "queue"
    )]
    pub source: Vec<SourceChoice>,
    /// Prometheus server, e.g. http://prometheus:9090.
    #[arg(long, env = "FACEREC_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// PromQL for the visible backlog (default: facerec_scaler_queue_depth{state="visible"}).
    #[arg(long, env = "FACEREC_PROMQL_VISIBLE")]
    pub promql_visible: Option<String>,
    /// PromQL for the in-flight messages.
    #[arg(long, env = "FACEREC_PROMQL_IN_FLIGHT")]
    pub promql_in_flight: Option<String>,
    /// PromQL for the fleet's completion rate, messages/s.
    #[arg(long, env = "FACEREC_PROMQL_RATE")]
    pub promql_rate: Option<String>,
    /// Worker /metrics URLs to scrape (comma-separated).
    #[arg(long, env = "FACEREC_SCRAPE", value_delimiter = ',')]
    pub scrape: Vec<String>,
    #[arg(long, env = "FACEREC_FLEET", value_enum, default_value = "ec2")]
    pub fleet: FleetChoice,
    /// Launch template name for the EC2 fleet [default, unless --ami is given: ${ID}-worker,
    /// what `facerec infra up --ami` creates].
    #[arg(long, env = "FACEREC_LAUNCH_TEMPLATE")]
    pub launch_template: Option<String>,
    /// AMI for the EC2 fleet instead of a launch template (with --user-data to start a worker).
    #[arg(long, env = "FACEREC_SCALER_AMI")]
    pub ami: Option<String>,
    #[arg(long, env = "FACEREC_INSTANCE_TYPE", default_value = "g4dn.xlarge")]
    pub instance_type: String,
    /// User-data script file for --ami launches.
    #[arg(long, env = "FACEREC_USER_DATA")]
    pub user_data: Option<PathBuf>,
    #[arg(long, env = "FACEREC_INSTANCE_PROFILE")]
    pub instance_profile: Option<String>,
    /// Stop instances on scale-in (and start stopped ones first) instead of terminating.
    #[arg(long, env = "FACEREC_STOP_ON_SCALE_IN")]
    pub stop_on_scale_in: bool,
    /// Extra arguments for `facerec worker` in the processes fleet (whitespace-separated).
    #[arg(long, env = "FACEREC_WORKER_ARGS", default_value = "")]
    pub worker_args: String,
    /// Serve /metrics and /health here.
    #[arg(long, env = "FACEREC_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// One decision, printed as JSON, then exit.
    #[arg(long)]
    pub once: bool,
}
