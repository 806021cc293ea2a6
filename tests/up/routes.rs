//! Every route's answers and error statuses, hostile and careless clients, idempotent retries.

use std::time::Duration;

use facerec_testkit as kit;
use facerec_testkit::{Reply, batch_results, http, post_files};

use crate::workload::{Server, Workload};

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

    // Renames keep the faces: matched under the new name at once; a taken name is 409, an
    // unknown one 404, a bad body 400; the key is needed.
    let rename = |from: &str, body: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("content-type", "application/json")];
        h.extend_from_slice(headers);
        http(
            addr,
            "PATCH",
            &format!("/v1/identities/{from}"),
            &h,
            body.as_bytes(),
        )
    };
    let r = rename("Paul", r#"{"name": "Paul Smith"}"#, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    // So do the routes that read or forget stored faces.
    for (method, path) in [
        ("GET", "/v1/identities/Paul/appearances"),
        ("GET", "/v1/retagging"),
        ("GET", "/v1/faces/1/similar"),
        ("DELETE", "/v1/batches/b1/faces"),
    ] {
        assert_eq!(
            http(addr, method, path, &[], b"").status,
            401,
            "{method} {path}"
        );
    }
    let r = post_files(addr, "/v1/faces/search", &[("image", "p.jpg", &paul)], &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = rename("Paul", r#"{"name": "Paul Smith"}"#, &auth);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["name"].as_str(), r.json()["faces"].as_u64()),
        (Some("Paul Smith"), Some(1))
    );
    let r = post_files(addr, "/", &[("inputFile", "test_000.jpg", &paul)], &[]);
    assert_eq!(r.text(), "test_000:Paul Smith");
    let r = post_files(
        addr,
        "/v1/identities/Bob/faces",
        &[("image", "b.jpg", &bob)],
        &auth,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = rename("Paul%20Smith", r#"{"name": "Bob"}"#, &auth);
    assert_eq!(
        (r.status, kind(&r).as_str()),
        (409, "conflict"),
        "{}",
        r.text()
    );
    let r = rename("Nobody", r#"{"name": "Somebody"}"#, &auth);
    assert_eq!(r.status, 404, "{}", r.text());
    let r = rename("Bob", r#"{"nom": "x"}"#, &auth);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = rename("Bob", r#"{"name": ".."}"#, &auth);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = http(addr, "DELETE", "/v1/identities/Bob", &auth, b"");
    assert_eq!(r.status, 200);

    let r = http(addr, "DELETE", "/v1/identities/Paul%20Smith", &auth, b"");
    assert_eq!(r.status, 200);
    let r = post_files(addr, "/", &[("inputFile", "test_000.jpg", &paul)], &[]);
    assert_eq!(r.text(), "test_000:unknown");
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
        kit::BOUNDARY
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
    let ct = format!("multipart/form-data; boundary={}", kit::BOUNDARY);
    let broken = format!(
        "--{b}\r\ncontent-type: image/jpeg\r\n\r\nxxxx\r\n--{b}--\r\n",
        b = kit::BOUNDARY
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

/// Every recognised face is kept in the face store: "where does this person appear?"
/// lists the uploads where each enrolled person was recognised (expected names from the
/// data set's CSV), newest first, in pages; with `--index-faces false` nothing is kept.
#[test]
fn where_a_person_appears_is_listed_from_what_was_uploaded() {
    let w = Workload::new();
    let server = Server::start(&[]);
    let addr = &server.addr;
    w.enroll(addr, &[]);
    let mut uploaded: Vec<(String, String, String)> = Vec::new();
    for (stem, name) in w.expected.iter().take(30) {
        let file = format!("{stem}.jpg");
        let r = post_files(addr, "/", &[("inputFile", &file, &w.bytes(stem))], &[]);
        assert_eq!(r.text(), format!("{stem}:{name}"));
        let id = r.headers["x-request-id"].clone();
        uploaded.push((id, file, name.clone()));
    }
    let names: std::collections::BTreeSet<&str> =
        uploaded.iter().map(|(_, _, n)| n.as_str()).collect();
    for name in &names {
        let r = http(
            addr,
            "GET",
            &format!("/v1/identities/{name}/appearances?limit=1000"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        let listed: Vec<(String, String)> = v["appearances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["request_id"].as_str().unwrap().to_string(),
                    a["filename"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        // Newest first: the uploads of this person in reverse order.
        let want: Vec<(String, String)> = uploaded
            .iter()
            .rev()
            .filter(|(_, _, n)| n == name)
            .map(|(id, file, _)| (id.clone(), file.clone()))
            .collect();
        assert_eq!(listed, want, "{name}");
        assert!(v["next"].is_null());
    }
    // Pages: `next` leads to the rest, nothing twice.
    let busiest = names
        .iter()
        .max_by_key(|n| uploaded.iter().filter(|u| &u.2 == *n).count())
        .unwrap();
    let all = uploaded.iter().filter(|u| &u.2 == busiest).count();
    assert!(all >= 3, "{busiest}: {all}");
    let first = http(
        addr,
        "GET",
        &format!("/v1/identities/{busiest}/appearances?limit=2"),
        &[],
        b"",
    )
    .json();
    assert_eq!(first["appearances"].as_array().unwrap().len(), 2);
    let next = first["next"].as_i64().expect("a next page");
    let rest = http(
        addr,
        "GET",
        &format!("/v1/identities/{busiest}/appearances?limit=1000&before={next}"),
        &[],
        b"",
    )
    .json();
    assert_eq!(rest["appearances"].as_array().unwrap().len(), all - 2);
    // An unknown name, a bad page.
    assert_eq!(
        http(addr, "GET", "/v1/identities/Nobody/appearances", &[], b"").status,
        404
    );
    assert_eq!(
        http(
            addr,
            "GET",
            "/v1/identities/Paul/appearances?limit=0",
            &[],
            b""
        )
        .status,
        400
    );
    drop(server);

    let server = Server::start(&["--index-faces", "false"]);
    w.enroll(&server.addr, &[]);
    let (stem, name) = &w.expected[0];
    let r = post_files(
        &server.addr,
        "/",
        &[("inputFile", "a.jpg", &w.bytes(stem))],
        &[],
    );
    assert_eq!(r.text(), format!("a:{name}"));
    let v = http(
        &server.addr,
        "GET",
        &format!("/v1/identities/{name}/appearances"),
        &[],
        b"",
    )
    .json();
    assert_eq!(v["appearances"].as_array().map(Vec::len), Some(0));
}

/// Faces seen before anyone was enrolled are tagged once people are: uploads of people
/// nobody knew yet, then their enrolment, then "where does this person appear?" lists
/// each one's uploads (expected names from the data set's CSV) once `/v1/retagging` says
/// every seen face has met the enrolments. A removal is followed too.
#[test]
fn uploads_seen_before_an_enrolment_are_tagged_after_it() {
    let w = Workload::new();
    let server = Server::start(&[]);
    let addr = &server.addr;
    let mut uploaded: Vec<(String, String)> = Vec::new();
    for (stem, name) in w.expected.iter().take(30) {
        let r = post_files(addr, "/", &[("inputFile", "x.jpg", &w.bytes(stem))], &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        uploaded.push((r.headers["x-request-id"].clone(), name.clone()));
    }
    w.enroll(addr, &[]);
    let settled = || {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let v = http(addr, "GET", "/v1/retagging", &[], b"").json();
            if v["done"] == true {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "re-tagging: {v}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let status = settled();
    assert_eq!(status["stale"], 0);
    let listed = |name: &str| -> Vec<String> {
        let r = http(
            addr,
            "GET",
            &format!("/v1/identities/{name}/appearances?limit=1000"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["appearances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["request_id"].as_str().unwrap().to_string())
            .collect()
    };
    let names: std::collections::BTreeSet<&str> =
        uploaded.iter().map(|(_, n)| n.as_str()).collect();
    for name in &names {
        let want: Vec<String> = uploaded
            .iter()
            .rev()
            .filter(|(_, n)| n == name)
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(listed(name), want, "{name}");
    }
    // "Who else looks like this?": a photo of someone not uploaded before (a probe: not
    // recorded itself) finds that person's uploads first, nearest first.
    let uploaded_stems: std::collections::BTreeSet<&str> = w
        .expected
        .iter()
        .take(30)
        .map(|(s, _)| s.as_str())
        .collect();
    let (probe, who) = w
        .expected
        .iter()
        .skip(30)
        .find(|(s, n)| {
            !uploaded_stems.contains(s.as_str())
                && uploaded.iter().filter(|(_, u)| u == n).count() >= 2
        })
        .expect("a later photo of someone uploaded twice");
    let theirs = uploaded.iter().filter(|(_, n)| n == who).count();
    let search = |path: &str| {
        let r = post_files(addr, path, &[("image", "q.jpg", &w.bytes(probe))], &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["faces"].as_array().unwrap().clone()
    };
    let found = search(&format!("/v1/faces/search?k={theirs}"));
    assert_eq!(found.len(), theirs);
    for f in &found {
        assert_eq!(f["identity"].as_str(), Some(who.as_str()), "{f}");
        assert_eq!(f["same_person"], true, "{f}");
    }
    let distances: Vec<f64> = found
        .iter()
        .map(|f| f["distance"].as_f64().unwrap())
        .collect();
    assert!(distances.windows(2).all(|d| d[0] <= d[1]), "{distances:?}");
    assert_eq!(
        search("/v1/faces/search?k=1000").len(),
        30,
        "the probe was not recorded"
    );
    // From a seen face: the others of that person first, itself left out.
    let first = found[0]["id"].as_i64().unwrap();
    let r = http(
        addr,
        "GET",
        &format!("/v1/faces/{first}/similar?k={}", theirs - 1),
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let similar = r.json()["faces"].as_array().unwrap().clone();
    assert_eq!(similar.len(), theirs - 1);
    assert!(
        similar.iter().all(
            |f| f["id"].as_i64() != Some(first) && f["identity"].as_str() == Some(who.as_str())
        )
    );
    for (path, status) in [
        ("/v1/faces/999999/similar", 404),
        ("/v1/faces/abc/similar", 400),
        ("/v1/faces/1/similar?k=0", 400),
        ("/v1/faces/1/similar?k=1001", 400),
        ("/v1/faces/1/similar?since_ms=yesterday", 400),
    ] {
        assert_eq!(http(addr, "GET", path, &[], b"").status, status, "{path}");
    }
    // Removing someone: their faces are matched again against the others, and no one
    // else is given them (each upload is one person's).
    let gone = names.iter().next().unwrap();
    let r = http(addr, "DELETE", &format!("/v1/identities/{gone}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    settled();
    for name in names.iter().skip(1) {
        assert_eq!(
            listed(name).len(),
            uploaded.iter().filter(|(_, n)| n == name).count(),
            "{name}"
        );
    }
}

/// `facerec faces` reads and changes what `up` keeps, beside it (SQLite in WAL mode takes
/// readers while `up` writes), answering as the HTTP API does.
#[test]
fn the_faces_command_answers_as_the_api_does() {
    let w = Workload::new();
    let server = Server::start(&[]);
    let addr = &server.addr;
    w.enroll(addr, &[]);
    for (stem, _) in w.expected.iter().take(12) {
        let r = post_files(addr, "/", &[("inputFile", "x.jpg", &w.bytes(stem))], &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let job_files: Vec<(String, Vec<u8>)> = w
        .expected
        .iter()
        .skip(12)
        .take(4)
        .map(|(s, _)| (format!("{s}.jpg"), w.bytes(s)))
        .collect();
    let parts: Vec<(&str, &str, &[u8])> = job_files
        .iter()
        .map(|(f, b)| ("images", f.as_str(), b.as_slice()))
        .collect();
    let r = post_files(addr, "/v1/batches", &parts, &[]);
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(batch_results(addr, &job, &[]).len(), 4);

    let faces = |args: &[&str]| faces_cli(&server, args);
    let ids = |items: &[serde_json::Value]| -> Vec<i64> {
        items.iter().map(|f| f["id"].as_i64().unwrap()).collect()
    };
    let (stem, name) = &w.expected[0];
    let api = http(
        addr,
        "GET",
        &format!("/v1/identities/{name}/appearances"),
        &[],
        b"",
    )
    .json();
    let listed = faces(&["appearances", name]);
    assert!(!listed.is_empty());
    assert_eq!(ids(&listed), ids(api["appearances"].as_array().unwrap()));

    let first = listed[0]["id"].as_i64().unwrap().to_string();
    let api = http(
        addr,
        "GET",
        &format!("/v1/faces/{first}/similar?k=5"),
        &[],
        b"",
    )
    .json();
    let cli = faces(&["similar", "--id", &first, "-k", "5"]);
    assert_eq!(ids(&cli), ids(api["faces"].as_array().unwrap()));

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("probe.jpg");
    std::fs::write(&image, w.bytes(stem)).unwrap();
    let api = post_files(
        addr,
        "/v1/faces/search?k=5",
        &[("image", "p.jpg", &w.bytes(stem))],
        &[],
    );
    let cli = faces(&[
        "similar",
        "--image",
        &image.display().to_string(),
        "-k",
        "5",
    ]);
    assert_eq!(ids(&cli), ids(api.json()["faces"].as_array().unwrap()));
    assert_eq!(cli[0]["identity"].as_str(), Some(name.as_str()));

    let status = &faces(&["retag", "--run"])[0];
    assert_eq!(status["cursor"], status["latest"], "{status}");
    assert_eq!(status["stale"], 0);

    assert_eq!(
        faces(&["similar", "--id", &first, "-k", "1000", "--batch", &job]).len(),
        4
    );
    assert_eq!(faces(&["forget-batch", &job])[0]["forgotten"], 4);
    assert!(faces(&["similar", "--id", &first, "-k", "1000", "--batch", &job]).is_empty());
}

/// `facerec faces --data <server's> ARGS`: its JSON lines.
fn faces_cli(server: &Server, args: &[&str]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(kit::facerec_bin())
        .args(["faces", "--data"])
        .arg(server.data())
        .args(args)
        .env("FACEREC_MODELS", kit::models_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "faces {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn collections_keep_their_galleries_and_seen_faces_apart() {
    let w = Workload::new();
    let server = Server::start(&[]);
    let addr = &server.addr;
    let put = |path: &str| http(addr, "PUT", path, &[], b"");
    let r = put("/v1/collections/events");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(put("/v1/collections/events").status, 200, "exists");
    assert_eq!(put("/v1/collections/no%20spaces").status, 400);
    let names = || -> Vec<String> {
        let v = http(addr, "GET", "/v1/collections", &[], b"").json();
        v["collections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(), ["default", "events"]);

    // Everyone enrolled in events only: the default collection still knows no one.
    w.enroll_at(addr, "/v1/collections/events", &[]);
    let count = |path: &str| {
        let r = http(addr, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()["identities"].as_array().unwrap().len()
    };
    assert_eq!(count("/v1/collections/events/identities"), 8);
    assert_eq!(count("/v1/identities"), 0);
    let recognised = |path: &str| {
        let r = post_files(
            addr,
            path,
            &[("image", "test_000.jpg", &w.bytes("test_000"))],
            &[],
        );
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        r.json()["results"][0]["name"].as_str().unwrap().to_string()
    };
    assert_eq!(recognised("/v1/collections/events/recognize"), "Paul");
    assert_ne!(recognised("/v1/recognize"), "Paul");

    // A bulk job in events: answered against its gallery, its faces kept there.
    let (picks, _, tar) = w.first_as_tar(20);
    let r = http(
        addr,
        "POST",
        "/v1/collections/events/batches",
        &[("content-type", "application/x-tar")],
        &tar,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let got = batch_results(addr, &id, &[]);
    for (i, (stem, name)) in picks.iter().enumerate() {
        assert_eq!(got.get(&format!("{i:03}_{stem}.jpg")), Some(name), "{stem}");
    }
    let pauls = picks.iter().filter(|(_, n)| n == "Paul").count();
    assert!(pauls > 0);
    let r = http(
        addr,
        "GET",
        "/v1/collections/events/identities/Paul/appearances",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // The job's photos of Paul, and test_000 recognised in events above, each with the
    // quality measured where it was found.
    let seen = r.json()["appearances"].as_array().unwrap().clone();
    assert_eq!(seen.len(), pauls + 1);
    for a in &seen {
        let q = &a["quality"];
        let (yaw, sharpness) = (q["yaw"].as_f64().unwrap(), q["sharpness"].as_f64().unwrap());
        assert!((-1.0..=1.0).contains(&yaw) && sharpness > 0.0, "{a}");
        assert!(q["roll"].as_f64().unwrap().abs() <= 180.0, "{a}");
    }
    assert_eq!(
        http(addr, "GET", "/v1/identities/Paul/appearances", &[], b"").status,
        404,
        "no Paul in the default collection"
    );
    // The faces command works in a collection too.
    let cli = faces_cli(&server, &["--collection", "events", "appearances", "Paul"]);
    assert_eq!(cli.len(), pauls + 1);
    let listed: Vec<String> = faces_cli(&server, &["collections"])
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["default", "events"]);
    let retag = http(addr, "GET", "/v1/collections/events/retagging", &[], b"");
    assert_eq!(retag.status, 200, "{}", retag.text());

    // A collection that does not exist: 404 on every route under it.
    for (method, path) in [
        ("GET", "/v1/collections/nope"),
        ("GET", "/v1/collections/nope/identities"),
        ("GET", "/v1/collections/nope/retagging"),
        ("DELETE", "/v1/collections/nope"),
        ("DELETE", "/v1/collections/nope/identities/Paul"),
    ] {
        let r = http(addr, method, path, &[], b"");
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
    }
    let r = post_files(
        addr,
        "/v1/collections/nope/recognize",
        &[("image", "test_000.jpg", &w.bytes("test_000"))],
        &[],
    );
    assert_eq!(r.status, 404, "{}", r.text());

    // Deleting: not the default collection; events with everything it held.
    assert_eq!(
        http(addr, "DELETE", "/v1/collections/default", &[], b"").status,
        409
    );
    let r = http(addr, "DELETE", "/v1/collections/events", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["identities"], 8);
    assert_eq!(names(), ["default"]);
    assert_eq!(
        http(addr, "GET", "/v1/collections/events/identities", &[], b"").status,
        404
    );
    // The default collection and the original route are as they were.
    let r = post_files(
        addr,
        "/",
        &[("inputFile", "test_000.jpg", &w.bytes("test_000"))],
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(r.text(), "test_000:Paul");
}
