//! Jobs on a fixed number of concurrent clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::outcome::Outcome;

/// Runs jobs `0..jobs` on `clients` concurrent tasks (at least one, at most one per job),
/// each taking the next job as it finishes one; the outcomes of every job.
pub(crate) async fn pool<F, Fut>(clients: usize, jobs: usize, work: F) -> Vec<Outcome>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Vec<Outcome>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients.clamp(1, jobs.max(1)))
        .map(|_| {
            let (next, work) = (next.clone(), work.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= jobs {
                        return outcomes;
                    }
                    outcomes.extend(work(i).await);
                }
            })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(jobs);
    for t in tasks {
        if let Ok(o) = t.await {
            outcomes.extend(o);
        }
    }
    outcomes
}
