//! The names of the worker tier's Prometheus metrics (docs/interfaces.md, "Metrics
//! (Prometheus names)"): prefix `facerec_engine_`, counters ending in `_total`, durations as
//! `_seconds` histograms, no per-request labels. The names live here, beside the tiers that
//! read them (the scaler scrapes them, `ops/` charts them); the worker's metrics themselves
//! are `facerec_worker::Metrics`. Also the filesystem store's metrics and the helpers every
//! tier uses to register and render.

use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

/// The exported names, exactly as they appear on `/metrics` and in the dashboard and
/// alert rules under `ops/` (`tests/ops.rs` checks that they agree).
pub mod names {
    pub const PREFIX: &str = "facerec_engine_";
    pub const IMAGES_TOTAL: &str = "facerec_engine_images_total";
    pub const FACES_TOTAL: &str = "facerec_engine_faces_total";
    pub const BATCH_SIZE: &str = "facerec_engine_batch_size";
    pub const STAGE_DURATION_SECONDS: &str = "facerec_engine_stage_duration_seconds";
    pub const DLQ_TOTAL: &str = "facerec_engine_dlq_total";
    pub const MESSAGES_TOTAL: &str = "facerec_engine_messages_total";
    pub const IN_FLIGHT: &str = "facerec_engine_in_flight";
    pub const CIRCUIT_OPEN: &str = "facerec_engine_circuit_open";
    pub const SEAM_ERRORS_TOTAL: &str = "facerec_engine_seam_errors_total";
    pub const GALLERY_FACES: &str = "facerec_engine_gallery_faces";
    pub const SEEN_FACES_TOTAL: &str = "facerec_engine_seen_faces_total";
    /// The filesystem store's size and retention (`facerec up`, [`super::StoreMetrics`]).
    pub const STORE_BYTES: &str = "facerec_engine_store_bytes";
    pub const STORE_OBJECTS: &str = "facerec_engine_store_objects";
    pub const STORE_EXPIRED_TOTAL: &str = "facerec_engine_store_expired_total";

    /// Every exported name above.
    pub const ALL: &[&str] = &[
        IMAGES_TOTAL,
        FACES_TOTAL,
        BATCH_SIZE,
        STAGE_DURATION_SECONDS,
        DLQ_TOTAL,
        MESSAGES_TOTAL,
        IN_FLIGHT,
        CIRCUIT_OPEN,
        SEAM_ERRORS_TOTAL,
        GALLERY_FACES,
        SEEN_FACES_TOTAL,
        STORE_BYTES,
        STORE_OBJECTS,
        STORE_EXPIRED_TOTAL,
    ];
}

type ByBucket<M> = Family<Vec<(String, String)>, M>;

/// The store's size and what retention removed, per bucket (`in`: uploads; `out`:
/// results and the gallery).
#[derive(Clone, Default)]
pub struct StoreMetrics {
    bytes: ByBucket<Gauge>,
    objects: ByBucket<Gauge>,
    expired: ByBucket<Counter>,
}

impl StoreMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = Self::default();
        register(
            r,
            names::STORE_BYTES,
            "Bytes under the data directory, per bucket",
            m.bytes.clone(),
        );
        register(
            r,
            names::STORE_OBJECTS,
            "Objects under the data directory, per bucket",
            m.objects.clone(),
        );
        register(
            r,
            names::STORE_EXPIRED_TOTAL,
            "Objects deleted for being older than the retention, per bucket",
            m.expired.clone(),
        );
        m
    }

    /// Exports one sweep's counts.
    pub fn record(&self, stats: &crate::store::SweepStats) {
        for (i, bucket) in ["in", "out"].into_iter().enumerate() {
            let l = vec![("bucket".to_string(), bucket.to_string())];
            self.bytes.get_or_create(&l).set(stats.bytes[i] as i64);
            self.objects.get_or_create(&l).set(stats.objects[i] as i64);
            self.expired.get_or_create(&l).inc_by(stats.expired[i]);
        }
    }
}

/// Registers `metric` so that it is exported as `name`, its full Prometheus name.
/// `prometheus-client` appends `_total` to counters itself, so a counter's name is
/// registered without it (and must end in it: the convention of every tier).
pub fn register(registry: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    let name = match metric.metric_type() {
        MetricType::Counter => {
            debug_assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
            name.strip_suffix("_total").unwrap_or(name)
        }
        _ => name,
    };
    registry.register(name, help, metric);
}

/// The reasons a worker dead-letters a request for (the `reason` label of
/// [`names::DLQ_TOTAL`]). Their series exist from the start at 0, so that
/// `increase()` in an alert sees the first dead letter too.
pub const DLQ_REASONS: &[&str] = &[
    dlq_reason::MALFORMED,
    dlq_reason::MISSING_OBJECT,
    dlq_reason::RETRIES_EXHAUSTED,
];

/// Values of the `reason` label of [`names::DLQ_TOTAL`].
pub mod dlq_reason {
    /// A message the edge did not write.
    pub const MALFORMED: &str = "malformed";
    /// The upload it names is not in the input bucket.
    pub const MISSING_OBJECT: &str = "missing_object";
    /// It failed on every delivery up to `MAX_RETRIES`.
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The metric names a rendered registry exports, from its `# TYPE` lines (a counter's
/// family is declared without the `_total` its samples carry).
pub fn exported_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| match kind.trim() {
            "counter" => format!("{name}_total"),
            _ => name.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_metrics_are_exported_under_their_names() {
        let mut registry = Registry::default();
        StoreMetrics::register(&mut registry).record(&crate::store::SweepStats::default());
        let exported = exported_names(&render(&registry));
        for name in [
            names::STORE_BYTES,
            names::STORE_OBJECTS,
            names::STORE_EXPIRED_TOTAL,
        ] {
            assert!(exported.iter().any(|e| e == name), "{name}");
        }
        assert!(names::ALL.iter().all(|n| n.starts_with(names::PREFIX)));
    }
}
