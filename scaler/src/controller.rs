//! The control loop: every `CHECK_INTERVAL`, observe (sources + fleet), decide, act; a
//! circuit breaker pauses fleet actions after consecutive fleet API failures. Shutting down
//! leaves the fleet as it is.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::decide::{Action, Decide, Decision, Observation, Scaler};
use crate::fleet::{Fleet, now_seconds};
use crate::metrics::ScalerMetrics;
use crate::source::{Combined, Sample};

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Time between decisions (`CHECK_INTERVAL`, default 5 s).
    pub interval: Duration,
    /// Consecutive fleet failures that open the circuit.
    pub breaker_after: u32,
    /// How long the circuit stays open before actions are tried again.
    pub breaker_cooldown: Duration,
    /// Decide and report, but never call the fleet's launch/terminate.
    pub dry_run: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            interval: Duration::from_secs(5),
            breaker_after: 3,
            breaker_cooldown: Duration::from_secs(30),
            dry_run: false,
        }
    }
}

/// What one tick saw and did.
#[derive(Debug, Clone)]
pub struct Report {
    pub sample: Sample,
    pub decision: Decision,
    /// `ok`, `error: ...`, `skipped (circuit open)`, `dry run` or `nothing to do`.
    pub outcome: String,
}

pub struct Controller {
    scaler: Scaler,
    sources: Combined,
    fleet: Arc<dyn Fleet>,
    metrics: ScalerMetrics,
    config: ControllerConfig,
    failures: u32,
    open_until: Option<Instant>,
}

impl Controller {
    pub fn new(
        scaler: Scaler,
        sources: Combined,
        fleet: Arc<dyn Fleet>,
        metrics: ScalerMetrics,
        config: ControllerConfig,
    ) -> Self {
        Controller {
            scaler,
            sources,
            fleet,
            metrics,
            config,
            failures: 0,
            open_until: None,
        }
    }

    fn fleet_failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.failures += 1;
        tracing::warn!(fleet = self.fleet.name(), error = %e, failures = self.failures, "{what} failed");
        if self.failures >= self.config.breaker_after && self.open_until.is_none() {
            tracing::warn!(
                cooldown_s = self.config.breaker_cooldown.as_secs_f64(),
                "circuit open: fleet actions paused"
            );
            self.metrics.circuit_open.set(1);
        }
        if self.failures >= self.config.breaker_after {
            self.open_until = Some(Instant::now() + self.config.breaker_cooldown);
        }
    }

    fn fleet_ok(&mut self) {
        if self.open_until.take().is_some() {
            tracing::info!("circuit closed");
        }
        self.failures = 0;
        self.metrics.circuit_open.set(0);
    }

    /// One observe → decide → act round.
    pub async fn tick(&mut self) -> Report {
        let (sample, errors) = self.sources.sample().await;
        for e in &errors {
            self.metrics
                .source_errors
                .get_or_create(&vec![("source", e.source_name.to_string())])
                .inc();
            tracing::warn!(source = e.source_name, error = %e.message, "observation failed");
        }
        if let Some(b) = sample.backlog {
            self.metrics
                .queue_depth
                .get_or_create(&vec![("state", "visible".into())])
                .set(b.visible as i64);
            self.metrics
                .queue_depth
                .get_or_create(&vec![("state", "in_flight".into())])
                .set(b.in_flight as i64);
        }
        let members = match self.fleet.members().await {
            Ok(m) => m,
            Err(e) => {
                self.fleet_failed("listing the fleet", &e);
                let decision = Decision {
                    desired: 0,
                    running: 0,
                    pending: 0,
                    action: Action::Hold("no fleet state"),
                };
                return Report {
                    sample,
                    decision,
                    outcome: format!("error: {e}"),
                };
            }
        };
        let obs = Observation {
            backlog: sample.backlog,
            rate: sample.rate,
            members,
        };
        let decision = self.scaler.decide(&obs, now_seconds());
        self.metrics.desired.set(i64::from(decision.desired));
        self.metrics.running.set(i64::from(decision.running));
        self.metrics.pending.set(i64::from(decision.pending));
        self.metrics
            .rate_per_worker
            .set(self.scaler.rate_per_worker());

        let kind = match &decision.action {
            Action::Launch(_) => "launch",
            Action::Terminate(_) => "terminate",
            Action::None | Action::Hold(_) => {
                return Report {
                    sample,
                    decision,
                    outcome: "nothing to do".into(),
                };
            }
        };
        if self.config.dry_run {
            self.metrics.action(kind, "skipped");
            return Report {
                sample,
                decision,
                outcome: "dry run".into(),
            };
        }
        if self.open_until.is_some_and(|t| Instant::now() < t) {
            self.metrics.action(kind, "skipped");
            return Report {
                sample,
                decision,
                outcome: "skipped (circuit open)".into(),
            };
        }
        let result = match &decision.action {
            Action::Launch(n) => self
                .fleet
                .launch(*n)
                .await
                .map(|got| format!("launched {got}")),
            Action::Terminate(ids) => self
                .fleet
                .terminate(ids)
                .await
                .map(|()| format!("terminating {}", ids.join(" "))),
            Action::None | Action::Hold(_) => unreachable!("returned above"),
        };
        let outcome = match result {
            Ok(done) => {
                self.fleet_ok();
                self.metrics.action(kind, "ok");
                tracing::info!(
                    fleet = self.fleet.name(),
                    desired = decision.desired,
                    running = decision.running,
                    pending = decision.pending,
                    visible = sample.backlog.map(|b| b.visible),
                    in_flight = sample.backlog.map(|b| b.in_flight),
                    "{done}"
                );
                "ok".to_string()
            }
            Err(e) => {
                self.metrics.action(kind, "error");
                self.fleet_failed(kind, &e);
                format!("error: {e}")
            }
        };
        Report {
            sample,
            decision,
            outcome,
        }
    }

    /// Ticks until `shutdown`; then returns, leaving the fleet as it is.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            fleet = self.fleet.name(),
            interval_s = self.config.interval.as_secs_f64(),
            "scaler started"
        );
        loop {
            self.tick().await;
            tokio::select! {
                () = tokio::time::sleep(self.config.interval) => {}
                () = shutdown.cancelled() => break,
            }
        }
        let left = self.fleet.members().await.map(|m| m.len());
        tracing::info!(fleet = self.fleet.name(), workers = ?left.ok(), "scaler stopped; the fleet is left as it is");
    }
}
