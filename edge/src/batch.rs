//! Bulk jobs (`/v1/batches`): many images in one upload (multipart with many files, or a
//! tar body), each stored and queued as its own request tagged with the batch id; results
//! are collected as they arrive and streamed as NDJSON.
//!
//! The job table lives in this edge's memory (bounded: the oldest finished jobs are
//! forgotten first). Every result is also in the output bucket under its request id, so a
//! job's results survive an edge restart there even when its table entry does not.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
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

    /// Unfinished jobs (for the sweeper that looks for missed results in the bucket).
    pub fn unfinished(&self) -> Vec<Arc<Job>> {
        lock(&self.jobs)
            .values()
            .filter(|j| !j.progress().finished())
            .cloned()
            .collect()
    }
}

/// One file of a tar archive, or the reason it was skipped.
#[derive(Debug)]
pub enum TarEntry {
    File {
        name: String,
        bytes: Bytes,
    },
    /// A regular file over the size limit: its bytes were skipped, never buffered.
    TooLarge {
        name: String,
        size: u64,
    },
}

/// Reads a tar stream entry by entry, buffering at most one file (≤ `max_file` bytes).
/// Understands ustar names with prefixes, GNU long names (`L`) and pax `path` records;
/// directories, links and other entries are skipped.
pub struct TarReader<S> {
    stream: S,
    buf: BytesMut,
    max_file: u64,
    long_name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("truncated tar archive")]
    Truncated,
    #[error("malformed tar header: {0}")]
    Header(&'static str),
    #[error("reading the body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

impl<S, E> TarReader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    pub fn new(stream: S, max_file: u64) -> Self {
        TarReader {
            stream,
            buf: BytesMut::new(),
            max_file,
            long_name: None,
        }
    }

    /// Ensures `n` bytes are buffered; false at a clean end of stream.
    async fn fill(&mut self, n: usize) -> Result<bool, TarError> {
        while self.buf.len() < n {
            match self.stream.next().await {
                Some(Ok(b)) => self.buf.extend_from_slice(&b),
                Some(Err(e)) => return Err(TarError::Body(e.into())),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Discards `n` bytes without keeping more than one frame.
    async fn skip(&mut self, mut n: u64) -> Result<(), TarError> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill(1).await? {
                return Err(TarError::Truncated);
            }
            let take = n.min(self.buf.len() as u64) as usize;
            self.buf.advance(take);
            n -= take as u64;
        }
        Ok(())
    }

    async fn take(&mut self, n: usize) -> Result<Bytes, TarError> {
        if !self.fill(n).await? {
            return Err(TarError::Truncated);
        }
        Ok(self.buf.split_to(n).freeze())
    }

    /// The next file, or `None` at the end of the archive.
    pub async fn next_entry(&mut self) -> Result<Option<TarEntry>, TarError> {
        loop {
            if !self.fill(512).await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(TarError::Truncated)
                };
            }
            let header = self.buf.split_to(512);
            if header.iter().all(|&b| b == 0) {
                return Ok(None); // end-of-archive block
            }
            let stored: u32 = octal(&header[148..156]).ok_or(TarError::Header("checksum"))? as u32;
            let sum: u32 = header
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(b)
                    }
                })
                .sum();
            if sum != stored {
                return Err(TarError::Header("checksum mismatch"));
            }
            let size = size_field(&header[124..136]).ok_or(TarError::Header("size"))?;
            let padded = size.div_ceil(512) * 512;
            let kind = header[156];
            let mut name = cstr(&header[0..100]);
            if &header[257..262] == b"ustar" {
                let prefix = cstr(&header[345..500]);
                if !prefix.is_empty() {
                    name = format!("{prefix}/{name}");
                }
            }
            match kind {
                b'L' | b'x' => {
                    // GNU long name, or a pax header: both name the next entry.
                    if size > 64 * 1024 {
                        return Err(TarError::Header("oversized extended header"));
                    }
                    let data = self.take(size as usize).await?;
                    self.skip(padded - size).await?;
                    self.long_name = if kind == b'L' {
                        Some(cstr(&data))
                    } else {
                        pax_path(&data).or(self.long_name.take())
                    };
                }
                b'0' | 0 | b'7' => {
                    let name = self.long_name.take().unwrap_or(name);
                    if size > self.max_file {
                        self.skip(padded).await?;
                        return Ok(Some(TarEntry::TooLarge { name, size }));
                    }
                    let bytes = self.take(size as usize).await?;
                    self.skip(padded - size).await?;
                    return Ok(Some(TarEntry::File { name, bytes }));
                }
                _ => {
                    self.long_name = None;
                    self.skip(padded).await?;
                }
            }
        }
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn octal(b: &[u8]) -> Option<u64> {
    let s = cstr(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// The size field: octal, or GNU base-256 for large files.
fn size_field(b: &[u8]) -> Option<u64> {
    if b[0] & 0x80 != 0 {
        return b[1..].iter().try_fold(0u64, |acc, &x| {
            acc.checked_mul(256).map(|v| v | u64::from(x))
        });
    }
    octal(b)
}

/// The `path` record of a pax extended header (`"<len> path=<value>\n"` records).
fn pax_path(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    text.lines().find_map(|rec| {
        let (_, kv) = rec.split_once(' ')?;
        kv.strip_prefix("path=").map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &str, size: usize, kind: u8) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn entry(out: &mut Vec<u8>, name: &str, data: &[u8], kind: u8) {
        out.extend(header(name, data.len(), kind));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn stream(bytes: Vec<u8>, chunk: usize) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let chunks: Vec<Result<Bytes, String>> = bytes
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(chunks)
    }

    #[tokio::test]
    async fn reads_files_skips_others_and_bounds_sizes() {
        let mut tar = Vec::new();
        entry(&mut tar, "dir/", b"", b'5');
        entry(&mut tar, "dir/a.jpg", b"hello", b'0');
        let long = format!("{}/b.png", "x".repeat(120));
        entry(
            &mut tar,
            "././@LongLink",
            format!("{long}\0").as_bytes(),
            b'L',
        );
        entry(&mut tar, "truncated-name", &[7u8; 600], b'0');
        entry(&mut tar, "big.jpg", &[1u8; 3000], b'0');
        entry(&mut tar, "pax", b"20 path=c/pax.gif\n", b'x');
        entry(&mut tar, "short", b"gif", b'0');
        tar.extend([0u8; 1024]);
        for chunk in [1, 7, 512, 100_000] {
            let mut r = TarReader::new(stream(tar.clone(), chunk), 1000);
            let mut got = Vec::new();
            while let Some(e) = r.next_entry().await.expect("valid tar") {
                got.push(match e {
                    TarEntry::File { name, bytes } => format!("{name}:{}", bytes.len()),
                    TarEntry::TooLarge { name, size } => format!("{name}:too large {size}"),
                });
            }
            assert_eq!(
                got,
                vec![
                    "dir/a.jpg:5".to_string(),
                    format!("{long}:600"),
                    "big.jpg:too large 3000".into(),
                    "c/pax.gif:3".into()
                ]
            );
        }
    }

    #[tokio::test]
    async fn rejects_truncated_and_corrupt_archives() {
        let mut tar = Vec::new();
        entry(&mut tar, "a.jpg", &[1u8; 700], b'0');
        let mut r = TarReader::new(stream(tar[..800].to_vec(), 64), 10_000);
        assert!(matches!(r.next_entry().await, Err(TarError::Truncated)));
        let mut bad = tar.clone();
        bad[0] ^= 1;
        let mut r = TarReader::new(stream(bad, 64), 10_000);
        assert!(matches!(r.next_entry().await, Err(TarError::Header(_))));
        let mut r = TarReader::new(stream(b"not a tar at all".to_vec(), 64), 10_000);
        assert!(r.next_entry().await.is_err());
    }

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
