//! The worker's Prometheus metrics, exported under the names of
//! [`facerec_seams::metrics::names`] (`facerec_engine_*`).

use std::time::Duration;

use facerec_seams::metrics::{DLQ_REASONS, names, register};
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
    pub seen_faces: Counter,
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
            seen_faces: Counter::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them under their [`names`].
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        register(
            registry,
            names::IMAGES_TOTAL,
            "Images processed, by outcome (ok or an error kind)",
            m.images.clone(),
        );
        register(
            registry,
            names::FACES_TOTAL,
            "Faces detected",
            m.faces.clone(),
        );
        register(
            registry,
            names::BATCH_SIZE,
            "Images per engine batch",
            m.batch_size.clone(),
        );
        register(
            registry,
            names::STAGE_DURATION_SECONDS,
            "Time per pipeline stage and batch (decode, detect, align, embed, match, faces, io)",
            m.stage_seconds.clone(),
        );
        register(
            registry,
            names::DLQ_TOTAL,
            "Messages sent to the dead-letter queue, by reason",
            m.dlq.clone(),
        );
        register(
            registry,
            names::MESSAGES_TOTAL,
            "Request messages handled, by result (answered, duplicate, retried, dead_lettered, released)",
            m.messages.clone(),
        );
        register(
            registry,
            names::IN_FLIGHT,
            "Request messages held by this worker",
            m.in_flight.clone(),
        );
        register(
            registry,
            names::CIRCUIT_OPEN,
            "1 while polling is paused after consecutive queue/store failures",
            m.circuit_open.clone(),
        );
        register(
            registry,
            names::SEAM_ERRORS_TOTAL,
            "Queue and store errors, by operation",
            m.seam_errors.clone(),
        );
        register(
            registry,
            names::GALLERY_FACES,
            "Faces in the gallery in use",
            m.gallery_faces.clone(),
        );
        register(
            registry,
            names::SEEN_FACES_TOTAL,
            "Faces recorded in the face store as seen (where they appear, for search)",
            m.seen_faces.clone(),
        );
        for reason in DLQ_REASONS {
            // Creating the series is the point; the guard is released at once.
            drop(m.dlq.get_or_create(&vec![("reason", reason.to_string())]));
        }
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

#[cfg(test)]
mod tests {
    use facerec_seams::metrics::{StoreMetrics, exported_names, render};

    use super::*;

    #[test]
    fn exports_exactly_the_named_metrics() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        StoreMetrics::register(&mut registry).record(&facerec_seams::store::SweepStats::default());
        // A family is exported once it has a series.
        Metrics::count(&m.images, "outcome", "ok");
        Metrics::count(&m.messages, "result", "answered");
        Metrics::count(&m.seam_errors, "op", "receive");
        m.stage("decode", Duration::from_millis(3));
        let mut exported = exported_names(&render(&registry));
        exported.sort();
        let mut want: Vec<String> = names::ALL.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(exported, want);
    }
}
