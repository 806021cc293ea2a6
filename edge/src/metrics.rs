//! The edge's Prometheus metrics (docs/interfaces.md, "Metrics (Prometheus names)"), all under `facerec_edge_`.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use facerec_seams::metrics::register;

/// The exported names, exactly as they appear on `/metrics` and in the dashboard and
/// alert rules under `ops/` (`tests/ops.rs` checks that they agree).
pub mod names {
    pub const PREFIX: &str = "facerec_edge_";
    pub const REQUESTS_TOTAL: &str = "facerec_edge_requests_total";
    pub const REQUEST_DURATION_SECONDS: &str = "facerec_edge_request_duration_seconds";
    pub const IN_FLIGHT: &str = "facerec_edge_in_flight";
    pub const UPLOADS_TOTAL: &str = "facerec_edge_uploads_total";
    /// Re-tagging (`facerec_seams::retag`), from this edge's view of the face store.
    pub const RETAG_LAG_CHANGES: &str = "facerec_edge_retag_lag_changes";
    pub const RETAG_STALE_FACES: &str = "facerec_edge_retag_stale_faces";
    pub const RETAG_FACES_TOTAL: &str = "facerec_edge_retag_faces_total";

    /// Every exported name above.
    pub const ALL: &[&str] = &[
        REQUESTS_TOTAL,
        REQUEST_DURATION_SECONDS,
        IN_FLIGHT,
        UPLOADS_TOTAL,
        RETAG_LAG_CHANGES,
        RETAG_STALE_FACES,
        RETAG_FACES_TOTAL,
    ];
}

type Labels = Vec<(&'static str, String)>;

/// `facerec_edge_*` metrics.
#[derive(Clone)]
pub struct EdgeMetrics {
    pub(crate) requests: Family<Labels, Counter>,
    pub(crate) duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub(crate) in_flight: Gauge,
    pub(crate) uploads: Counter,
    pub(crate) retag: facerec_seams::retag::RetagMetrics,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl EdgeMetrics {
    /// Creates the metrics and registers them under their [`names`].
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            in_flight: Gauge::default(),
            uploads: Counter::default(),
            retag: Default::default(),
        };
        register(
            registry,
            names::RETAG_LAG_CHANGES,
            "Gallery changes not yet brought to every seen face (the face store's last change less the re-tagging cursor)",
            m.retag.lag.clone(),
        );
        register(
            registry,
            names::RETAG_STALE_FACES,
            "Seen faces waiting to be matched again against the whole gallery",
            m.retag.stale.clone(),
        );
        register(
            registry,
            names::RETAG_FACES_TOTAL,
            "Seen faces gone through by this edge's re-tagging passes",
            m.retag.faces.clone(),
        );
        register(
            registry,
            names::REQUESTS_TOTAL,
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        register(
            registry,
            names::REQUEST_DURATION_SECONDS,
            "HTTP request duration by route",
            m.duration.clone(),
        );
        register(
            registry,
            names::IN_FLIGHT,
            "HTTP requests in progress",
            m.in_flight.clone(),
        );
        register(
            registry,
            names::UPLOADS_TOTAL,
            "Images accepted for recognition",
            m.uploads.clone(),
        );
        m
    }

    /// Counts one answered request and its duration.
    pub(crate) fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("status", status.to_string()),
            ])
            .inc();
        self.duration
            .get_or_create(&vec![("route", route.to_string())])
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facerec_seams::metrics::{exported_names, render};

    #[test]
    fn exports_exactly_the_named_metrics() {
        let mut registry = Registry::default();
        let m = EdgeMetrics::register(&mut registry);
        // A family is exported once it has a series.
        m.request("/", 200, 0.25);
        let mut exported = exported_names(&render(&registry));
        exported.sort();
        let mut want: Vec<String> = names::ALL.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(exported, want);
        assert!(names::ALL.iter().all(|n| n.starts_with(names::PREFIX)));
    }
}
