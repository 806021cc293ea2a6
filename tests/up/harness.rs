//! The load harness (`facerec bench`) against a running `up`: the report, the sweep, the batch route.

use std::path::PathBuf;
use std::process::Command;

use crate::workload::{Server, Workload};

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
    let csv = facerec_testkit::cse546_csv();
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
    facerec_testkit::cse546_csv()
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
        .env("FACEREC_MODELS", facerec_testkit::models_dir())
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
