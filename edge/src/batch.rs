//! Bulk jobs (`/v1/batches`): many images in one upload (multipart with many files, or a
//! zip or tar body, see `archive`), each stored and queued as its own request tagged with the batch id; results
//! are collected as they arrive and streamed as NDJSON.
//!
//! The job table lives in this edge's memory (bounded: the oldest finished jobs are
//! forgotten first). Every result is also in the output bucket under its request id, so a
//! job's results survive an edge restart there even when its table entry does not.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use crate::lock;

/// Jobs kept in memory; beyond that the oldest finished ones are dropped.
const MAX_JOBS: usize = 1000;

/// One image of a job.
#[derive(Debug)]
struct Item {
    request_id: String,
    done: bool,
}

#[derive(Debug, Default)]
struct JobState {
    items: Vec<Item>,
    /// NDJSON lines in completion order.
    lines: Vec<String>,
    done: usize,
    failed: usize,
    /// All files have been submitted (the upload ended).
    sealed: bool,
}

/// A bulk job.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub created: Instant,
    state: Mutex<JobState>,
    /// Bumped whenever a line is added or the job is sealed.
    changed: watch::Sender<usize>,
}

/// Progress of a job, as `GET /v1/batches/{id}` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub sealed: bool,
}

impl Progress {
    pub fn finished(&self) -> bool {
        self.sealed && self.done + self.failed >= self.total
    }
}

impl Job {
    fn new(id: String) -> Self {
        Job {
            id,
            created: Instant::now(),
            state: Mutex::new(JobState::default()),
            changed: watch::channel(0).0,
        }
    }

    pub fn progress(&self) -> Progress {
        let s = lock(&self.state);
        Progress {
            total: s.items.len(),
            done: s.done,
            failed: s.failed,
            sealed: s.sealed,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Request ids still without a result.
    pub fn missing(&self) -> Vec<String> {
        lock(&self.state)
            .items
            .iter()
            .filter(|i| !i.done)
            .map(|i| i.request_id.clone())
            .collect()
    }

    /// Records an item's outcome (once; repeats are ignored). `line` is its NDJSON line.
    fn complete(&self, request_id: &str, line: String, failed: bool) -> bool {
        let mut s = lock(&self.state);
        let Some(item) = s
            .items
            .iter_mut()
            .find(|i| i.request_id == request_id && !i.done)
        else {
            return false;
        };
        item.done = true;
        if failed {
            s.failed += 1;
        } else {
            s.done += 1;
        }
        s.lines.push(line);
        drop(s);
        self.bump();
        true
    }

    /// The NDJSON results as a stream: lines already there, then each as it arrives,
    /// ending when every image has a result.
    pub fn stream(self: Arc<Self>) -> impl Stream<Item = Bytes> + Send + 'static {
        let rx = self.changed.subscribe();
        futures_util::stream::unfold(
            (self, rx, 0usize, false),
            |(job, mut rx, mut next, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let (chunk, finished) = {
                        let s = lock(&job.state);
                        let chunk: String = s.lines[next.min(s.lines.len())..]
                            .iter()
                            .map(|l| format!("{l}\n"))
                            .collect();
                        next = s.lines.len();
                        (chunk, s.sealed && s.done + s.failed >= s.items.len())
                    };
                    if !chunk.is_empty() {
                        return Some((Bytes::from(chunk), (job, rx, next, finished)));
                    }
                    if finished {
                        return None;
                    }
                    if rx.changed().await.is_err() {
                        return None;
                    }
                }
            },
        )
    }
}

/// The table of jobs and the index from request id to job.
#[derive(Debug, Default)]
pub struct Batches {
    jobs: Mutex<HashMap<String, Arc<Job>>>,
    order: Mutex<VecDeque<String>>,
    by_request: Mutex<HashMap<String, Arc<Job>>>,
}

impl Batches {
    /// Opens a new job.
    pub fn create(&self, id: String) -> Arc<Job> {
        let job = Arc::new(Job::new(id.clone()));
        let mut jobs = lock(&self.jobs);
        let mut order = lock(&self.order);
        // Past the bound, forget the oldest finished job (unfinished ones stay).
        let oldest_finished = || {
            order
                .iter()
                .position(|j| jobs.get(j).is_none_or(|j| j.progress().finished()))
        };
        if jobs.len() >= MAX_JOBS
            && let Some(pos) = oldest_finished()
            && let Some(old) = order.remove(pos)
        {
            jobs.remove(&old);
        }
        jobs.insert(id.clone(), job.clone());
        order.push_back(id);
        job
    }

    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        lock(&self.jobs).get(id).cloned()
    }

    /// Every job this edge knows, newest first.
    pub fn newest_first(&self) -> Vec<Arc<Job>> {
        let jobs = lock(&self.jobs);
        let order = lock(&self.order);
        order
            .iter()
            .rev()
            .filter_map(|id| jobs.get(id).cloned())
            .collect()
    }

    /// Adds an image that was queued; its result is routed here by request id.
    pub fn add(&self, job: &Arc<Job>, request_id: String) {
        lock(&job.state).items.push(Item {
            request_id: request_id.clone(),
            done: false,
        });
        lock(&self.by_request).insert(request_id, job.clone());
    }

    /// Adds an image that failed before queueing (not an image, too large, ...).
    pub fn add_failed(&self, job: &Arc<Job>, request_id: String, line: String) {
        lock(&job.state).items.push(Item {
            request_id: request_id.clone(),
            done: false,
        });
        job.complete(&request_id, line, true);
    }

    /// The upload ended: no more items.
    pub fn seal(&self, job: &Arc<Job>) {
        lock(&job.state).sealed = true;
        job.bump();
    }

    /// Routes a result to its job; false if no job waits for this request id.
    pub fn deliver(&self, request_id: &str, line: String, failed: bool) -> bool {
        let job = lock(&self.by_request).remove(request_id);
        match job {
            Some(job) => job.complete(request_id, line, failed),
            None => false,
        }
    }

    /// Forgets finished jobs created more than `age` ago (the retention); how many.
    pub fn forget_finished_before(&self, age: std::time::Duration) -> usize {
        let mut jobs = lock(&self.jobs);
        let before = jobs.len();
        jobs.retain(|_, j| !(j.progress().finished() && j.created.elapsed() > age));
        lock(&self.order).retain(|id| jobs.contains_key(id));
        before - jobs.len()
    }

    /// Unfinished jobs (for the sweeper that looks for missed results in the bucket).
    pub fn unfinished(&self) -> Vec<Arc<Job>> {
        lock(&self.jobs)
            .values()
            .filter(|j| !j.progress().finished())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn streams_results_until_every_item_is_done() {
        let batches = Batches::default();
        let job = batches.create("j1".into());
        batches.add(&job, "r1".into());
        batches.add_failed(&job, "r0".into(), "{\"error\":1}".into());
        batches.add(&job, "r2".into());
        let reader = tokio::spawn(job.clone().stream().collect::<Vec<Bytes>>());
        assert!(batches.deliver("r2", "{\"n\":2}".into(), false));
        assert!(
            !batches.deliver("r2", "{\"n\":2}".into(), false),
            "a duplicate is ignored"
        );
        batches.seal(&job);
        assert!(!job.progress().finished());
        assert!(batches.deliver("r1", "{\"n\":1}".into(), false));
        let lines: Vec<u8> = reader.await.expect("stream").concat();
        assert_eq!(
            String::from_utf8(lines).expect("utf8"),
            "{\"error\":1}\n{\"n\":2}\n{\"n\":1}\n"
        );
        assert_eq!(
            job.progress(),
            Progress {
                total: 3,
                done: 2,
                failed: 1,
                sealed: true
            }
        );
    }
}
