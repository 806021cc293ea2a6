//! `facerec up` end to end over HTTP: the real binary, real models, real faces.
//! Mirrors the original workload (enroll each distinct photo, then POST all
//! 1000 CSE546 images to `/` from 100 concurrent clients) and checks every route's
//! answers and error statuses.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// `facerec up` on a free port, killed on drop.
use common::Up as Server;
use common::{Reply, batch_results, http, post_files};

struct Workload {
    _dir: tempfile::TempDir,
    images: PathBuf,
    expected: Vec<(String, String)>,
}

impl Workload {
    fn new() -> Self {
        let (dir, expected) = common::cse546();
        Self {
            images: dir.path().join("face_images_1000"),
            _dir: dir,
            expected,
        }
    }

    fn bytes(&self, stem: &str) -> Vec<u8> {
        std::fs::read(self.images.join(format!("{stem}.jpg"))).unwrap()
    }

    /// `(name, stem)` of the first occurrence of each distinct photo: the set has ten
    /// distinct 64x64 crops of eight people, each repeated 100 times. Emily's and Gerry's
    /// two photos are too far apart for one to stand for the other at the validated
    /// threshold, so the gallery holds every distinct photo (as the original system's did).
    fn first_of_each(&self) -> Vec<(String, String)> {
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut out = Vec::new();
        for (stem, name) in &self.expected {
            let bytes = self.bytes(stem);
            if !seen.contains(&bytes) {
                seen.push(bytes);
                out.push((name.clone(), stem.clone()));
            }
        }
        out
    }

    /// Enrolls every distinct photo under its name through the API (`headers`: e.g. the
    /// API key), one face each.
    /// The first `n` images of the workload as a tar body (Python's tarfile), each named
    /// `<i>_<stem>.jpg`: (stem, expected name) per file, the names, the body.
    fn first_as_tar(&self, n: usize) -> (Vec<(String, String)>, Vec<String>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let picks: Vec<(String, String)> = self.expected.iter().take(n).cloned().collect();
        let mut names = Vec::new();
        for (i, (stem, _)) in picks.iter().enumerate() {
            let name = format!("{i:03}_{stem}.jpg");
            std::fs::write(dir.path().join(&name), self.bytes(stem)).unwrap();
            names.push(name);
        }
        let tar = python_tar(dir.path(), &names);
        (picks, names, tar)
    }

    /// The server at `addr` still recognises: `POST /` of test_000 answers Paul.
    fn assert_answers(&self, addr: &str) {
        let r = post_files(
            addr,
            "/",
            &[("inputFile", "test_000.jpg", &self.bytes("test_000"))],
            &[],
        );
        assert_eq!(r.text(), "test_000:Paul");
    }

    fn enroll(&self, addr: &str, headers: &[(&str, &str)]) {
        for (name, stem) in self.first_of_each() {
            let r = post_files(
                addr,
                &format!("/v1/identities/{name}/faces"),
                &[("image", "x.jpg", &self.bytes(&stem))],
                headers,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["added"], 1);
        }
    }
}

#[test]
fn original_workload_1000_images_100_clients() {
    let w = Workload::new();
    // Up to four in-process workers, so the local autoscaler has room to act.
    let server = Server::start_with_env(&["--max-workers", "4"], &[("REQUEST_TIMEOUT", "600")]);
    let addr = server.addr.clone();

    w.enroll(&addr, &[]);
    assert_eq!(w.first_of_each().len(), 10, "ten distinct photos");
    let ids = http(&addr, "GET", "/v1/identities", &[], b"").json();
    let ids = ids["identities"].as_array().unwrap();
    assert_eq!(ids.len(), 8, "{ids:?}");
    assert_eq!(
        ids.iter()
            .map(|i| i["faces"].as_u64().unwrap())
            .sum::<u64>(),
        10
    );

    let jobs = Arc::new(Mutex::new(w.expected.clone()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let images = w.images.clone();
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let (jobs, failures, addr, images) =
                (jobs.clone(), failures.clone(), addr.clone(), images.clone());
            std::thread::spawn(move || {
                loop {
                    // Take the lock in its own statement: a guard in a `while let`
                    // scrutinee would live through the body and serialise the clients.
                    let next = jobs.lock().unwrap().pop();
                    let Some((stem, name)) = next else { break };
                    let bytes = std::fs::read(images.join(format!("{stem}.jpg"))).unwrap();
                    let r = post_files(
                        &addr,
                        "/",
                        &[("inputFile", &format!("{stem}.jpg"), &bytes)],
                        &[],
                    );
                    let want = format!("{stem}:{name}");
                    if r.status != 200
                        || r.text() != want
                        || r.headers.get("content-type").map(String::as_str) != Some("text/plain")
                    {
                        failures.lock().unwrap().push(format!(
                            "{want} → {} {}",
                            r.status,
                            r.text()
                        ));
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} wrong answers: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // Two clients upload different photos under the same file name at once.
    let (emily, bob) = (w.bytes("test_001"), w.bytes("test_002"));
    let (a1, b1) = (addr.clone(), addr.clone());
    let ta = std::thread::spawn(move || {
        post_files(&a1, "/", &[("inputFile", "same.jpg", &emily)], &[]).text()
    });
    let tb = std::thread::spawn(move || {
        post_files(&b1, "/", &[("inputFile", "same.jpg", &bob)], &[]).text()
    });
    assert_eq!(ta.join().unwrap(), "same:Emily");
    assert_eq!(tb.join().unwrap(), "same:Bob");

    let metrics = http(&addr, "GET", "/metrics", &[], b"").text();
    for name in [
        "facerec_edge_requests_total",
        "facerec_edge_request_duration_seconds",
        "facerec_engine_images_total",
        "facerec_engine_batch_size",
        "facerec_engine_stage_duration_seconds",
        "facerec_scaler_queue_depth",
        "facerec_scaler_desired_workers",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // 100 clients against one worker: the local autoscaler added in-process workers.
    assert!(
        metrics.contains("facerec_scaler_actions_total{kind=\"launch\",outcome=\"ok\"}"),
        "the local autoscaler never launched a worker:\n{metrics}"
    );
}

#[test]
fn routes_and_error_statuses() {
    let w = Workload::new();
    let server = Server::start_with_env(
        &[],
        &[("MAX_FILE_SIZE", "100000"), ("FACEREC_API_KEY", "s3cret")],
    );
    let addr = server.addr.as_str();
    let auth = [("authorization", "Bearer s3cret")];
    let paul = w.bytes("test_000");

    assert_eq!(http(addr, "GET", "/health", &[], b"").status, 200);
    let ready = http(addr, "GET", "/ready", &[], b"");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let page = http(addr, "GET", "/", &[], b"");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>facerec</title>"));
    assert!(page.headers.contains_key("x-request-id"));

    // Gallery changes need the key.
    let r = post_files(
        addr,
        "/v1/identities/Paul/faces",
        &[("image", "p.jpg", &paul)],
        &[],
    );
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (401, Some("unauthorized"))
    );
    let r = post_files(
        addr,
        "/v1/identities/Paul/faces",
        &[("image", "p.jpg", &paul)],
        &auth,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Recognition, several images at once; one of them is not an image.
    let bob = w.bytes("test_002");
    let r = post_files(
        addr,
        "/v1/recognize",
        &[
            ("image", "paul.jpg", &paul),
            ("image", "bob.jpg", &bob),
            ("image", "notes.jpg", b"plain text"),
        ],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json()["results"].as_array().unwrap().clone();
    assert_eq!(results[0]["name"], "Paul");
    assert_eq!(results[0]["faces"][0]["identity"], "Paul");
    assert_eq!(results[1]["name"], "unknown");
    assert_eq!(results[2]["error"]["kind"], "not_an_image");

    // Verify.
    let r = post_files(
        addr,
        "/v1/verify",
        &[("a", "a.jpg", &paul), ("b", "b.jpg", &paul)],
        &[],
    );
    assert_eq!(r.json()["same"], true, "{}", r.text());
    let r = post_files(
        addr,
        "/v1/verify",
        &[("a", "a.jpg", &paul), ("b", "b.jpg", &bob)],
        &[],
    );
    assert_eq!(r.json()["same"], false, "{}", r.text());

    // Error statuses and the JSON error shape.
    let kind = |r: &Reply| r.json()["kind"].as_str().unwrap_or_default().to_string();
    let r = post_files(
        addr,
        "/",
        &[(
            "inputFile",
            "a.jpg",
            b"\xFF\xD8\xFF\xE0 but not really a JPEG",
        )],
        &[],
    );
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (422, "corrupt"),
        "{}",
        r.text()
    );
    // A tiny file whose header claims a huge canvas (a decompression bomb) is refused unread.
    let r = post_files(
        addr,
        "/",
        &[("inputFile", "a.gif", b"GIF89a but not really")],
        &[],
    );
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (413, "too_large"),
        "{}",
        r.text()
    );
    let r = post_files(addr, "/", &[("inputFile", "a.jpg", b"hello")], &[]);
    assert_eq!((r.status, kind(&r).as_str()), (415, "not_an_image"));
    let r = post_files(addr, "/", &[("inputFile", "a.jpg", b"")], &[]);
    assert_eq!((r.status, kind(&r).as_str()), (400, "empty"));
    let big = vec![0xFFu8; 150_000];
    let r = post_files(addr, "/", &[("inputFile", "big.jpg", &big)], &[]);
    assert_eq!((r.status, kind(&r).as_str()), (413, "too_large"));
    let r = post_files(addr, "/", &[("wrongField", "a.jpg", &paul)], &[]);
    assert_eq!(r.status, 400);
    let r = http(addr, "POST", "/", &[("content-type", "text/plain")], b"hi");
    assert_eq!(r.status, 400);
    assert_eq!(http(addr, "GET", "/nope", &[], b"").status, 404);
    assert_eq!(http(addr, "PUT", "/v1/recognize", &[], b"").status, 405);
    let r = http(addr, "DELETE", "/v1/identities/Nobody", &auth, b"");
    assert_eq!(r.status, 404);
    let r = http(addr, "DELETE", "/v1/identities/Paul", &auth, b"");
    assert_eq!(r.status, 200);
    let r = post_files(addr, "/", &[("inputFile", "test_000.jpg", &paul)], &[]);
    assert_eq!(r.text(), "test_000:unknown");
}

#[test]
fn no_workers_means_timeouts_and_backpressure() {
    let w = Workload::new();
    let server = Server::start_with_env(
        &["--workers", "0", "--max-workers", "0"],
        &[("REQUEST_TIMEOUT", "3"), ("FACEREC_MAX_IN_FLIGHT", "1")],
    );
    let addr = server.addr.clone();
    let paul = w.bytes("test_000");
    let p2 = paul.clone();
    let a2 = addr.clone();
    let first =
        std::thread::spawn(move || post_files(&a2, "/", &[("inputFile", "a.jpg", &p2)], &[]));
    std::thread::sleep(Duration::from_millis(1000));
    let second = post_files(&addr, "/", &[("inputFile", "b.jpg", &paul)], &[]);
    assert_eq!(second.status, 503, "{}", second.text());
    assert_eq!(
        second.headers.get("retry-after").map(String::as_str),
        Some("1")
    );
    let first = first.join().unwrap();
    assert_eq!(first.status, 504, "{}", first.text());
    assert_eq!(first.json()["kind"], "timeout");
}

/// A Prometheus server (Debian package `prometheus`, installed by `.ci/run`) scraping
/// `targets` every second; killed on drop.

#[test]
fn prometheus_source_reads_the_backlog_of_a_running_up() {
    let w = Workload::new();
    // No workers: uploads wait in the queue, and the local scaler exports its depth.
    let server = Server::start_with_env(
        &[
            "--workers",
            "0",
            "--max-workers",
            "0",
            "--check-interval",
            "0.5",
        ],
        &[("REQUEST_TIMEOUT", "120")],
    );
    let addr = server.addr.clone();
    let prometheus = common::Prometheus::start(&[&addr]);
    for stem in ["test_000", "test_001", "test_002"] {
        let (a, bytes) = (addr.clone(), w.bytes(stem));
        // Left waiting; they end when the server is dropped.
        std::thread::spawn(move || post_files(&a, "/", &[("inputFile", "x.jpg", &bytes)], &[]));
    }
    let visible = "sum(facerec_scaler_queue_depth{state=\"visible\"})";
    let start = std::time::Instant::now();
    while prometheus.query_value(visible) != Some(3.0) {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "Prometheus never saw 3 waiting requests"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_facerec"))
        .args([
            "scaler",
            "--once",
            "--fleet",
            "none",
            "--source",
            "prometheus",
        ])
        .arg(format!("--prometheus-url=http://{}", prometheus.addr))
        .env("FACEREC_WORKER_RATE", "1")
        .env("FACEREC_TARGET_LATENCY", "2")
        .output()
        .expect("facerec runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["visible"], 3, "{line}");
    assert_eq!(line["in_flight"], 0, "{line}");
    assert_eq!(
        line["action"], "launch:2",
        "3 messages at 2 per worker: {line}"
    );
    assert_eq!(line["outcome"], "dry run");
}

#[test]
fn bulk_batches_from_multipart_and_tar() {
    let w = Workload::new();
    let server = Server::start_with_env(
        &[],
        &[("FACEREC_API_KEY", "k"), ("MAX_FILE_SIZE", "200000")],
    );
    let addr = server.addr.as_str();
    let auth = [("authorization", "Bearer k")];
    w.enroll(addr, &auth);

    // Many files in one multipart body, one of them not an image.
    let picks: Vec<(String, String)> = w.expected.iter().step_by(33).take(30).cloned().collect();
    let blobs: Vec<(String, Vec<u8>)> = picks
        .iter()
        .map(|(s, _)| (format!("{s}.jpg"), w.bytes(s)))
        .collect();
    let mut files: Vec<(&str, &str, &[u8])> = blobs
        .iter()
        .map(|(f, b)| ("images", f.as_str(), b.as_slice()))
        .collect();
    files.push(("images", "notes.txt", b"hello"));
    assert_eq!(
        post_files(addr, "/v1/batches", &files, &[]).status,
        401,
        "batches need the key"
    );
    let r = post_files(addr, "/v1/batches", &files, &auth);
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json();
    assert_eq!(
        (job["total"].as_u64(), job["failed"].as_u64()),
        (Some(31), Some(1))
    );
    let id = job["id"].as_str().unwrap().to_string();
    let got = batch_results(addr, &id, &auth);
    assert_eq!(got.len(), 31);
    for (stem, name) in &picks {
        assert_eq!(got.get(&format!("{stem}.jpg")), Some(name), "{stem}");
    }
    assert_eq!(got["notes.txt"], "not_an_image");
    let p = http(addr, "GET", &format!("/v1/batches/{id}"), &auth, b"").json();
    assert_eq!(
        (
            p["total"].as_u64(),
            p["done"].as_u64(),
            p["failed"].as_u64()
        ),
        (Some(31), Some(30), Some(1))
    );
    assert_eq!(p["finished"], true);

    // A tar body (made by Python's tarfile), with one file over MAX_FILE_SIZE.
    let dir = tempfile::tempdir().unwrap();
    let tar_picks: Vec<(String, String)> = w
        .expected
        .iter()
        .skip(5)
        .step_by(71)
        .take(12)
        .cloned()
        .collect();
    let mut names = Vec::new();
    for (stem, _) in &tar_picks {
        std::fs::write(dir.path().join(format!("{stem}.jpg")), w.bytes(stem)).unwrap();
        names.push(format!("{stem}.jpg"));
    }
    std::fs::write(dir.path().join("huge.jpg"), vec![0xAB; 300_000]).unwrap();
    names.push("huge.jpg".into());
    let tar = python_tar(dir.path(), &names);
    let ct = [("content-type", "application/x-tar"), auth[0]];
    let r = http(addr, "POST", "/v1/batches", &ct, &tar);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(
        (r.json()["total"].as_u64(), r.json()["failed"].as_u64()),
        (Some(13), Some(1))
    );
    let got = batch_results(addr, r.json()["id"].as_str().unwrap(), &auth);
    for (stem, name) in &tar_picks {
        assert_eq!(got.get(&format!("{stem}.jpg")), Some(name), "{stem}");
    }
    assert_eq!(got["huge.jpg"], "too_large");

    // Zip bodies made by Python's zipfile: written to a file (sizes in the local headers)
    // and to a pipe (sizes in data descriptors after the data, as streaming writers do),
    // deflated, with the same oversized file and a macOS resource fork.
    for (how, script) in [
        (
            "file",
            "zipfile.ZipFile('batch.zip', 'w', zipfile.ZIP_DEFLATED)",
        ),
        ("pipe", "zipfile.ZipFile(Pipe(), 'w', zipfile.ZIP_DEFLATED)"),
    ] {
        let py = format!(
            "import sys, zipfile\n\
             class Pipe:\n\
             \x20   def __init__(self): self.f = open('batch.zip', 'wb')\n\
             \x20   def write(self, b): return self.f.write(b)\n\
             \x20   def flush(self): self.f.flush()\n\
             \x20   def close(self): self.f.close()\n\
             z = {script}\n\
             for n in sys.argv[1:]: z.write(n)\n\
             z.writestr('__MACOSX/._{first}', b'resource fork')\n\
             z.close()\n",
            first = names[0]
        );
        let ok = Command::new("python3")
            .arg("-c")
            .arg(&py)
            .args(&names)
            .current_dir(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "python3 zipfile ({how})");
        let zip = std::fs::read(dir.path().join("batch.zip")).unwrap();
        assert_eq!(
            zip[6] & 8 != 0,
            how == "pipe",
            "data descriptors only when written to a pipe"
        );
        let ct = [("content-type", "application/zip"), auth[0]];
        let r = http(addr, "POST", "/v1/batches", &ct, &zip);
        assert_eq!(r.status, 202, "{how}: {}", r.text());
        assert_eq!(
            (r.json()["total"].as_u64(), r.json()["failed"].as_u64()),
            (Some(13), Some(1)),
            "{how}"
        );
        let got = batch_results(addr, r.json()["id"].as_str().unwrap(), &auth);
        assert_eq!(got.len(), 13, "{how}: {got:?}");
        for (stem, name) in &tar_picks {
            assert_eq!(got.get(&format!("{stem}.jpg")), Some(name), "{how} {stem}");
        }
        assert_eq!(got["huge.jpg"], "too_large", "{how}");
    }

    // The jobs, newest first: the multipart one, the tar one, the two zip ones.
    assert_eq!(http(addr, "GET", "/v1/batches", &[], b"").status, 401);
    let list = http(addr, "GET", "/v1/batches", &auth, b"").json();
    let listed: Vec<&str> = list["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 4, "{list}");
    assert_eq!(listed[3], id, "oldest last");
    assert!(
        list["batches"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["finished"] == true)
    );

    // Errors: truncated tar or zip, unknown body type, unknown id.
    assert_eq!(
        http(addr, "POST", "/v1/batches", &ct, &tar[..1000]).status,
        400
    );
    let r = http(
        addr,
        "POST",
        "/v1/batches",
        &[("content-type", "application/zip"), auth[0]],
        b"PK",
    );
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (400, Some("bad_request")),
        "{}",
        r.text()
    );
    let r = http(
        addr,
        "POST",
        "/v1/batches",
        &[("content-type", "application/x-7z-compressed"), auth[0]],
        b"7z",
    );
    assert_eq!(
        (r.status, r.json()["kind"].as_str()),
        (415, Some("unsupported_body"))
    );
    assert_eq!(
        http(addr, "GET", "/v1/batches/nope", &auth, b"").status,
        404
    );
    assert_eq!(
        http(addr, "GET", "/v1/batches/nope/results", &auth, b"").status,
        404
    );
}

/// The built-in page in headless Chromium (Debian `chromium`, driven by `playwright-core`
/// from npm; both installed by `.ci/run`): enroll through the gallery form, upload photos,
/// see each drawn with its box and name. The screenshot is left in the target directory.
#[test]
fn web_page_in_headless_chromium() {
    let w = Workload::new();
    let server = Server::start_with_env(&[], &[]);
    let page_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/page");
    assert!(
        page_dir.join("node_modules/playwright-core").exists(),
        "run `npm ci --prefix tests/page` (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = |stem: &str| {
        let p = dir.path().join(format!("{stem}.jpg"));
        std::fs::write(&p, w.bytes(stem)).unwrap();
        p.display().to_string()
    };
    let expect = serde_json::json!([
        {"file": file("test_000"), "name": "Paul"},
        {"file": file("test_002"), "name": "unknown"},
    ]);
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("facerec-page.png");
    let out = Command::new("node")
        .arg(page_dir.join("page_test.mjs"))
        .arg(format!("http://{}/", server.addr))
        .arg(&shot)
        .arg("Paul")
        .arg(file("test_000"))
        .arg(expect.to_string())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "page test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000),
        "screenshot at {}",
        shot.display()
    );
    eprintln!("screenshot: {}", shot.display());
}

/// `facerec bench` (the load harness) against a running `facerec up`: its JSON report has
/// every field, and the answers are checked against the expected names.
#[test]
fn load_harness_reports_throughput_latency_and_correctness() {
    let w = Workload::new();
    let server = Server::start_with_env(&[], &[]);
    w.enroll(&server.addr, &[]);
    let small = tempfile::tempdir().unwrap();
    for (stem, _) in w.expected.iter().take(40) {
        std::fs::write(small.path().join(format!("{stem}.jpg")), w.bytes(stem)).unwrap();
    }
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cse546/expected.csv");
    let json = small.path().join("report.json");
    let md = small.path().join("report.md");
    let out = Command::new(env!("CARGO_BIN_EXE_facerec"))
        .args(["bench", "--route", "original", "-c", "8", "--strict"])
        .arg(format!("--url=http://{}", server.addr))
        .arg("--images")
        .arg(small.path())
        .arg("--expected")
        .arg(&csv)
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .output()
        .expect("facerec bench runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for field in [
        "route",
        "concurrency",
        "requests",
        "ok",
        "statuses",
        "correct",
        "wrong",
        "wall_seconds",
        "throughput",
        "ok_throughput",
        "latency_ms",
    ] {
        assert!(report.get(field).is_some(), "{field} missing: {report}");
    }
    assert_eq!(report["requests"], 40);
    assert_eq!(report["correct"], 40, "{report}");
    assert_eq!(report["statuses"]["200"], 40);
    for q in ["p50", "p95", "p99", "max", "mean"] {
        assert!(
            report["latency_ms"][q].as_f64().is_some_and(|v| v > 0.0),
            "{q}: {report}"
        );
    }
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(
        table.starts_with("| route |") && table.lines().count() == 3,
        "{table}"
    );
}

/// The CSE546 images `test_000` .. `test_{n-1}` in a new folder.
fn first_images(w: &Workload, n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (stem, _) in w.expected.iter().take(n) {
        std::fs::write(dir.path().join(format!("{stem}.jpg")), w.bytes(stem)).unwrap();
    }
    dir
}

fn expected_csv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cse546/expected.csv")
}

/// `facerec bench sweep`: a fresh `facerec up` per (batch, workers), the gallery enrolled
/// from the expected names, the harness at each concurrency; sweep.json, sweep.md and
/// sweep.svg describe every point.
#[test]
fn load_harness_sweep_writes_json_table_and_plot() {
    let w = Workload::new();
    let small = first_images(&w, 12);
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_facerec"))
        .args(["bench", "sweep", "--batch", "1,4", "--workers", "1"])
        .args(["--concurrency", "2,4", "--enroll-from-expected", "--strict"])
        .arg("--images")
        .arg(small.path())
        .arg("--expected")
        .arg(expected_csv())
        .arg("--out")
        .arg(out.path())
        .args(["--", "--backend", "cpu"])
        .env(
            "FACEREC_MODELS",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models"),
        )
        .env_remove("FACEREC_API_KEY")
        .output()
        .expect("facerec bench sweep runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let sweep: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("sweep.json")).unwrap()).unwrap();
    assert_eq!(sweep["route"], "original");
    assert_eq!(
        (sweep["images"].as_u64(), sweep["requests"].as_u64()),
        (Some(12), Some(12))
    );
    let points = sweep["points"].as_array().unwrap();
    let coords: Vec<(u64, u64, u64)> = points
        .iter()
        .map(|p| {
            (
                p["batch"].as_u64().unwrap(),
                p["workers"].as_u64().unwrap(),
                p["concurrency"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(coords, [(1, 1, 2), (1, 1, 4), (4, 1, 2), (4, 1, 4)]);
    for p in points {
        assert!(p["throughput"].as_f64().is_some_and(|t| t > 0.0), "{p}");
        assert!(p["ok_throughput"].as_f64().is_some_and(|t| t > 0.0), "{p}");
        for q in ["p50", "p95", "p99"] {
            assert!(
                p["latency_ms"][q].as_f64().is_some_and(|v| v > 0.0),
                "{q}: {p}"
            );
        }
        assert_eq!(
            (p["requests"].as_u64(), p["ok"].as_u64()),
            (Some(12), Some(12)),
            "{p}"
        );
        assert_eq!(
            (p["correct"].as_u64(), p["wrong"].as_u64()),
            (Some(12), Some(0)),
            "{p}"
        );
    }

    let md = std::fs::read_to_string(out.path().join("sweep.md")).unwrap();
    let rows: Vec<&str> = md.lines().collect();
    assert!(
        rows[0].starts_with("| batch | workers | route | clients |"),
        "{md}"
    );
    assert_eq!(rows.len(), 2 + 4, "{md}");
    for (row, prefix) in rows[2..].iter().zip([
        "| 1 | 1 | Original | 2 |",
        "| 1 | 1 | Original | 4 |",
        "| 4 | 1 | Original | 2 |",
        "| 4 | 1 | Original | 4 |",
    ]) {
        assert!(
            row.starts_with(prefix) && row.ends_with("| 12/12 |"),
            "{md}"
        );
    }
    assert_eq!(stdout.trim(), md.trim(), "the table is printed too");

    let svg = std::fs::read_to_string(out.path().join("sweep.svg")).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_eq!(
        svg.matches('<').count(),
        svg.matches('>').count(),
        "balanced tags"
    );
    assert_eq!(
        svg.matches("<polyline").count(),
        2,
        "one line per (batch, workers)"
    );
    assert_eq!(
        svg.matches("<circle").count(),
        4 + 2,
        "points and legend marks"
    );
    for text in [
        "throughput (answered images/s)",
        "p95 latency (ms)",
        ">c=2<",
        ">c=4<",
        ">batch 1, 1 worker<",
        ">batch 4, 1 worker<",
    ] {
        assert!(svg.contains(text), "{text} missing:\n{svg}");
    }
    for log in ["up-b1-w1.log", "up-b4-w1.log"] {
        let log = std::fs::read_to_string(out.path().join(log)).unwrap();
        assert!(log.contains("facerec listening on"), "{log}");
    }
    assert!(
        !out.path().join("data-b1-w1").exists(),
        "each server's data directory is removed"
    );
}

/// `facerec bench --route batch` with a zip input: the images go up as bulk batches under
/// the API key, each result line is checked as it streams back, and a file that is not an
/// image counts as an error of its kind.
#[test]
fn load_harness_batch_route_from_a_zip() {
    let w = Workload::new();
    let server = Server::start_with_env(&[], &[("FACEREC_API_KEY", "k")]);
    let auth = [("authorization", "Bearer k")];
    w.enroll(&server.addr, &auth);
    // A zip of a folder: the entries sit under `imgs/`.
    let work = tempfile::tempdir().unwrap();
    let imgs = work.path().join("imgs");
    std::fs::create_dir(&imgs).unwrap();
    for (stem, _) in w.expected.iter().take(20) {
        std::fs::write(imgs.join(format!("{stem}.jpg")), w.bytes(stem)).unwrap();
    }
    std::fs::write(imgs.join("notes.txt"), "hello").unwrap();
    let ok = Command::new("python3")
        .args(["-m", "zipfile", "-c", "imgs.zip", "imgs"])
        .current_dir(work.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "python3 -m zipfile -c");
    let bench = |key: &str, extra: &[&str]| {
        let json = work.path().join(format!("report-{key}.json"));
        let out = Command::new(env!("CARGO_BIN_EXE_facerec"))
            .args(["bench", "--route", "batch", "-c", "2", "--batch-files", "8"])
            .args(["--api-key", key])
            .arg(format!("--url=http://{}", server.addr))
            .arg("--images")
            .arg(work.path().join("imgs.zip"))
            .arg("--expected")
            .arg(expected_csv())
            .arg("--json")
            .arg(&json)
            .args(extra)
            .output()
            .expect("facerec bench runs");
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        report
    };

    let report = bench("k", &[]);
    assert_eq!(report["route"], "batch");
    assert_eq!(report["batch_files"], 8);
    assert_eq!(report["requests"], 21, "20 images and notes.txt: {report}");
    assert_eq!(report["ok"], 20, "{report}");
    assert_eq!(
        report["statuses"],
        serde_json::json!({"200": 20, "not_an_image": 1}),
        "{report}"
    );
    assert_eq!(
        (report["correct"].as_u64(), report["wrong"].as_u64()),
        (Some(20), Some(0)),
        "{report}"
    );
    for q in ["p50", "p95", "p99"] {
        assert!(
            report["latency_ms"][q].as_f64().is_some_and(|v| v > 0.0),
            "{q}: {report}"
        );
    }

    // A wrong key: every upload is refused, and each image counts as a 401.
    let refused = bench("wrong", &["-n", "5"]);
    assert_eq!(
        refused["statuses"],
        serde_json::json!({"401": 5}),
        "{refused}"
    );
    assert_eq!(refused["ok"], 0);
}

/// Sends `head` (and `body`), then waits at most `wait` for the server to answer or close:
/// the status line's code, or None when it closed without answering.
fn send_and_wait(addr: &str, head: &str, body: &[u8], wait: Duration) -> (Option<u16>, Duration) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let start = std::time::Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let status = String::from_utf8_lossy(&raw)
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1).and_then(|c| c.parse().ok()));
    (status, start.elapsed())
}

/// The web tier under careless and hostile clients: each case gets its documented answer,
/// and afterwards the server still answers and recognises a real face.
#[test]
fn hostile_and_careless_clients_get_clear_answers() {
    let w = Workload::new();
    let server = Server::start_with_env(
        &[],
        &[
            ("FACEREC_API_KEY", "k"),
            ("MAX_FILE_SIZE", "100000"),
            ("FACEREC_READ_TIMEOUT", "1"),
            ("FACEREC_MAX_CONNECTIONS", "8"),
        ],
    );
    let addr = server.addr.as_str();
    let auth = [("authorization", "Bearer k")];
    let paul = w.bytes("test_000");
    let bob = w.bytes("test_002");

    let kind = |r: &Reply| r.json()["kind"].as_str().unwrap_or_default().to_string();
    // Past the connection limit a new connection is answered 503 at once; once the held
    // ones close, connections are served again.
    let held: Vec<std::net::TcpStream> = (0..8)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let r = http(addr, "GET", "/health", &[], b"");
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (503, "overloaded"),
        "{}",
        r.text()
    );
    drop(held);
    let t = std::time::Instant::now();
    while http(addr, "GET", "/health", &[], b"").status != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "connections not freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = post_files(
        addr,
        "/v1/identities/Paul/faces",
        &[("image", "p.jpg", &paul)],
        &auth,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // A multipart bulk job with one file over MAX_FILE_SIZE in the middle: the job is
    // accepted, that file is a failed item, the files before and after it are recognised.
    let big = vec![0xFFu8; 150_000];
    let files: [(&str, &str, &[u8]); 3] = [
        ("images", "first.jpg", &paul),
        ("images", "big.jpg", &big),
        ("images", "last.jpg", &bob),
    ];
    let r = post_files(addr, "/v1/batches", &files, &auth);
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json();
    assert_eq!(
        (job["total"].as_u64(), job["failed"].as_u64()),
        (Some(3), Some(1))
    );
    let got = batch_results(addr, job["id"].as_str().unwrap(), &auth);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got["first.jpg"], "Paul");
    assert_eq!(got["big.jpg"], "too_large");
    assert_eq!(got["last.jpg"], "unknown");

    // A body that stops arriving answers 408 after the read timeout (1 s here), not never.
    let head = format!(
        "POST / HTTP/1.1\r\nhost: {addr}\r\ncontent-type: multipart/form-data; boundary={}\r\ncontent-length: 100000\r\n\r\n",
        common::BOUNDARY
    );
    let (status, took) = send_and_wait(addr, &head, &[b'-'; 800], Duration::from_secs(20));
    assert_eq!(status, Some(408), "after {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    // Headers that stop arriving, and an idle connection, are closed.
    let (status, took) = send_and_wait(
        addr,
        "GET /health HTTP/1.1\r\nhost: x\r\n",
        b"",
        Duration::from_secs(20),
    );
    assert!(status.is_none() || status == Some(408), "{status:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    let (_, took) = send_and_wait(addr, "", b"", Duration::from_secs(20));
    assert!(
        took < Duration::from_secs(15),
        "idle connection held {took:?}"
    );

    // HEAD answers as GET, without a body; the page's icon exists.
    for path in ["/", "/health", "/v1/identities"] {
        let r = http(addr, "HEAD", path, &[], b"");
        assert_eq!((r.status, r.body.len()), (200, 0), "HEAD {path}");
    }
    let r = http(addr, "HEAD", "/v1/recognize", &[], b"");
    assert_eq!(r.status, 405);
    let r = http(addr, "GET", "/favicon.ico", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "image/svg+xml");
    assert!(r.text().starts_with("<svg"));

    // A part whose header is broken is reported as such, not as a missing field.
    let ct = format!("multipart/form-data; boundary={}", common::BOUNDARY);
    let broken = format!(
        "--{b}\r\ncontent-type: image/jpeg\r\n\r\nxxxx\r\n--{b}--\r\n",
        b = common::BOUNDARY
    );
    let r = http(
        addr,
        "POST",
        "/",
        &[("content-type", &ct)],
        broken.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("malformed multipart"), "{}", r.text());

    // A file part without a file name has no stem to answer with.
    let r = post_files(addr, "/", &[("inputFile", "", &paul)], &[]);
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (400, "bad_request"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("empty filename"), "{}", r.text());

    // Identity names: no "." or "..", and bytes that are not UTF-8 are refused, not
    // replaced (two different ones would collide as U+FFFD).
    for name in ["..", "%2E%2E", ".", "%FF%FE", "%FF%FD", "a%5Cb"] {
        let r = post_files(
            addr,
            &format!("/v1/identities/{name}/faces"),
            &[("image", "p.jpg", &paul)],
            &auth,
        );
        assert_eq!(
            (r.status, kind(&r).as_str()),
            (400, "bad_request"),
            "{name}: {}",
            r.text()
        );
    }
    let names = http(addr, "GET", "/v1/identities", &[], b"").json();
    assert_eq!(
        names["identities"].as_array().map(Vec::len),
        Some(1),
        "{names}"
    );

    // The control: still healthy, still recognising.
    assert_eq!(http(addr, "GET", "/health", &[], b"").status, 200);
    let r = post_files(addr, "/", &[("inputFile", "test_000.jpg", &paul)], &[]);
    assert_eq!(r.text(), "test_000:Paul");
}

/// First in, first answered: under a closed loop of clients no request waits much longer
/// than the others, and a bulk job's images come back in about the order they were sent.
#[test]
fn answers_come_first_in_first_out() {
    let w = Workload::new();
    let server = Server::start_with_env(&[], &[("FACEREC_API_KEY", "k")]);
    let addr = server.addr.clone();
    let auth = [("authorization", "Bearer k")];
    w.enroll(&addr, &auth);

    // 32 clients, 8 requests each, one worker.
    let clients = 32;
    let per_client = 8;
    let images: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        w.expected
            .iter()
            .take(clients * per_client)
            .map(|(stem, name)| (name.clone(), w.bytes(stem)))
            .collect(),
    );
    let waits = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, images, waits) = (addr.clone(), images.clone(), waits.clone());
            std::thread::spawn(move || {
                for i in 0..per_client {
                    let (name, bytes) = &images[c * per_client + i];
                    let t = std::time::Instant::now();
                    let r = post_files(&addr, "/", &[("inputFile", "x.jpg", bytes)], &[]);
                    let took = t.elapsed().as_secs_f64();
                    assert_eq!(r.text(), format!("x:{name}"));
                    waits.lock().unwrap().push(took);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let waits = waits.lock().unwrap().clone();
    let mean = waits.iter().sum::<f64>() / waits.len() as f64;
    let max = waits.iter().copied().fold(0.0, f64::max);
    // A fair queue gives every request about the same wait (the first batch of the loop
    // waits less); an unfair one lets some wait many times the others.
    assert!(
        max <= 3.0 * mean,
        "max wait {max:.2} s, mean {mean:.2} s: {waits:?}"
    );

    // A 160-image job: each result's position is near its image's position.
    let picks: Vec<(String, Vec<u8>)> = w
        .expected
        .iter()
        .take(160)
        .map(|(stem, _)| (format!("{stem}.jpg"), w.bytes(stem)))
        .collect();
    let files: Vec<(&str, &str, &[u8])> = picks
        .iter()
        .map(|(f, b)| ("images", f.as_str(), b.as_slice()))
        .collect();
    let r = post_files(&addr, "/v1/batches", &files, &auth);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let r = http(
        &addr,
        "GET",
        &format!("/v1/batches/{id}/results"),
        &auth,
        b"",
    );
    let body = String::from_utf8(common::dechunk(&r)).unwrap();
    let order: Vec<usize> = body
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let rid = v["request_id"].as_str().unwrap();
            rid.rsplit('-').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(order.len(), 160);
    // Within a batch (16 by default, two in flight) images may finish in any order.
    let worst = order
        .iter()
        .enumerate()
        .map(|(pos, &i)| pos.abs_diff(i))
        .max()
        .unwrap();
    assert!(
        worst <= 48,
        "an image came back {worst} places from its turn: {order:?}"
    );
}

/// A tar of the files `names` in `dir`, made by Python's `tarfile` (an independent writer).
fn python_tar(dir: &Path, names: &[String]) -> Vec<u8> {
    let ok = Command::new("python3")
        .args(["-m", "tarfile", "-c", "batch.tar"])
        .args(names)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "python3 -m tarfile");
    std::fs::read(dir.join("batch.tar")).unwrap()
}

/// Files under `dir` (recursively).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// Storage stays bounded: an upload goes once its result is answered (a dead-lettered one
/// stays until the retention), results go after the retention, the gallery stays, and the
/// store's size is a metric.
#[test]
fn storage_is_bounded_by_deletion_and_retention() {
    let w = Workload::new();
    // 0.002 h = 7.2 s; the floor is twice REQUEST_TIMEOUT (6 s).
    let server = Server::start_with_env(
        &[],
        &[
            ("REQUEST_TIMEOUT", "3"),
            ("FACEREC_RETENTION_HOURS", "0.002"),
        ],
    );
    let addr = server.addr.as_str();
    let data = server.data().to_path_buf();
    w.enroll(addr, &[]);
    for (stem, name) in w.expected.iter().take(5) {
        let r = post_files(
            addr,
            "/",
            &[("inputFile", &format!("{stem}.jpg"), &w.bytes(stem))],
            &[],
        );
        assert_eq!(r.text(), format!("{stem}:{name}"));
    }
    let r = post_files(
        addr,
        "/",
        &[("inputFile", "notes.jpg", b"\xFF\xD8\xFF\xE0 not really")],
        &[],
    );
    assert_eq!(r.status, 422, "{}", r.text());
    let wait_for = |what: &str, f: &dyn Fn() -> bool| {
        let t = std::time::Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(60), "{what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // A one-image bulk job.
    let paul = w.bytes("test_000");
    let r = post_files(addr, "/v1/batches", &[("images", "job.jpg", &paul)], &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(batch_results(addr, &id, &[]).len(), 1);
    // The answered uploads go at once; the corrupt one stays (dead-lettered).
    wait_for("answered uploads deleted", &|| {
        files_under(&data.join("in")).len() == 1
    });
    // Ten enrolments (they go through the workers too), five answers, one error, one job.
    assert_eq!(files_under(&data.join("out/results")).len(), 17);
    // After the retention (7.2 s) every result and the dead-lettered upload are gone.
    wait_for("results expired", &|| {
        files_under(&data.join("out/results")).is_empty()
            && files_under(&data.join("in")).is_empty()
    });
    assert!(
        data.join("out/gallery/gallery.frg").exists(),
        "the gallery is never swept"
    );
    wait_for("the finished job forgotten", &|| {
        http(addr, "GET", &format!("/v1/batches/{id}"), &[], b"").status == 404
    });
    let value = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    wait_for("the sweep's counts exported", &|| {
        let m = http(addr, "GET", "/metrics", &[], b"").text();
        value(&m, "facerec_engine_store_expired_total{bucket=\"out\"}") >= 17.0
            && value(&m, "facerec_engine_store_expired_total{bucket=\"in\"}") >= 1.0
            && value(&m, "facerec_engine_store_objects{bucket=\"out\"}") == 1.0
            && value(&m, "facerec_engine_store_bytes{bucket=\"out\"}") > 0.0
    });
    // Still answering, and results of new requests are there until their retention.
    w.assert_answers(addr);
}

/// SIGTERM with a backlog: the server stops within its drain time (plus the batch in
/// hand), and every open request gets an answer — its result, or 503 — not a reset.
#[test]
fn shutdown_with_a_backlog_is_bounded_and_answers_everyone() {
    let w = Workload::new();
    let mut server = Server::start_with_env(&[], &[("FACEREC_DRAIN_SECONDS", "2")]);
    let addr = server.addr.clone();
    w.enroll(&addr, &[]);
    // 200 requests at once: far more than the CPU backend answers in the drain time.
    let images: Vec<Vec<u8>> = w
        .expected
        .iter()
        .take(200)
        .map(|(s, _)| w.bytes(s))
        .collect();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = images
        .into_iter()
        .map(|bytes| {
            let (addr, statuses) = (addr.clone(), statuses.clone());
            std::thread::spawn(move || {
                let r = post_files(&addr, "/", &[("inputFile", "x.jpg", &bytes)], &[]);
                let kind = if r.status == 200 {
                    String::new()
                } else {
                    r.json()["kind"].as_str().unwrap_or_default().to_string()
                };
                statuses.lock().unwrap().push((r.status, kind));
            })
        })
        .collect();
    // Let the backlog build and the first answers come.
    let t = std::time::Instant::now();
    while statuses.lock().unwrap().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(60), "no answer at all");
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = server.terminate(Duration::from_secs(30));
    for c in clients {
        c.join().unwrap();
    }
    let statuses = statuses.lock().unwrap().clone();
    assert_eq!(statuses.len(), 200);
    let answered = statuses.iter().filter(|(s, _)| *s == 200).count();
    let refused = statuses
        .iter()
        .filter(|(s, k)| *s == 503 && k == "unavailable")
        .count();
    assert_eq!(answered + refused, 200, "{statuses:?}");
    assert!(refused > 0, "the backlog outlasted the drain: some get 503");
    // Drain 2 s, then at most 5 s for connections and 5 s for the batch in hand.
    assert!(took < Duration::from_secs(13), "exit took {took:?}");
}

/// Nothing accepted is lost: SIGKILL in the middle of a 300-image bulk job, twice (as
/// its first results are being written, and again half-way), each time a restart on the
/// same `--data`, and every image of the job has exactly one result, the right one.
#[test]
fn a_killed_up_finishes_every_accepted_request_after_a_restart() {
    const N: usize = 300;
    let w = Workload::new();
    let mut server = Server::start(&[]);
    w.enroll(&server.addr, &[]);
    let gallery = std::fs::read(server.data().join("out/gallery/gallery.frg")).unwrap();
    let (picks, names, tar) = w.first_as_tar(N);
    let headers = [
        ("content-type", "application/x-tar"),
        ("idempotency-key", "nightly-import-0001"),
    ];
    let r = http(&server.addr, "POST", "/v1/batches", &headers, &tar);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("k-"), "the key names the job: {id}");
    let results = server.data().join("out/results");
    let done = || {
        (0..N)
            .filter(|i| results.join(format!("{id}-{i}.json")).exists())
            .count()
    };
    // Kill as the results are being written: first early, then (if the job is not done
    // by then) half-way.
    let mut kills = Vec::new();
    for at in [5, N / 2] {
        let t = std::time::Instant::now();
        while done() < at {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "no progress: {}",
                done()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = done();
        if now == N {
            break;
        }
        kills.push(now);
        server.kill_and_restart();
    }
    assert!(
        !kills.is_empty() && kills[0] < N,
        "the job finished before the kill"
    );
    eprintln!("killed with {kills:?} of {N} results written");
    let t = std::time::Instant::now();
    while done() < N {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{} of {N} results after the restarts (killed at {kills:?})",
            done()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, (_, name)) in picks.iter().enumerate() {
        let body = std::fs::read(results.join(format!("{id}-{i}.json"))).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["filename"], names[i].as_str());
        assert_eq!(v["name"], name.as_str(), "{}", names[i]);
    }
    // The restarted process never saw the upload, and serves the job from the store:
    // progress, and every image's result line exactly once.
    let progress = common::wait_finished(&server.addr, &id, Duration::from_secs(60));
    assert_eq!(
        (&progress["total"], &progress["done"], &progress["failed"]),
        (
            &serde_json::json!(N),
            &serde_json::json!(N),
            &serde_json::json!(0)
        ),
        "{progress}"
    );
    assert!(progress.get("cut_off").is_none(), "{progress}");
    let r = http(
        &server.addr,
        "GET",
        &format!("/v1/batches/{id}/results"),
        &[],
        b"",
    );
    let body = String::from_utf8(common::dechunk(&r)).unwrap();
    assert_eq!(body.lines().count(), N, "one line per image");
    let got = batch_results(&server.addr, &id, &[]);
    assert_eq!(got.len(), N, "each image once");
    for (i, (_, name)) in picks.iter().enumerate() {
        assert_eq!(got[&names[i]], *name, "{}", names[i]);
    }
    // Posting again under the same key answers the job, without a second one.
    let r = http(&server.addr, "POST", "/v1/batches", &headers, &tar);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    // Listed; and once its outcome is in the manifest, listed from that alone after
    // another restart.
    let listed = |addr: &str| {
        let v = http(addr, "GET", "/v1/batches", &[], b"").json();
        v["batches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{id} not listed: {v}"))
    };
    assert_eq!(listed(&server.addr)["finished"], true);
    let manifest = server.data().join(format!("out/batches/{id}.json"));
    let t = std::time::Instant::now();
    while !std::fs::read_to_string(&manifest)
        .unwrap()
        .contains("\"outcome\"")
    {
        assert!(t.elapsed() < Duration::from_secs(30), "outcome not stored");
        std::thread::sleep(Duration::from_millis(200));
    }
    server.kill_and_restart();
    let again = listed(&server.addr);
    assert_eq!(
        (&again["total"], &again["done"], &again["finished"]),
        (
            &serde_json::json!(N),
            &serde_json::json!(N),
            &serde_json::json!(true)
        ),
        "{again}"
    );
    // One result per image (keyed by request id), the uploads gone, the gallery unchanged.
    let job_results = files_under(&results)
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&id))
        .count();
    assert_eq!(job_results, N);
    let t = std::time::Instant::now();
    while !files_under(&server.data().join("in")).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(30), "uploads left behind");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        std::fs::read(server.data().join("out/gallery/gallery.frg")).unwrap(),
        gallery
    );
    // And it still answers.
    w.assert_answers(&server.addr);
}

/// `kill -9` in the middle of a bulk upload: after the restart the job (named by its
/// `Idempotency-Key`, so the client knows it without an answer) holds every file stored
/// before the kill, each with its result, and is sealed as cut off once its upload has
/// been silent for longer than a live one can be; a retry under the same key is refused
/// (409: post again under a new key), and that one runs the whole job.
#[test]
fn a_bulk_upload_cut_off_by_a_kill_keeps_what_was_stored_and_says_so() {
    use std::io::Write;
    let w = Workload::new();
    let mut server = Server::start_with_env(&[], &[("FACEREC_READ_TIMEOUT", "1")]);
    w.enroll(&server.addr, &[]);
    let (picks, names, tar) = w.first_as_tar(60);
    // Send the head and about half the files, then kill the server mid-body.
    let mut conn = std::net::TcpStream::connect(&server.addr).unwrap();
    let head = format!(
        "POST /v1/batches HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-tar\r\n\
         idempotency-key: import-cut-off\r\ncontent-length: {}\r\n\r\n",
        tar.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&tar[..tar.len() / 2]).unwrap();
    conn.flush().unwrap();
    let manifests = server.data().join("out/batches");
    let t = std::time::Instant::now();
    let stored = || -> usize {
        let Ok(entries) = std::fs::read_dir(&manifests) else {
            return 0;
        };
        // The manifests themselves, not a write in progress (`.tmp-*`, renamed when done).
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|m| m["items"].as_array().map_or(0, Vec::len))
            .max()
            .unwrap_or(0)
    };
    while stored() < 20 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the upload is not being stored"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill_and_restart();
    drop(conn);
    let post_tar = |key: &str| {
        let headers = [
            ("content-type", "application/x-tar"),
            ("idempotency-key", key),
        ];
        http(&server.addr, "POST", "/v1/batches", &headers, &tar)
    };
    let id = {
        let r = post_tar("import-cut-off");
        // The old upload still looks alive for a moment (409 either way: being uploaded,
        // or cut off).
        assert_eq!(r.status, 409, "{}", r.text());
        r.json()["error"]
            .as_str()
            .and_then(|m| m.split_whitespace().nth(1))
            .unwrap()
            .to_string()
    };
    assert!(id.starts_with("k-"), "{id}");
    // Sealed as cut off once silent for 2 x FACEREC_READ_TIMEOUT and the manifest rhythm.
    let progress = common::wait_finished(&server.addr, &id, Duration::from_secs(120));
    let total = progress["total"].as_u64().unwrap() as usize;
    assert!((20..60).contains(&total), "{progress}");
    assert!(progress["cut_off"].is_string(), "{progress}");
    assert_eq!(
        progress["done"].as_u64().unwrap() as usize,
        total,
        "{progress}"
    );
    let got = batch_results(&server.addr, &id, &[]);
    assert_eq!(got.len(), total);
    for (i, name) in names.iter().enumerate().take(total) {
        assert_eq!(got[name], picks[i].1, "{name}");
    }
    let r = post_tar("import-cut-off");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.text().contains("cut off"), "{}", r.text());
    let r = post_tar("import-cut-off-2");
    assert_eq!(r.status, 202, "{}", r.text());
    let id2 = r.json()["id"].as_str().unwrap().to_string();
    common::wait_finished(&server.addr, &id2, Duration::from_secs(300));
    let got = batch_results(&server.addr, &id2, &[]);
    assert_eq!(got.len(), 60);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(got[name], picks[i].1, "{name}");
    }
}

/// `kill -9` while the gallery is being changed, at several moments: after each restart
/// the gallery loads (the server starts and answers), holds every enrollment that was
/// answered `200` and at most the one in flight, and recognition still works.
#[test]
fn a_gallery_being_changed_survives_kills() {
    let w = Workload::new();
    let mut server = Server::start(&[]);
    w.enroll(&server.addr, &[]);
    let face = w.bytes("test_000");
    for round in 0..3u64 {
        let addr = server.addr.clone();
        let face = face.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut answered = 0usize;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let r = std::panic::catch_unwind(|| {
                    post_files(
                        &addr,
                        "/v1/identities/Extra/faces",
                        &[("image", "x.jpg", &face)],
                        &[],
                    )
                    .status
                });
                match r {
                    Ok(200) => answered += 1,
                    _ => break,
                }
            }
            answered
        });
        let before = faces_of(&server.addr, "Extra");
        std::thread::sleep(Duration::from_millis(400 + 300 * round));
        server.kill_and_restart();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let answered = writer.join().unwrap();
        let after = faces_of(&server.addr, "Extra");
        assert!(
            (before + answered..=before + answered + 1).contains(&after),
            "round {round}: {before} faces before, {answered} enrollments answered, {after} after"
        );
        let ids = http(&server.addr, "GET", "/v1/identities", &[], b"").json();
        let people = 8 + usize::from(after > 0);
        assert_eq!(ids["identities"].as_array().unwrap().len(), people, "{ids}");
        let r = post_files(
            &server.addr,
            "/",
            &[("inputFile", "test_002.jpg", &w.bytes("test_002"))],
            &[],
        );
        assert_eq!(r.text(), "test_002:Bob");
    }
}

/// How many faces the gallery holds for `name` (0 when it is not enrolled).
fn faces_of(addr: &str, name: &str) -> usize {
    let ids = http(addr, "GET", "/v1/identities", &[], b"").json();
    ids["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == name)
        .map_or(0, |i| i["faces"].as_u64().unwrap() as usize)
}

/// `POST /v1/recognize` with an `Idempotency-Key`: a retry (a client that lost the answer)
/// gets the same result, answered from the store without recognising the image again;
/// another key is a new request.
#[test]
fn an_idempotent_recognize_retry_is_answered_from_the_store() {
    let w = Workload::new();
    let server = Server::start(&[]);
    w.enroll(&server.addr, &[]);
    let uploads = || -> f64 {
        http(&server.addr, "GET", "/metrics", &[], b"")
            .text()
            .lines()
            .filter(|l| l.starts_with("facerec_edge_uploads_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let post = |key: &str| {
        post_files(
            &server.addr,
            "/v1/recognize",
            &[("image", "test_003.jpg", &w.bytes("test_003"))],
            &[("idempotency-key", key)],
        )
    };
    let first = post("upload-42");
    assert_eq!(first.status, 200, "{}", first.text());
    let counted = uploads();
    let again = post("upload-42");
    assert_eq!(again.status, 200, "{}", again.text());
    let (a, b) = (first.json(), again.json());
    assert_eq!(a["results"][0]["name"], "German");
    assert_eq!(a["results"], b["results"], "the same answer");
    assert_eq!(uploads(), counted, "the retry was not recognised again");
    let other = post("upload-43");
    assert_eq!(other.json()["results"][0]["name"], "German");
    assert_eq!(uploads(), counted + 1.0);
    // A key that is no key is refused.
    let bad = post(&"x".repeat(300));
    assert_eq!(bad.status, 400, "{}", bad.text());
}
