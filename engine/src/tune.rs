//! Batch-size autotune (`--batch auto`): after the models load, time the recognition net
//! and the selected detector at batches 1, 2, 4, ... up to `max_batch`, and pick the
//! smallest batch that reaches `fraction` (90%) of the best throughput seen.
//!
//! One batch of images costs one detector pass plus, for their faces, one recognition
//! pass, so a point's throughput is `1 / (1/detector + 1/recognition)` images per second
//! and its latency is the sum of the two passes' median times. The sweep stops early when
//! a point's latency exceeds `latency_cap` (that point is not eligible) or its throughput
//! falls below `FALL` of the best so far. The decision is the pure [`decide`]; the timing
//! loop ([`measure`]) is shared with `facerec bench models`.
//!
//! Inputs are a fixed synthetic pattern: the networks are dense convolutions with no
//! data-dependent work, so their speed does not depend on the pixel values, and start-up
//! needs no image files.

use std::time::{Duration, Instant};

use crate::error::EngineError;
use crate::models::{self, Models};
use crate::pipeline::Detector;

/// A point whose throughput is below this share of the best so far ends the sweep.
pub const FALL: f64 = 0.95;

/// One timed point: `iters` calls after one unmeasured warm-up call.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Sample {
    pub batch: usize,
    /// `batch x iters / timed seconds`.
    pub items_per_s: f64,
    /// Median wall time of one call, milliseconds.
    pub median_ms: f64,
    pub iters: usize,
    /// The warm-up call (first use of this shape: kernel compilation, autotune), seconds.
    pub warmup_s: f64,
}

/// Calls `run` once unmeasured, then again until `budget` has passed (at least once).
/// `run` must finish its work before returning (read results back), so that lazy device
/// work is inside the timer.
pub fn measure<E>(
    batch: usize,
    budget: Duration,
    mut run: impl FnMut() -> Result<(), E>,
) -> Result<Sample, E> {
    let t = Instant::now();
    run()?;
    let warmup_s = t.elapsed().as_secs_f64();
    let mut times = Vec::new();
    let start = Instant::now();
    while times.is_empty() || start.elapsed() < budget {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let median = if times.len() % 2 == 1 {
        times[mid]
    } else {
        (times[mid - 1] + times[mid]) / 2.0
    };
    Ok(Sample {
        batch,
        items_per_s: (batch * times.len()) as f64 / total.max(f64::MIN_POSITIVE),
        median_ms: median * 1e3,
        iters: times.len(),
        warmup_s,
    })
}

/// Autotune settings.
#[derive(Debug, Clone, Copy)]
pub struct TuneOptions {
    /// Largest batch tried (rounded down to a power of two).
    pub max_batch: usize,
    /// Timed seconds per network per point (after its warm-up call).
    pub budget: Duration,
    /// A point whose batch takes longer than this (detector + recognition) is not used.
    pub latency_cap: Duration,
    /// The smallest batch reaching this share of the best throughput is chosen.
    pub fraction: f64,
}

impl Default for TuneOptions {
    fn default() -> Self {
        Self {
            max_batch: 256,
            budget: Duration::from_millis(200),
            latency_cap: Duration::from_secs(1),
            fraction: 0.9,
        }
    }
}

/// A measured point as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub batch: usize,
    /// Images per second through detector + recognition.
    pub items_per_s: f64,
    /// Seconds for one batch through both networks.
    pub latency_s: f64,
}

/// Why the sweep ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// `max_batch` was measured.
    MaxBatch,
    /// The last point's throughput fell below `FALL` of the best.
    ThroughputFell,
    /// The last point's latency exceeded the cap.
    LatencyCap,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::MaxBatch => "largest batch reached",
            Stop::ThroughputFell => "throughput fell",
            Stop::LatencyCap => "latency cap exceeded",
        })
    }
}

/// What to do after the points measured so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Measure this batch next.
    Measure(usize),
    /// Done: use `batch`.
    Done { batch: usize, stop: Stop },
}

/// The autotune rule, on the points measured so far (batches 1, 2, 4, ... in order).
pub fn decide(table: &[Timing], opts: &TuneOptions) -> Decision {
    let Some(last) = table.last() else {
        return Decision::Measure(1);
    };
    let cap = opts.latency_cap.as_secs_f64();
    let best_before = table[..table.len() - 1]
        .iter()
        .map(|t| t.items_per_s)
        .fold(0.0, f64::max);
    let stop = if last.latency_s > cap {
        Some(Stop::LatencyCap)
    } else if last.items_per_s < FALL * best_before {
        Some(Stop::ThroughputFell)
    } else if last.batch.saturating_mul(2) > opts.max_batch.max(1) {
        Some(Stop::MaxBatch)
    } else {
        None
    };
    match stop {
        None => Decision::Measure(last.batch * 2),
        Some(stop) => Decision::Done {
            batch: choose(table, opts),
            stop,
        },
    }
}

/// The smallest batch whose throughput reaches `fraction` of the best, among the points
/// within the latency cap (batch 1 is always eligible).
pub fn choose(table: &[Timing], opts: &TuneOptions) -> usize {
    let cap = opts.latency_cap.as_secs_f64();
    let eligible: Vec<&Timing> = table
        .iter()
        .filter(|t| t.latency_s <= cap || t.batch == 1)
        .collect();
    let best = eligible.iter().map(|t| t.items_per_s).fold(0.0, f64::max);
    eligible
        .iter()
        .filter(|t| t.items_per_s >= opts.fraction * best)
        .map(|t| t.batch)
        .min()
        .unwrap_or(1)
}

/// One measured autotune point.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TunePoint {
    pub batch: usize,
    pub recognition: Sample,
    pub detector: Sample,
    /// Images per second through both networks.
    pub items_per_s: f64,
    /// Milliseconds for one batch through both networks (medians).
    pub latency_ms: f64,
}

/// The autotune's table and choice.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneReport {
    /// `ssd` or `tiny`.
    pub detector: &'static str,
    pub points: Vec<TunePoint>,
    pub chosen: usize,
    pub stop: Stop,
}

/// Runs the autotune on loaded models: see the module documentation.
pub fn autotune(
    models: &Models,
    detector: Detector,
    opts: &TuneOptions,
) -> Result<TuneReport, EngineError> {
    let mut points: Vec<TunePoint> = Vec::new();
    let mut table: Vec<Timing> = Vec::new();
    loop {
        let batch = match decide(&table, opts) {
            Decision::Measure(batch) => batch,
            Decision::Done { batch, stop } => {
                return Ok(TuneReport {
                    detector: match detector {
                        // Auto's photos go to SSD: the costlier net sets the knee.
                        Detector::Ssd | Detector::Auto => "ssd",
                        Detector::Tiny => "tiny",
                    },
                    points,
                    chosen: batch,
                    stop,
                });
            }
        };
        let chips = synthetic(batch, models::RECOGNITION_SIZE);
        let recognition = measure(batch, opts.budget, || {
            models.embed(chips.clone(), batch).map(drop)
        })?;
        let detector_sample = match detector {
            Detector::Ssd | Detector::Auto => {
                let input = synthetic(batch, models::SSD_SIZE);
                measure(batch, opts.budget, || {
                    models.ssd(input.clone(), batch).map(drop)
                })?
            }
            Detector::Tiny => {
                let input = synthetic(batch, models::TINY_SIZE);
                measure(batch, opts.budget, || {
                    models.tiny(input.clone(), batch).map(drop)
                })?
            }
        };
        let items_per_s = 1.0 / (1.0 / recognition.items_per_s + 1.0 / detector_sample.items_per_s);
        let latency_ms = recognition.median_ms + detector_sample.median_ms;
        tracing::info!(
            batch,
            items_per_s,
            latency_ms,
            recognition_items_per_s = recognition.items_per_s,
            detector_items_per_s = detector_sample.items_per_s,
            "batch autotune point"
        );
        table.push(Timing {
            batch,
            items_per_s,
            latency_s: latency_ms / 1e3,
        });
        points.push(TunePoint {
            batch,
            recognition,
            detector: detector_sample,
            items_per_s,
            latency_ms,
        });
    }
}

/// `n` planar RGB images of `side` x `side` with a fixed pattern in 0..255.
fn synthetic(n: usize, side: u32) -> Vec<f32> {
    let len = n * 3 * (side as usize) * (side as usize);
    (0..len)
        .map(|i| ((i * 37 + i / 1024) % 256) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> TuneOptions {
        TuneOptions {
            max_batch: 256,
            budget: Duration::ZERO,
            latency_cap: Duration::from_secs(1),
            fraction: 0.9,
        }
    }

    /// Runs the rule against a device described by `timing(batch) -> (items/s, latency s)`;
    /// returns the batches measured and the decision.
    fn run(opts: &TuneOptions, timing: impl Fn(usize) -> (f64, f64)) -> (Vec<usize>, usize, Stop) {
        let mut table = Vec::new();
        loop {
            match decide(&table, opts) {
                Decision::Measure(b) => {
                    let (items_per_s, latency_s) = timing(b);
                    table.push(Timing {
                        batch: b,
                        items_per_s,
                        latency_s,
                    });
                }
                Decision::Done { batch, stop } => {
                    return (table.iter().map(|t| t.batch).collect(), batch, stop);
                }
            }
        }
    }

    #[test]
    fn a_gpu_that_saturates_gets_the_smallest_batch_near_the_plateau() {
        // Throughput grows until 64, then flat; latency well under the cap.
        let table = |b: usize| -> (f64, f64) {
            let per_s = [(1, 100.0), (2, 190.0), (4, 360.0), (8, 650.0), (16, 1100.0)]
                .iter()
                .find(|(k, _)| *k == b)
                .map_or(if b >= 64 { 2000.0 } else { 1750.0 }, |p| p.1);
            (per_s, b as f64 / per_s)
        };
        let (measured, batch, stop) = run(&opts(), table);
        assert_eq!(measured, vec![1, 2, 4, 8, 16, 32, 64, 128, 256]);
        assert_eq!(stop, Stop::MaxBatch);
        // 32 gives 1750 < 0.9 x 2000; 64 is the first at the plateau.
        assert_eq!(batch, 64);
    }

    #[test]
    fn a_point_over_the_latency_cap_ends_the_sweep_and_is_not_chosen() {
        // A slow CPU: throughput keeps rising a little, latency doubles each time.
        let table = |b: usize| {
            let per_s = 4.0 + (b as f64).log2() * 0.4;
            (per_s, b as f64 / per_s)
        };
        let (measured, batch, stop) = run(&opts(), table);
        // 1: 4.0/s 0.25 s, 2: 4.4/s 0.45 s, 4: 4.8/s 0.83 s, 8: 5.2/s 1.54 s (over the cap).
        assert_eq!(measured, vec![1, 2, 4, 8]);
        assert_eq!(stop, Stop::LatencyCap);
        // Among 1, 2, 4: best 4.8 at 4; 0.9 x 4.8 = 4.32 is reached first at 2.
        assert_eq!(batch, 2);
    }

    #[test]
    fn falling_throughput_ends_the_sweep() {
        let per = [(1, 10.0), (2, 30.0), (4, 40.0), (8, 20.0), (16, 50.0)];
        let table = |b: usize| {
            let v = per.iter().find(|(k, _)| *k == b).map_or(1.0, |p| p.1);
            (v, 0.01)
        };
        let (measured, batch, stop) = run(&opts(), table);
        assert_eq!(measured, vec![1, 2, 4, 8]);
        assert_eq!(stop, Stop::ThroughputFell);
        assert_eq!(batch, 4);
        // Within FALL of the best the sweep goes on (noise on a plateau).
        let noisy = |b: usize| (if b == 8 { 39.0 } else { 40.0 }, 0.01);
        let (measured, batch, _) = run(&opts(), noisy);
        assert_eq!(measured.last(), Some(&256));
        assert_eq!(batch, 1);
    }

    #[test]
    fn batch_one_over_the_cap_is_still_the_answer() {
        let (measured, batch, stop) = run(&opts(), |b| (1.0, 5.0 * b as f64));
        assert_eq!((measured, batch, stop), (vec![1], 1, Stop::LatencyCap));
    }

    #[test]
    fn the_largest_batch_bounds_the_sweep() {
        let o = TuneOptions {
            max_batch: 20,
            ..opts()
        };
        let (measured, batch, stop) = run(&o, |b| (b as f64, 0.001));
        assert_eq!(measured, vec![1, 2, 4, 8, 16]);
        assert_eq!((batch, stop), (16, Stop::MaxBatch));
    }

    #[test]
    fn measure_counts_iterations_and_excludes_the_warm_up() {
        let mut calls = 0;
        let s = measure::<()>(8, Duration::ZERO, || {
            calls += 1;
            Ok(())
        })
        .expect("runs");
        assert_eq!((calls, s.iters, s.batch), (2, 1, 8));
        assert!(s.items_per_s > 0.0 && s.median_ms >= 0.0 && s.warmup_s >= 0.0);
        let failed = measure(1, Duration::ZERO, || Err::<(), _>("boom"));
        assert_eq!(failed, Err("boom"));
    }
}
