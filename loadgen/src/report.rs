//! What a run measured: throughput, latency percentiles, statuses, correctness.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, Route, files_per_batch};
use crate::outcome::Outcome;

/// What a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub route: Route,
    /// Concurrent clients (batch route: batches uploaded and streamed at once).
    pub concurrency: usize,
    /// Batch route: images per uploaded batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_files: Option<usize>,
    pub requests: usize,
    /// 2xx answers.
    pub ok: usize,
    /// Answers by status (`"200"`, `"503"`, ...) and transport failures (`"io"`, `"timeout"`).
    /// Batch route: `"200"` for a result line, the error kind (`"not_an_image"`, ...) for an
    /// error line, the upload's status when it was refused, `"io"` for a missing line.
    pub statuses: BTreeMap<String, usize>,
    /// 2xx answers checked against an expected name: right and wrong.
    pub correct: usize,
    pub wrong: usize,
    pub wall_seconds: f64,
    /// Requests per second (all answers) and 2xx answers per second (batch route: images).
    pub throughput: f64,
    pub ok_throughput: f64,
    pub latency_ms: Latency,
    /// Up to ten wrong answers, `expected → got`.
    pub wrong_examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `ms` (sorted here).
    pub fn of(ms: &mut [f64]) -> Self {
        if ms.is_empty() {
            return Latency::default();
        }
        ms.sort_by(f64::total_cmp);
        let at =
            |q: f64| ms[(((q * ms.len() as f64).ceil() as usize).max(1) - 1).min(ms.len() - 1)];
        Latency {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: ms[ms.len() - 1],
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

impl Report {
    /// A markdown table row (see [`Report::MARKDOWN_HEADER`]).
    pub fn markdown_row(&self) -> String {
        let errors: Vec<String> = self
            .statuses
            .iter()
            .filter(|(s, _)| !s.starts_with('2'))
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        format!(
            "| {:?} | {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {} | {}/{} |",
            self.route,
            self.concurrency,
            self.requests,
            self.throughput,
            self.ok_throughput,
            self.latency_ms.p50,
            self.latency_ms.p95,
            self.latency_ms.p99,
            if errors.is_empty() {
                "none".to_string()
            } else {
                errors.join(", ")
            },
            self.correct,
            self.correct + self.wrong,
        )
    }

    pub const MARKDOWN_HEADER: &'static str = "| route | clients | requests | req/s | ok/s | p50 ms | p95 ms | p99 ms | errors | correct |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|";
}

pub(crate) fn summarise(cfg: &Config, outcomes: &[Outcome], wall: f64) -> Report {
    let mut statuses = BTreeMap::new();
    let (mut ok, mut correct, mut wrong) = (0, 0, 0);
    let mut wrong_examples = Vec::new();
    let mut ok_ms = Vec::new();
    for o in outcomes {
        *statuses.entry(o.status.clone()).or_insert(0) += 1;
        if o.status.starts_with('2') {
            ok += 1;
            ok_ms.push(o.ms);
        }
        match &o.verdict {
            Some(Ok(())) => correct += 1,
            Some(Err(e)) => {
                wrong += 1;
                if wrong_examples.len() < 10 {
                    wrong_examples.push(e.to_string());
                }
            }
            None => {}
        }
    }
    let mut all_ms: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    Report {
        route: cfg.route,
        concurrency: cfg.concurrency,
        batch_files: (cfg.route == Route::Batch).then(|| files_per_batch(cfg)),
        requests: outcomes.len(),
        ok,
        statuses,
        correct,
        wrong,
        wall_seconds: wall,
        throughput: outcomes.len() as f64 / wall.max(1e-9),
        ok_throughput: ok as f64 / wall.max(1e-9),
        // Latency of successful answers when there are any (503s return at once).
        latency_ms: if ok_ms.is_empty() {
            Latency::of(&mut all_ms)
        } else {
            Latency::of(&mut ok_ms)
        },
        wrong_examples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        let l = Latency::of(&mut v);
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        assert_eq!(Latency::of(&mut []).p50, 0.0);
        assert_eq!(Latency::of(&mut [7.0]).p99, 7.0);
    }
}
