//! Bulk jobs (`/v1/batches`): many images in one upload (multipart with many files, or a
//! zip or tar body, see `archive`), each stored and queued as its own request tagged with the batch id; results
//! are collected as they arrive and streamed as NDJSON.
//!
//! A job is stored state: its manifest (`Manifest`: id, created, the request ids in
//! upload order, sealed or cut off) lives in the output bucket next to the results, which
//! are there under their request ids (a file rejected before queueing too). So any edge,
//! or this one after a restart, serves a job it did not take (`Batches::restore`). The
//! table here is the fast path: the job this edge took, and the results its response
//! poller routes to it (bounded: the oldest finished jobs are forgotten first).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use facerec_seams::sync::lock;

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
    /// Why the upload ended before its end (the job holds what was stored before).
    cut_off: Option<String>,
}

/// A job as stored in the output bucket (`manifest_key`), rewritten as its upload goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: String,
    /// Unix time in milliseconds.
    pub created_ms: u64,
    /// When this manifest was written, unix milliseconds: an unsealed manifest that stops
    /// changing belongs to an upload whose edge died (`Manifest::stale`).
    pub updated_ms: u64,
    pub sealed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_off: Option<String>,
    /// Request ids in upload order.
    pub items: Vec<String>,
    /// Once every item has its result: how many were recognised and how many failed (so a
    /// listing reads one object per job, not its results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// The counts of a finished job (`Manifest::outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub done: usize,
    pub failed: usize,
}

/// Where a job's manifest is stored (output bucket).
pub fn manifest_key(id: &str) -> String {
    format!("batches/{id}.json")
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long ago `ms` (unix milliseconds) was; zero for a time in the future.
fn since(ms: u64) -> Duration {
    Duration::from_millis(unix_ms(SystemTime::now()).saturating_sub(ms))
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("manifests serialise"))
    }

    /// Created more than `retention` ago: the job is gone, even where the store's sweep
    /// has not deleted this manifest yet (its results, written after it was created, may
    /// already be; a job restored from it would wait for them forever).
    pub fn past(&self, retention: Duration) -> bool {
        since(self.created_ms) > retention
    }

    /// Unsealed and unchanged for longer than `quiet`: its upload will not go on.
    pub fn stale(&self, quiet: Duration) -> bool {
        !self.sealed && since(self.updated_ms) > quiet
    }
}

/// A bulk job.
#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub created: Instant,
    /// The same moment as wall-clock time, unix milliseconds (for the manifest).
    created_ms: u64,
    /// Loaded from the store rather than taken here: its upload may still be going on
    /// at another edge, so its manifest is read again until sealed.
    pub restored: bool,
    /// The finished job's manifest, with its outcome, is stored.
    outcome_stored: AtomicBool,
    state: Mutex<JobState>,
    /// Bumped whenever a line is added or the job is sealed.
    changed: watch::Sender<usize>,
}

/// Progress of a job, as `GET /v1/batches/{id}` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub total: usize,
    pub done: usize,
    pub failed: usize,
    pub sealed: bool,
    pub cut_off: Option<String>,
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
            created_ms: unix_ms(SystemTime::now()),
            restored: false,
            outcome_stored: AtomicBool::new(false),
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
            cut_off: s.cut_off.clone(),
        }
    }

    /// The job as it is to be stored now (with its outcome once finished).
    pub fn manifest(&self) -> Manifest {
        let s = lock(&self.state);
        let finished = s.sealed && s.done + s.failed >= s.items.len();
        Manifest {
            id: self.id.clone(),
            created_ms: self.created_ms,
            updated_ms: unix_ms(SystemTime::now()),
            sealed: s.sealed,
            cut_off: s.cut_off.clone(),
            items: s.items.iter().map(|i| i.request_id.clone()).collect(),
            outcome: finished.then_some(Outcome {
                done: s.done,
                failed: s.failed,
            }),
        }
    }

    /// When the job was created, unix milliseconds.
    pub fn created_ms(&self) -> u64 {
        self.created_ms
    }

    /// Finished, and its outcome not stored yet: marks it stored (the caller stores it).
    pub fn take_outcome_to_store(&self) -> bool {
        self.progress().finished() && !self.outcome_stored.swap(true, Ordering::Relaxed)
    }

    /// Storing the outcome failed: try again at the next sweep.
    pub fn outcome_not_stored(&self) {
        self.outcome_stored.store(false, Ordering::Relaxed);
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
    /// Opens a new job; `None` when a job of that id is in the table already (two uploads
    /// under one `Idempotency-Key` at once).
    pub fn create(&self, id: String) -> Option<Arc<Job>> {
        let job = Arc::new(Job::new(id.clone()));
        let mut jobs = lock(&self.jobs);
        if jobs.contains_key(&id) {
            return None;
        }
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
        Some(job)
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

    /// The upload ended: no more items; `cut_off` says why when it ended early.
    pub fn seal(&self, job: &Arc<Job>, cut_off: Option<String>) {
        {
            let mut s = lock(&job.state);
            s.sealed = true;
            s.cut_off = cut_off;
        }
        job.bump();
    }

    /// A job taken by another edge (or by this one before a restart), from its stored
    /// manifest and the results already stored (`results[i]`: item `i`'s NDJSON line and
    /// whether it failed). Its missing results come through the response queue or the
    /// bucket sweep like any job's. A stale unsealed manifest (`Manifest::stale` after
    /// `quiet`) is sealed as cut off. The job already in the table wins.
    pub fn restore(
        &self,
        manifest: &Manifest,
        results: Vec<Option<(String, bool)>>,
        quiet: Duration,
    ) -> Arc<Job> {
        let age = since(manifest.created_ms);
        let job = {
            let mut jobs = lock(&self.jobs);
            if let Some(job) = jobs.get(&manifest.id) {
                return job.clone();
            }
            let job = Arc::new(Job {
                id: manifest.id.clone(),
                created: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
                created_ms: manifest.created_ms,
                restored: true,
                outcome_stored: AtomicBool::new(manifest.outcome.is_some()),
                state: Mutex::new(JobState::default()),
                changed: watch::channel(0).0,
            });
            jobs.insert(manifest.id.clone(), job.clone());
            lock(&self.order).push_back(manifest.id.clone());
            job
        };
        self.extend_restored(&job, manifest, results, quiet);
        job
    }

    /// Brings a restored job up to a newer manifest of it: the items it does not have
    /// yet (`results` holds one entry per item of `manifest`), and the seal.
    pub fn extend_restored(
        &self,
        job: &Arc<Job>,
        manifest: &Manifest,
        results: Vec<Option<(String, bool)>>,
        quiet: Duration,
    ) {
        let known = lock(&job.state).items.len();
        for (id, result) in manifest.items.iter().zip(results).skip(known) {
            self.add(job, id.clone());
            if let Some((line, failed)) = result {
                self.deliver(id, line, failed);
            }
        }
        if manifest.sealed {
            self.seal(job, manifest.cut_off.clone());
        } else if manifest.stale(quiet) {
            let why = "the upload stopped without its end (the edge that took it went away); \
                       the job holds what was stored before";
            self.seal(job, Some(why.to_string()));
        }
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
        let job = batches.create("j1".into()).expect("a new job");
        batches.add(&job, "r1".into());
        batches.add_failed(&job, "r0".into(), "{\"error\":1}".into());
        batches.add(&job, "r2".into());
        let reader = tokio::spawn(job.clone().stream().collect::<Vec<Bytes>>());
        assert!(batches.deliver("r2", "{\"n\":2}".into(), false));
        assert!(
            !batches.deliver("r2", "{\"n\":2}".into(), false),
            "a duplicate is ignored"
        );
        batches.seal(&job, None);
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
                sealed: true,
                cut_off: None,
            }
        );
    }

    #[tokio::test]
    async fn a_restored_job_continues_from_its_manifest() {
        let taken = Batches::default();
        let job = taken.create("j2".into()).expect("a new job");
        taken.add(&job, "j2-0".into());
        taken.add(&job, "j2-1".into());
        let first = job.manifest();
        assert!(!first.sealed);
        // Another edge reads the manifest mid-upload, with item 0's result stored.
        let other = Batches::default();
        let quiet = Duration::from_secs(60);
        let back = Manifest::parse(&first.to_bytes()).expect("round trip");
        let restored = other.restore(&back, vec![Some(("{\"n\":0}".into(), false)), None], quiet);
        assert!(restored.restored);
        assert_eq!(restored.progress().done, 1);
        assert!(!restored.progress().sealed);
        // The upload goes on and ends; the newer manifest brings the rest.
        taken.add(&job, "j2-2".into());
        taken.seal(&job, None);
        let last = job.manifest();
        other.extend_restored(
            &restored,
            &last,
            vec![None, None, Some(("{\"n\":2}".into(), true))],
            quiet,
        );
        assert!(other.deliver("j2-1", "{\"n\":1}".into(), false));
        let p = restored.progress();
        assert_eq!((p.total, p.done, p.failed, p.finished()), (3, 2, 1, true));
        let lines: Vec<u8> = restored
            .clone()
            .stream()
            .collect::<Vec<Bytes>>()
            .await
            .concat();
        assert_eq!(lines.iter().filter(|&&b| b == b'\n').count(), 3);
        // A manifest nobody updates any more is sealed as cut off.
        let mut dead = first.clone();
        dead.id = "j3".into();
        dead.updated_ms -= 120_000;
        let j3 = other.restore(&dead, vec![None, None], quiet);
        assert!(j3.progress().sealed);
        assert!(j3.progress().cut_off.is_some());
    }

    #[test]
    fn a_manifest_is_past_its_retention_by_its_creation() {
        let batches = Batches::default();
        let job = batches.create("j4".into()).expect("a new job");
        let mut m = job.manifest();
        let day = Duration::from_secs(24 * 3600);
        assert!(!m.past(day));
        // Rewritten just now (its outcome), but created two days ago: gone.
        m.created_ms -= 2 * 24 * 3600 * 1000;
        assert!(m.past(day));
    }
}
