//! The scaler's Prometheus metrics, all under `facerec_scaler_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Metric names (without the `facerec_scaler_` prefix the registry adds).
pub mod names {
    pub const QUEUE_DEPTH: &str = "queue_depth";
    pub const DESIRED_WORKERS: &str = "desired_workers";
    pub const RUNNING_WORKERS: &str = "running_workers";
    pub const PENDING_WORKERS: &str = "pending_workers";
    pub const ACTIONS: &str = "actions";
    pub const SOURCE_ERRORS: &str = "source_errors";
    pub const CIRCUIT_OPEN: &str = "circuit_open";
    pub const RATE_PER_WORKER: &str = "rate_per_worker";
}

type Labels = Vec<(&'static str, String)>;

#[derive(Clone, Default)]
pub struct ScalerMetrics {
    pub queue_depth: Family<Labels, Gauge>,
    pub desired: Gauge,
    pub running: Gauge,
    pub pending: Gauge,
    pub actions: Family<Labels, Counter>,
    pub source_errors: Family<Labels, Counter>,
    pub circuit_open: Gauge,
    pub rate_per_worker: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ScalerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("facerec_scaler");
        r.register(
            names::QUEUE_DEPTH,
            "Request messages, by state (visible, in_flight)",
            m.queue_depth.clone(),
        );
        r.register(
            names::DESIRED_WORKERS,
            "Workers the scaler wants",
            m.desired.clone(),
        );
        r.register(names::RUNNING_WORKERS, "Workers running", m.running.clone());
        r.register(
            names::PENDING_WORKERS,
            "Workers launched and not yet running",
            m.pending.clone(),
        );
        r.register(
            names::ACTIONS,
            "Fleet actions, by kind (launch, terminate) and outcome (ok, error, skipped)",
            m.actions.clone(),
        );
        r.register(
            names::SOURCE_ERRORS,
            "Failed observations, by source",
            m.source_errors.clone(),
        );
        r.register(
            names::CIRCUIT_OPEN,
            "1 while fleet actions are paused after consecutive fleet API failures",
            m.circuit_open.clone(),
        );
        r.register(
            names::RATE_PER_WORKER,
            "Messages per second one worker is believed to complete",
            m.rate_per_worker.clone(),
        );
        m
    }

    pub fn action(&self, kind: &str, outcome: &str) {
        self.actions
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    }
}
