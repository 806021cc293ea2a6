//! What an operator sees: the Prometheus source of a running `up`, the web page in headless Chromium.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use facerec_testkit as kit;
use facerec_testkit::post_files;

use crate::workload::{Server, Workload};

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
    let prometheus = kit::Prometheus::start(&[&addr]);
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
