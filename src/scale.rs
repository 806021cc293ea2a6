//! `facerec scaler` (the controller) and `facerec scaler simulate` (trace replay).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use facerec_scaler::ec2::{Ec2Fleet, LaunchSpec, ScaleIn, worker_template_name};
use facerec_scaler::simulate::{SimConfig, Summary, Tick, parse_trace, simulate};
use facerec_scaler::{
    Combined, Controller, ControllerConfig, Decide, Fleet, PerMessages, Policy, Processes,
    Prometheus, QueueDepth, Scaler, ScalerMetrics, Scrape, Source,
};
use prometheus_client::registry::Registry;

use crate::serve::{runtime, shutdown_signal};

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
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    #[arg(long, env = "MAX_RETRIES", default_value_t = 3)]
    pub max_retries: u32,
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
    #[arg(long, env = "FACEREC_AMI")]
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

fn summary_line(name: &str, s: &Summary) -> String {
    format!(
        "{name}: arrivals={} worker_seconds={:.0} drain_s={} mean_wait_s={:.1} peak_workers={} direction_changes={}",
        s.arrivals,
        s.worker_seconds,
        s.drain_seconds
            .map_or("never".to_string(), |d| format!("{d:.0}")),
        s.mean_wait,
        s.peak_workers,
        s.direction_changes
    )
}

pub fn simulate_cmd(args: &SimulateArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("reading {}", args.trace.display()))?;
    let trace = parse_trace(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.trace.display()))?;
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be positive"
    );
    let policy = args.policy.policy()?;
    let cfg = SimConfig {
        tick: args.policy.check_interval,
        boot_delay: args.boot_delay.max(0.0),
        rate: args.rate,
        ..SimConfig::default()
    };
    let mut backlog = Scaler::new(policy.clone());
    let mut baseline = PerMessages {
        per_worker: args.per_worker.max(1),
        max_workers: policy.max_workers,
    };
    let (chosen, other): (&mut dyn Decide, &mut dyn Decide) = match args.rule {
        RuleChoice::Backlog => (&mut backlog, &mut baseline),
        RuleChoice::PerMessages => (&mut baseline, &mut backlog),
    };
    let (ticks, summary) = simulate(&trace, &cfg, chosen);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", Tick::CSV_HEADER)?;
    for t in &ticks {
        writeln!(out, "{}", t.csv())?;
    }
    let name = |r: RuleChoice| match r {
        RuleChoice::Backlog => "backlog-per-worker".to_string(),
        RuleChoice::PerMessages => format!("one-per-{}-messages", args.per_worker.max(1)),
    };
    eprintln!("{}", summary_line(&name(args.rule), &summary));
    if args.compare {
        let (_, other_summary) = simulate(&trace, &cfg, other);
        let other_rule = match args.rule {
            RuleChoice::Backlog => RuleChoice::PerMessages,
            RuleChoice::PerMessages => RuleChoice::Backlog,
        };
        eprintln!("{}", summary_line(&name(other_rule), &other_summary));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn scaler_cmd(args: &ScalerArgs) -> Result<ExitCode> {
    let policy = args.policy.policy()?;
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let settings = facerec_worker::aws::AwsSettings {
            region: args.region.clone(),
            endpoint: args.endpoint.clone(),
            max_retries: args.max_retries,
        };
        let needs_aws =
            args.fleet == FleetChoice::Ec2 || args.source.contains(&SourceChoice::Queue);
        let config = if needs_aws {
            Some(facerec_worker::aws::sdk_config(&settings).await)
        } else {
            None
        };
        let id = || {
            args.id
                .clone()
                .context("ID (--id) is required for the queue source and the EC2 fleet")
        };

        let mut sources: Vec<Arc<dyn Source>> = Vec::new();
        let timeout = Duration::from_secs(5);
        for s in &args.source {
            match s {
                SourceChoice::Queue => {
                    let aws = facerec_worker::aws::Aws::from_config(
                        &id()?,
                        config.as_ref().context("AWS config")?,
                    );
                    let queue = aws.queue(&aws.names.req_queue).await?;
                    sources.push(Arc::new(QueueDepth {
                        queue: Arc::new(queue),
                    }));
                }
                SourceChoice::Prometheus => {
                    let url = args
                        .prometheus_url
                        .clone()
                        .context("--prometheus-url is required for the prometheus source")?;
                    let mut p = Prometheus::with_defaults(url, timeout);
                    if let Some(q) = &args.promql_visible {
                        p.visible_query = q.clone();
                    }
                    if let Some(q) = &args.promql_in_flight {
                        p.in_flight_query = q.clone();
                    }
                    if let Some(q) = &args.promql_rate {
                        p.rate_query = Some(q.clone()).filter(|q| !q.is_empty());
                    }
                    sources.push(Arc::new(p));
                }
                SourceChoice::Scrape => {
                    if args.scrape.is_empty() {
                        bail!("--scrape URLs are required for the scrape source");
                    }
                    sources.push(Arc::new(Scrape::new(args.scrape.clone(), timeout)));
                }
            }
        }
        let fleet: Arc<dyn Fleet> = match args.fleet {
            FleetChoice::Ec2 => {
                let client = aws_sdk_ec2::Client::new(config.as_ref().context("AWS config")?);
                let launch = match (&args.launch_template, &args.ami) {
                    (Some(name), _) => LaunchSpec::Template {
                        name: name.clone(),
                        version: None,
                    },
                    (None, Some(ami)) => {
                        if args.user_data.is_none() {
                            tracing::warn!(
                                "--ami without --user-data: launched instances will not start a worker \
                                 (the launch template of `facerec infra up` does)"
                            );
                        }
                        LaunchSpec::Image {
                        ami: ami.clone(),
                        instance_type: args.instance_type.clone(),
                        user_data: match &args.user_data {
                            Some(p) => Some(
                                std::fs::read_to_string(p)
                                    .with_context(|| format!("reading {}", p.display()))?,
                            ),
                            None => None,
                        },
                        instance_profile: args.instance_profile.clone(),
                        }
                    }
                    // What `facerec infra up --ami` creates.
                    (None, None) => LaunchSpec::Template {
                        name: worker_template_name(&id()?),
                        version: None,
                    },
                };
                let scale_in = if args.stop_on_scale_in {
                    ScaleIn::Stop
                } else {
                    ScaleIn::Terminate
                };
                Arc::new(Ec2Fleet::new(client, id()?, launch, scale_in))
            }
            FleetChoice::Processes => {
                let exe = std::env::current_exe().context("locating the facerec binary")?;
                let mut worker_args = vec!["worker".to_string()];
                worker_args.extend(args.worker_args.split_whitespace().map(str::to_string));
                Arc::new(Processes::new(exe, worker_args))
            }
            FleetChoice::None => Arc::new(NoFleet),
        };
        let mut registry = Registry::default();
        let metrics = ScalerMetrics::register(&mut registry);
        if let Some(addr) = args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            tokio::spawn(facerec_worker::http::serve_metrics(
                listener,
                Arc::new(registry),
                shutdown.clone(),
            ));
        }
        let controller_config = ControllerConfig {
            interval: args.policy.interval(),
            dry_run: args.fleet == FleetChoice::None,
            ..ControllerConfig::default()
        };
        let mut controller = Controller::new(
            Scaler::new(policy),
            Combined { sources },
            fleet,
            metrics,
            controller_config,
        );
        if args.once {
            let r = controller.tick().await;
            let line = serde_json::json!({
                "visible": r.sample.backlog.map(|b| b.visible),
                "in_flight": r.sample.backlog.map(|b| b.in_flight),
                "rate": r.sample.rate,
                "running": r.decision.running,
                "pending": r.decision.pending,
                "desired": r.decision.desired,
                "action": r.decision.action.to_string(),
                "outcome": r.outcome,
            });
            println!("{line}");
            return Ok(ExitCode::SUCCESS);
        }
        controller.run(shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}

/// The fleet of `--fleet none`: empty, never changed.
struct NoFleet;

#[async_trait::async_trait]
impl Fleet for NoFleet {
    fn name(&self) -> &'static str {
        "none"
    }
    async fn members(&self) -> Result<Vec<facerec_scaler::Member>, facerec_scaler::FleetError> {
        Ok(Vec::new())
    }
    async fn launch(&self, _n: u32) -> Result<u32, facerec_scaler::FleetError> {
        Ok(0)
    }
    async fn terminate(&self, _ids: &[String]) -> Result<(), facerec_scaler::FleetError> {
        Ok(())
    }
}
