//! The scaler's Prometheus metrics, all under `facerec_scaler_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use facerec_seams::metrics::register;

/// The exported names, exactly as they appear on `/metrics` and in the dashboard and
/// alert rules under `ops/` (`tests/ops.rs` checks that they agree).
pub mod names {
    pub const PREFIX: &str = "facerec_scaler_";
    pub const QUEUE_DEPTH: &str = "facerec_scaler_queue_depth";
    pub const DESIRED_WORKERS: &str = "facerec_scaler_desired_workers";
    pub const RUNNING_WORKERS: &str = "facerec_scaler_running_workers";
    pub const PENDING_WORKERS: &str = "facerec_scaler_pending_workers";
    pub const ACTIONS_TOTAL: &str = "facerec_scaler_actions_total";
    pub const SOURCE_ERRORS_TOTAL: &str = "facerec_scaler_source_errors_total";
    pub const CIRCUIT_OPEN: &str = "facerec_scaler_circuit_open";
    pub const RATE_PER_WORKER: &str = "facerec_scaler_rate_per_worker";

    /// Every exported name above.
    pub const ALL: &[&str] = &[
        QUEUE_DEPTH,
        DESIRED_WORKERS,
        RUNNING_WORKERS,
        PENDING_WORKERS,
        ACTIONS_TOTAL,
        SOURCE_ERRORS_TOTAL,
        CIRCUIT_OPEN,
        RATE_PER_WORKER,
    ];
}

/// The `kind` and `outcome` labels of [`names::ACTIONS_TOTAL`]; every pair is exported
/// from the start at 0, so that `increase()` sees the first action of each too.
pub const ACTION_KINDS: &[&str] = &["launch", "terminate"];
pub const ACTION_OUTCOMES: &[&str] = &["ok", "error", "skipped"];

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
    /// Creates the metrics and registers them under their [`names`].
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        register(
            registry,
            names::QUEUE_DEPTH,
            "Request messages, by state (visible, in_flight)",
            m.queue_depth.clone(),
        );
        register(
            registry,
            names::DESIRED_WORKERS,
            "Workers the scaler wants",
            m.desired.clone(),
        );
        register(
            registry,
            names::RUNNING_WORKERS,
            "Workers running",
            m.running.clone(),
        );
        register(
            registry,
            names::PENDING_WORKERS,
            "Workers launched and not yet running",
            m.pending.clone(),
        );
        register(
            registry,
            names::ACTIONS_TOTAL,
            "Fleet actions, by kind (launch, terminate) and outcome (ok, error, skipped)",
            m.actions.clone(),
        );
        register(
            registry,
            names::SOURCE_ERRORS_TOTAL,
            "Failed observations, by source",
            m.source_errors.clone(),
        );
        register(
            registry,
            names::CIRCUIT_OPEN,
            "1 while fleet actions are paused after consecutive fleet API failures",
            m.circuit_open.clone(),
        );
        register(
            registry,
            names::RATE_PER_WORKER,
            "Messages per second one worker is believed to complete",
            m.rate_per_worker.clone(),
        );
        for kind in ACTION_KINDS {
            for outcome in ACTION_OUTCOMES {
                // Creating the series is the point; the guard is released at once.
                drop(m.actions.get_or_create(&vec![
                    ("kind", kind.to_string()),
                    ("outcome", outcome.to_string()),
                ]));
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use facerec_seams::metrics::{exported_names, render};

    #[test]
    fn exports_exactly_the_named_metrics() {
        let mut registry = Registry::default();
        let m = ScalerMetrics::register(&mut registry);
        // A family is exported once it has a series.
        m.queue_depth
            .get_or_create(&vec![("state", "visible".to_string())])
            .set(1);
        m.source_errors
            .get_or_create(&vec![("source", "queue".to_string())])
            .inc();
        let mut exported = exported_names(&render(&registry));
        exported.sort();
        let mut want: Vec<String> = names::ALL.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(exported, want);
        assert!(names::ALL.iter().all(|n| n.starts_with(names::PREFIX)));
    }
}
