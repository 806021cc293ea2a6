//! The worker's Prometheus metrics (DESIGN.md, "Metrics"): prefix `facerec_engine_`,
//! counters ending in `_total`, durations as `_seconds` histograms, no per-request labels.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

#[derive(Clone)]
pub struct Metrics {
    pub images: Family<Labels, Counter>,
    pub faces: Counter,
    pub batch_size: Histogram,
    pub stage_seconds: HistogramFamily,
    pub dlq: Family<Labels, Counter>,
    pub messages: Family<Labels, Counter>,
    pub in_flight: Gauge,
    pub circuit_open: Gauge,
    pub seam_errors: Family<Labels, Counter>,
    pub gallery_faces: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            images: Family::default(),
            faces: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            stage_seconds: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            dlq: Family::default(),
            messages: Family::default(),
            in_flight: Gauge::default(),
            circuit_open: Gauge::default(),
            seam_errors: Family::default(),
            gallery_faces: Gauge::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under `facerec_engine_`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("facerec_engine");
        r.register(
            "images",
            "Images processed, by outcome (ok or an error kind)",
            m.images.clone(),
        );
        r.register("faces", "Faces detected", m.faces.clone());
        r.register(
            "batch_size",
            "Images per engine batch",
            m.batch_size.clone(),
        );
        r.register(
            "stage_duration_seconds",
            "Time per pipeline stage and batch (decode, detect, align, embed, match, io)",
            m.stage_seconds.clone(),
        );
        r.register(
            "dlq",
            "Messages sent to the dead-letter queue, by reason",
            m.dlq.clone(),
        );
        r.register(
            "messages",
            "Request messages handled, by result (answered, duplicate, retried, dead_lettered, released)",
            m.messages.clone(),
        );
        r.register(
            "in_flight",
            "Request messages held by this worker",
            m.in_flight.clone(),
        );
        r.register(
            "circuit_open",
            "1 while polling is paused after consecutive queue/store failures",
            m.circuit_open.clone(),
        );
        r.register(
            "seam_errors",
            "Queue and store errors, by operation",
            m.seam_errors.clone(),
        );
        r.register(
            "gallery_faces",
            "Faces in the gallery in use",
            m.gallery_faces.clone(),
        );
        m
    }

    pub fn stage(&self, stage: &'static str, d: Duration) {
        self.stage_seconds
            .get_or_create(&vec![("stage", stage.to_string())])
            .observe(d.as_secs_f64());
    }

    pub fn count(family: &Family<Labels, Counter>, key: &'static str, value: &str) {
        family.get_or_create(&vec![(key, value.to_string())]).inc();
    }
}

/// Renders a registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}
