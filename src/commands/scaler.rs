//! `facerec scaler`: the controller that keeps the worker fleet sized to the backlog.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use facerec_scaler::ec2::{Ec2Fleet, LaunchSpec, ScaleIn, worker_template_name};
use facerec_scaler::{
    Combined, Controller, ControllerConfig, Fleet, Processes, Prometheus, QueueDepth, Scaler,
    ScalerMetrics, Scrape, Source,
};
use prometheus_client::registry::Registry;

use crate::cli::scaler::{FleetChoice, ScalerArgs, SourceChoice};
use crate::support::runtime::{runtime, shutdown_signal};

pub fn run(args: &ScalerArgs) -> Result<ExitCode> {
    let policy = args.policy.policy()?;
    runtime()?.block_on(async {
        let shutdown = shutdown_signal();
        let settings = args.aws.settings();
        let needs_aws =
            args.fleet == FleetChoice::Ec2 || args.source.contains(&SourceChoice::Queue);
        let config = if needs_aws {
            Some(facerec_seams::aws::sdk_config(&settings).await)
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
                    let aws = facerec_seams::aws::Aws::from_config(
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
            tokio::spawn(facerec_seams::http::serve_metrics(
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
