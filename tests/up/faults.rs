//! Faults: bounded storage, shutdown with a backlog, kills mid-request, mid-upload and mid-gallery-change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use facerec_testkit as kit;
use facerec_testkit::{batch_results, http, post_files};

use crate::workload::{Server, Workload, files_under};

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
    let value = |metrics: &str, name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    // The results are counted and measured by a sweep while they are there.
    wait_for("the stored results' size exported", &|| {
        let m = http(addr, "GET", "/metrics", &[], b"").text();
        value(&m, "facerec_engine_store_objects{bucket=\"out\"}") >= 1.0
            && value(&m, "facerec_engine_store_bytes{bucket=\"out\"}") > 0.0
    });
    // Where the people were seen is kept while the results are.
    let paul = "/v1/identities/Paul/appearances";
    let seen = http(addr, "GET", paul, &[], b"").json();
    assert!(
        !seen["appearances"].as_array().unwrap().is_empty(),
        "{seen}"
    );
    // After the retention (7.2 s) every result and the dead-lettered upload are gone, and
    // so are the faces seen in them.
    wait_for("results expired", &|| {
        files_under(&data.join("out/results")).is_empty()
            && files_under(&data.join("in")).is_empty()
    });
    wait_for("seen faces forgotten", &|| {
        let seen = http(addr, "GET", paul, &[], b"").json();
        seen["appearances"].as_array().is_some_and(Vec::is_empty)
    });
    // The gallery (the face store under --data) is never swept.
    assert!(data.join("faces.db").exists());
    let ids = http(addr, "GET", "/v1/identities", &[], b"").json();
    assert_eq!(ids["identities"].as_array().map(Vec::len), Some(8), "{ids}");
    wait_for("the finished job forgotten", &|| {
        http(addr, "GET", &format!("/v1/batches/{id}"), &[], b"").status == 404
    });
    // Everything in the output bucket expired (the gallery is the face store's, not an
    // object there).
    wait_for("the sweep's counts exported", &|| {
        let m = http(addr, "GET", "/metrics", &[], b"").text();
        value(&m, "facerec_engine_store_expired_total{bucket=\"out\"}") >= 17.0
            && value(&m, "facerec_engine_store_expired_total{bucket=\"in\"}") >= 1.0
            && value(&m, "facerec_engine_store_objects{bucket=\"out\"}") == 0.0
            && value(&m, "facerec_engine_store_bytes{bucket=\"out\"}") == 0.0
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
    let gallery = http(&server.addr, "GET", "/v1/identities", &[], b"").json();
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
    let progress = kit::wait_finished(&server.addr, &id, Duration::from_secs(60));
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
    let body = String::from_utf8(kit::dechunk(&r)).unwrap();
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
        http(&server.addr, "GET", "/v1/identities", &[], b"").json(),
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
    let progress = kit::wait_finished(&server.addr, &id, Duration::from_secs(120));
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
    kit::wait_finished(&server.addr, &id2, Duration::from_secs(300));
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

/// Upgrade: a gallery file kept by an earlier version under `--data/out/gallery/` is
/// imported into the face store at the first start that finds it (its people listed and
/// recognised), and never again: a restart lists the same faces, and an identity removed
/// after the import stays removed.
#[test]
fn a_gallery_file_of_an_earlier_version_is_imported_once() {
    let w = Workload::new();
    let mut server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let pairs = w.first_of_each();
    for (name, stem) in &pairs {
        let d = dir.path().join("people").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{stem}.jpg")), w.bytes(stem)).unwrap();
    }
    kit::enroll_gallery_file(
        &server.data().join("out/gallery/gallery.frg"),
        &dir.path().join("people"),
    );
    assert_eq!(faces_of(&server.addr, "Paul"), 0, "not read while running");
    server.kill_and_restart();
    let listed = http(&server.addr, "GET", "/v1/identities", &[], b"").json();
    let total: u64 = listed["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["faces"].as_u64().unwrap())
        .sum();
    assert_eq!(
        (listed["identities"].as_array().unwrap().len(), total),
        (8, pairs.len() as u64),
        "{listed}"
    );
    w.assert_answers(&server.addr);
    let r = http(&server.addr, "DELETE", "/v1/identities/Paul", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    server.kill_and_restart();
    assert_eq!(faces_of(&server.addr, "Paul"), 0, "imported once only");
    let again = http(&server.addr, "GET", "/v1/identities", &[], b"").json();
    assert_eq!(again["identities"].as_array().unwrap().len(), 7, "{again}");
}

/// `up` on a PostgreSQL face store that goes away: gallery changes and stored-face reads
/// answer `503` with `Retry-After` (nothing half-done), an upload accepted meanwhile is
/// held, not lost, and answered once the database is back, its face recorded once; then
/// everything works again.
#[test]
fn a_face_store_that_goes_away_answers_503_and_loses_nothing() {
    let w = Workload::new();
    let mut pg = facerec_testkit::Postgres::start();
    let url = pg.database();
    let server = Server::start(&["--database-url", &url]);
    let addr = server.addr.clone();
    w.enroll(&addr, &[]);
    let (stem, name) = w.expected[0].clone();
    // The newcomer's photo: someone else's face.
    let other = w
        .expected
        .iter()
        .find(|(_, n)| *n != name)
        .map(|(s, _)| w.bytes(s))
        .unwrap();

    pg.halt();
    let enrol = post_files(
        &addr,
        "/v1/identities/Newcomer/faces",
        &[("image", "n.jpg", &other)],
        &[],
    );
    assert_eq!(enrol.status, 503, "{}", enrol.text());
    assert!(
        enrol.headers.contains_key("retry-after"),
        "{:?}",
        enrol.headers
    );
    for path in [
        format!("/v1/identities/{name}/appearances"),
        "/v1/retagging".to_string(),
    ] {
        let r = http(&addr, "GET", &path, &[], b"");
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(r.headers.contains_key("retry-after"), "{path}");
    }
    // An upload while the database is away: held until its face is recorded.
    let upload = {
        let (addr, bytes, stem) = (addr.clone(), w.bytes(&stem), stem.clone());
        std::thread::spawn(move || {
            post_files(
                &addr,
                "/",
                &[("inputFile", &format!("{stem}.jpg"), &bytes)],
                &[],
            )
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !upload.is_finished(),
        "answered before its face was recorded"
    );
    pg.resume();
    let r = upload.join().unwrap();
    assert_eq!(r.text(), format!("{stem}:{name}"));

    // Back: the enrolment goes through, the upload's face is listed once.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let enrol = post_files(
            &addr,
            "/v1/identities/Newcomer/faces",
            &[("image", "n.jpg", &other)],
            &[],
        );
        if enrol.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", enrol.text());
        std::thread::sleep(Duration::from_millis(250));
    }
    let listed = http(
        &addr,
        "GET",
        &format!("/v1/identities/{name}/appearances"),
        &[],
        b"",
    )
    .json();
    let ids: Vec<&str> = listed["appearances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["request_id"].as_str())
        .collect();
    assert_eq!(ids, [r.headers["x-request-id"].as_str()], "{listed}");
}
