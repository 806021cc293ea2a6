//! The load harness behind `facerec bench`: sends images to a running edge (`facerec up` or
//! `facerec edge`) with a fixed number of concurrent clients, one request per connection
//! (as the original workload generator did), and reports throughput, latency percentiles,
//! errors by status, and correctness against expected names. The bulk route (many images
//! per request, results streamed back) is in [`crate::batch`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Which route the requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /` with multipart `inputFile`; the answer is `<stem>:<name>`.
    Original,
    /// `POST /v1/recognize` with one `image`; the answer is JSON.
    Recognize,
    /// `GET /health` (no image): the web tier alone.
    Health,
    /// `POST /v1/batches` with many `images`, then `GET /v1/batches/{id}/results` (NDJSON):
    /// each image's latency runs from its upload's start to its result line's arrival.
    Batch,
}

impl std::str::FromStr for Route {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "original" | "/" => Ok(Route::Original),
            "recognize" | "/v1/recognize" => Ok(Route::Recognize),
            "health" | "/health" => Ok(Route::Health),
            "batch" | "/v1/batches" => Ok(Route::Batch),
            other => Err(format!(
                "unknown route {other:?} (original, recognize, health, batch)"
            )),
        }
    }
}

/// One image to send, with the name it should come back with when known.
#[derive(Debug, Clone)]
pub struct Item {
    pub filename: String,
    pub bytes: Bytes,
    pub expected: Option<String>,
}

/// Loads the images of a folder (its files, sorted by name) or of a `.zip` (every file
/// inside at any depth, sorted by path), and, from a CSV of `stem,name` lines (a header line
/// is skipped), their expected names. A zip is extracted with the system's
/// `python3 -m zipfile -e` into a temporary folder, removed once the images are read: no zip
/// reader is among the workspace's dependencies (the tests unzip CSE546 the same way).
pub fn load(path: &Path, expected_csv: Option<&Path>) -> Result<Vec<Item>, String> {
    if path.is_dir() {
        return load_dir(path, expected_csv);
    }
    let is_zip = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"));
    if !is_zip {
        return Err(format!("{}: neither a folder nor a .zip", path.display()));
    }
    let expected = read_expected(expected_csv)?;
    let tmp = tempfile::tempdir().map_err(|e| format!("a temporary folder: {e}"))?;
    let out = std::process::Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(path)
        .arg(tmp.path())
        .output()
        .map_err(|e| format!("running python3 -m zipfile: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{}: python3 -m zipfile -e failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut paths = Vec::new();
    walk(tmp.path(), &mut paths)?;
    paths.sort();
    let items = read_items(paths, &expected)?;
    if items.is_empty() {
        return Err(format!("no files in {}", path.display()));
    }
    Ok(items)
}

/// Loads the images of a folder (sorted by name) and, from a CSV of `stem,name` lines (a
/// header line is skipped), their expected names.
pub fn load_dir(dir: &Path, expected_csv: Option<&Path>) -> Result<Vec<Item>, String> {
    let expected = read_expected(expected_csv)?;
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    let items = read_items(paths, &expected)?;
    if items.is_empty() {
        return Err(format!("no files in {}", dir.display()));
    }
    Ok(items)
}

fn read_expected(csv: Option<&Path>) -> Result<BTreeMap<String, String>, String> {
    Ok(match csv {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .lines()
            .filter_map(|l| l.split_once(','))
            .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
            .collect(),
        None => BTreeMap::new(),
    })
}

/// The files under `dir` at any depth, leaving out hidden ones and macOS's `__MACOSX`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        let name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') || name == "__MACOSX" {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

fn read_items(
    paths: Vec<PathBuf>,
    expected: &BTreeMap<String, String>,
) -> Result<Vec<Item>, String> {
    let mut items = Vec::with_capacity(paths.len());
    for p in paths {
        let filename = p
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = p
            .file_stem()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        items.push(Item {
            filename,
            bytes: Bytes::from(bytes),
            expected: expected.get(&stem).cloned(),
        });
    }
    Ok(items)
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of the edge.
    pub addr: String,
    pub route: Route,
    /// Requests in all (the items are cycled).
    pub requests: usize,
    pub concurrency: usize,
    /// Per request, connect to last byte.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer` when set.
    pub api_key: Option<String>,
    /// Batch route: images per `POST /v1/batches` [default: the requests split evenly over
    /// the clients, so each client uploads one batch].
    pub batch_files: Option<usize>,
}

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

const BOUNDARY: &str = "facerec-bench-5f0c1d";

/// A multipart body of `(field, filename, bytes)` parts.
pub(crate) fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, filename, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\ncontent-disposition: form-data; name=\"{field}\"; filename=\"{}\"\r\ncontent-type: application/octet-stream\r\n\r\n",
                filename.replace(['"', '\r', '\n'], "_")
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// A whole HTTP/1.1 request (one per connection); `parts` make a multipart body.
pub(crate) fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    parts: &[(&str, &str, &[u8])],
) -> Vec<u8> {
    let body = if parts.is_empty() {
        Vec::new()
    } else {
        multipart(parts)
    };
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    if !parts.is_empty() {
        head.push_str(&format!(
            "content-type: multipart/form-data; boundary={BOUNDARY}\r\n"
        ));
    }
    if let Some(k) = api_key {
        head.push_str(&format!("authorization: Bearer {k}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    out
}

fn request(cfg: &Config, item: &Item) -> Vec<u8> {
    let key = cfg.api_key.as_deref();
    let image = |field| [(field, item.filename.as_str(), &item.bytes[..])];
    match cfg.route {
        Route::Original => http_request(&cfg.addr, "POST", "/", key, &image("inputFile")),
        Route::Recognize => http_request(&cfg.addr, "POST", "/v1/recognize", key, &image("image")),
        Route::Health => http_request(&cfg.addr, "GET", "/health", key, &[]),
        Route::Batch => http_request(&cfg.addr, "POST", "/v1/batches", key, &image("images")),
    }
}

/// One request on its own connection, e.g. `GET /ready` or an enrollment: the status and
/// body, or a transport error. `parts` (field, filename, bytes) make a multipart body.
pub async fn call(
    addr: &str,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    parts: &[(&str, &str, &[u8])],
) -> Result<(u16, Vec<u8>), String> {
    exchange(addr, &http_request(addr, method, path, api_key, parts)).await
}

/// One exchange: the status and body, or a transport error.
pub(crate) async fn exchange(addr: &str, raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    // The server may answer (413, 503) before reading the whole body.
    let _ = s.write_all(raw).await;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP answer")?;
    let (status, chunked) = parse_head(&answer[..split])?;
    let mut body = answer[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body);
    }
    Ok((status, body))
}

/// The status of an answer's head and whether its body is chunked.
pub(crate) fn parse_head(head: &[u8]) -> Result<(u16, bool), String> {
    let head = String::from_utf8_lossy(head);
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((status, chunked))
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        rest = &rest[end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[(size + 2).min(rest.len())..];
    }
    out
}

/// The name an answer carries: `<stem>:<name>` for `/`, `results[0].name` for recognize,
/// `name` of a batch result line.
fn answered_name(route: Route, body: &[u8]) -> Option<String> {
    match route {
        Route::Original => String::from_utf8_lossy(body)
            .trim()
            .split_once(':')
            .map(|(_, n)| n.to_string()),
        Route::Recognize => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v["results"][0]["name"].as_str().map(str::to_string)
        }
        Route::Batch => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v["name"].as_str().map(str::to_string)
        }
        Route::Health => None,
    }
}

/// One image's (or health request's) answer.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub status: String,
    pub ms: f64,
    /// Checked against the expected name: right, or `file: expected → got`.
    pub verdict: Option<Result<(), String>>,
}

impl Outcome {
    /// A 2xx answer (or batch result line) with `body`, checked when `item` has a name.
    pub(crate) fn answered(route: Route, item: &Item, status: u16, body: &[u8], ms: f64) -> Self {
        let verdict = match (&item.expected, (200..300).contains(&status)) {
            (Some(want), true) if route != Route::Health => {
                let got = answered_name(route, body).unwrap_or_default();
                Some(if &got == want {
                    Ok(())
                } else {
                    Err(format!("{}: {want} → {got}", item.filename))
                })
            }
            _ => None,
        };
        Outcome {
            status: status.to_string(),
            ms,
            verdict,
        }
    }

    pub(crate) fn failed(status: impl Into<String>, ms: f64) -> Self {
        Outcome {
            status: status.into(),
            ms,
            verdict: None,
        }
    }
}

/// Called after every answer (progress bars).
pub(crate) type OnDone = Arc<dyn Fn() + Send + Sync>;

/// Runs the load; `on_done` is called after every answer (progress bars).
pub async fn run(
    cfg: &Config,
    items: &[Item],
    on_done: impl Fn() + Send + Sync + 'static,
) -> Report {
    let on_done: OnDone = Arc::new(on_done);
    let start = Instant::now();
    let outcomes = if items.is_empty() {
        Vec::new()
    } else if cfg.route == Route::Batch {
        crate::batch::run(cfg, items, on_done).await
    } else {
        per_request(cfg, items, on_done).await
    };
    summarise(cfg, &outcomes, start.elapsed().as_secs_f64())
}

/// One request per image, `cfg.concurrency` clients.
async fn per_request(cfg: &Config, items: &[Item], on_done: OnDone) -> Vec<Outcome> {
    let items: Arc<Vec<Item>> = Arc::new(items.to_vec());
    let cfg = Arc::new(cfg.clone());
    let (clients, jobs) = (cfg.concurrency, cfg.requests);
    pool(clients, jobs, move |i| {
        let (items, cfg, on_done) = (items.clone(), cfg.clone(), on_done.clone());
        async move {
            let item = &items[i % items.len()];
            let raw = request(&cfg, item);
            let t = Instant::now();
            let answer = tokio::time::timeout(cfg.timeout, exchange(&cfg.addr, &raw)).await;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let outcome = match answer {
                Err(_) => Outcome::failed("timeout", ms),
                Ok(Err(_)) => Outcome::failed("io", ms),
                Ok(Ok((status, body))) => Outcome::answered(cfg.route, item, status, &body, ms),
            };
            on_done();
            vec![outcome]
        }
    })
    .await
}

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

fn summarise(cfg: &Config, outcomes: &[Outcome], wall: f64) -> Report {
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
                    wrong_examples.push(e.clone());
                }
            }
            None => {}
        }
    }
    let mut all_ms: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    Report {
        route: cfg.route,
        concurrency: cfg.concurrency,
        batch_files: (cfg.route == Route::Batch).then(|| crate::batch::files_per_batch(cfg)),
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

    #[test]
    fn reads_answers_of_both_routes() {
        assert_eq!(
            answered_name(Route::Original, b"test_000:Paul\n").as_deref(),
            Some("Paul")
        );
        let json = br#"{"results":[{"name":"Bob","faces":[]}]}"#;
        assert_eq!(
            answered_name(Route::Recognize, json).as_deref(),
            Some("Bob")
        );
        assert_eq!(dechunk(b"5\r\nhello\r\n3\r\n, w\r\n0\r\n\r\n"), b"hello, w");
    }
}
