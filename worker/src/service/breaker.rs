//! The circuit breaker: consecutive queue/store failures pause polling with a doubling
//! cool-down, and too many make the worker give up.

use super::*;

/// Pauses polling after consecutive failures, with a doubling cool-down.
pub(super) struct Breaker {
    /// Failed operations of any kind since the last success (opens the circuit).
    pub(super) consecutive: AtomicU32,
    /// Failed receives since the last success: the measure of an outage that makes the
    /// worker give up. Concurrent operations failing together count once per poll.
    pub(super) failed_polls: AtomicU32,
    pub(super) open_until: Mutex<Option<Instant>>,
    pub(super) last: Mutex<String>,
}

pub(super) const BREAKER_MIN: Duration = Duration::from_millis(500);
pub(super) const BREAKER_MAX: Duration = Duration::from_secs(30);

impl Worker {
    pub(super) fn success(&self) {
        self.breaker.failed_polls.store(0, Ordering::Relaxed);
        if self.breaker.consecutive.swap(0, Ordering::Relaxed) >= self.config.breaker_after {
            tracing::info!("circuit closed");
        }
        *lock(&self.breaker.open_until) = None;
        self.metrics.circuit_open.set(0);
    }

    pub(super) fn failure(&self, op: &'static str, e: &SeamError) {
        Metrics::count(&self.metrics.seam_errors, "op", op);
        let n = self.breaker.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        *lock(&self.breaker.last) = format!("{op}: {e}");
        let polls = if op == "receive" {
            self.breaker.failed_polls.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.breaker.failed_polls.load(Ordering::Relaxed)
        };
        if polls >= self.config.max_consecutive_failures {
            tracing::error!(failed_polls = polls, error = %e, "too many consecutive failures, stopping");
            self.fatal.cancel();
        } else if n >= self.config.breaker_after {
            let exp = (n - self.config.breaker_after).min(6);
            let cool = (BREAKER_MIN * 2u32.pow(exp)).min(BREAKER_MAX);
            tracing::warn!(failures = n, cool_down_s = cool.as_secs_f32(), error = %e, "circuit open: pausing polling");
            *lock(&self.breaker.open_until) = Some(Instant::now() + cool);
            self.metrics.circuit_open.set(1);
        }
    }
}
