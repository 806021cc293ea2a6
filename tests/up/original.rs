//! The original workload and its fairness: 1000 images from 100 clients, backpressure without workers, first in first answered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use facerec_testkit as kit;
use facerec_testkit::{http, post_files};

use crate::workload::{Server, Workload};

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
    let body = String::from_utf8(kit::dechunk(&r)).unwrap();
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
