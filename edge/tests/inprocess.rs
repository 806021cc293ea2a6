//! The edge in-process (`facerec_edge::run` on a port-0 listener) with the local seams:
//! in-memory queues and a filesystem store. The test stands where the workers stand, at
//! the queue: it reads each request message and its upload from the store, and answers as
//! the worker contract says (the result stored under `result_key`, then a response
//! message). What is checked is the edge's own part: answers matched by request id, a
//! result found in the output bucket when its response message went elsewhere,
//! `REQUEST_TIMEOUT`, bad uploads refused before anything is stored or queued, and the
//! drain on shutdown. No engine: these run in seconds and build without Burn.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use facerec_contract::message::{input_key, result_key};
use facerec_contract::{Request, ResultMessage};
use facerec_edge::{Edge, EdgeConfig, EdgeMetrics};
use facerec_seams::{BlobStore, Bucket, FsStore, GalleryHandle, LocalQueue, Queue, Seams};
use facerec_testkit::{Reply, http, post_files};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// How the stand-in worker treats one request.
#[derive(Clone, Copy, PartialEq)]
enum Answer {
    /// Stores the result and sends the response message, as a worker does.
    Both,
    /// Stores the result only: the response message went to another edge.
    StoreOnly,
    /// Never answers.
    Never,
}

struct Running {
    addr: String,
    rt: tokio::runtime::Runtime,
    requests: Arc<LocalQueue>,
    store: Arc<FsStore>,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// A JPEG by its signature, its payload the name the stand-in worker answers with.
fn photo_of(name: &str) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend_from_slice(name.as_bytes());
    bytes
}

impl Running {
    /// The edge with `config` on 127.0.0.1:0, and a stand-in worker answering `answer`
    /// after `delay`.
    fn start(config: EdgeConfig, answer: Answer, delay: Duration) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsStore::new(dir.path()).unwrap());
        let requests = Arc::new(LocalQueue::new("req", Duration::from_secs(30)));
        let responses = Arc::new(LocalQueue::new("resp", Duration::from_secs(30)));
        let seams = Seams {
            requests: requests.clone(),
            responses: responses.clone(),
            dead_letters: Arc::new(LocalQueue::new("dlq", Duration::from_secs(30))),
            store: store.clone(),
        };
        let mut registry = Registry::default();
        let metrics = EdgeMetrics::register(&mut registry);
        let gallery = Arc::new(GalleryHandle::new("stand-in-model"));
        let edge = Edge::new(config, seams, gallery, metrics, Arc::new(registry));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shutdown = CancellationToken::new();
        let server = rt.spawn(facerec_edge::run(edge, listener, shutdown.clone()));
        if answer != Answer::Never {
            rt.spawn(stand_in_worker(
                requests.clone(),
                responses,
                store.clone(),
                answer,
                delay,
            ));
        }
        Self {
            addr,
            rt,
            requests,
            store,
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    fn recognize(&self, filename: &str, bytes: &[u8]) -> Reply {
        post_files(&self.addr, "/", &[("inputFile", filename, bytes)], &[])
    }

    /// Request messages queued so far (visible or being handled).
    fn queued(&self) -> u64 {
        let d = self.rt.block_on(self.requests.depth()).unwrap();
        d.visible + d.in_flight
    }

    /// Uploads in the input bucket.
    fn stored_uploads(&self) -> usize {
        self.rt
            .block_on(self.store.list(Bucket::In, "uploads/"))
            .unwrap()
            .len()
    }
}

/// Answers every request message: the name is the upload's payload.
async fn stand_in_worker(
    requests: Arc<LocalQueue>,
    responses: Arc<LocalQueue>,
    store: Arc<FsStore>,
    answer: Answer,
    delay: Duration,
) {
    loop {
        let Ok(msgs) = requests.receive(10, Duration::from_secs(1)).await else {
            continue;
        };
        for m in msgs {
            let req = Request::parse(&m.body).unwrap();
            let upload = store
                .get(Bucket::In, &input_key(&req.request_id))
                .await
                .unwrap();
            let mut result = ResultMessage::error(
                &req.request_id,
                &req.filename,
                facerec_contract::ImageError::new(facerec_contract::ErrorKind::Io, "unset"),
            );
            result.error = None;
            result.name = Some(String::from_utf8_lossy(&upload[4..]).into_owned());
            tokio::time::sleep(delay).await;
            let body = result.to_json();
            store
                .put(
                    Bucket::Out,
                    &result_key(&req.request_id),
                    Bytes::from(body.clone()),
                )
                .await
                .unwrap();
            if answer == Answer::Both {
                responses.send(vec![body]).await.unwrap();
            }
            requests.ack(vec![m.receipt]).await.unwrap();
        }
    }
}

fn quick() -> EdgeConfig {
    EdgeConfig {
        request_timeout: Duration::from_secs(2),
        result_poll: Duration::from_millis(200),
        response_wait: Duration::from_millis(200),
        drain: Duration::from_secs(5),
        ..EdgeConfig::default()
    }
}

#[test]
fn answers_are_matched_by_request_id_not_by_file_name() {
    let edge = Running::start(quick(), Answer::Both, Duration::from_millis(50));
    // Twenty clients at once, every upload named `same.jpg`, each a different person.
    let clients: Vec<_> = (0..20)
        .map(|i| {
            let addr = edge.addr.clone();
            std::thread::spawn(move || {
                let who = format!("person{i}");
                let r = post_files(
                    &addr,
                    "/",
                    &[("inputFile", "same.jpg", &photo_of(&who))],
                    &[],
                );
                (who, r.status, r.text())
            })
        })
        .collect();
    for c in clients {
        let (who, status, text) = c.join().unwrap();
        assert_eq!((status, text), (200, format!("same:{who}")));
    }
    let health = http(&edge.addr, "GET", "/health", &[], b"");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
}

#[test]
fn a_result_whose_response_went_elsewhere_is_found_in_the_store() {
    let edge = Running::start(quick(), Answer::StoreOnly, Duration::ZERO);
    let r = edge.recognize("a.jpg", &photo_of("Paul"));
    assert_eq!((r.status, r.text().as_str()), (200, "a:Paul"));
}

#[test]
fn no_result_within_request_timeout_is_a_504_and_the_request_stays_queued() {
    let edge = Running::start(quick(), Answer::Never, Duration::ZERO);
    let r = edge.recognize("a.jpg", &photo_of("Paul"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["kind"], "timeout");
    // The work is not lost: the message waits for a worker.
    assert_eq!(edge.queued(), 1);
    // Nothing waits for it at the edge any more: the one request in flight is this one.
    let stats = http(&edge.addr, "GET", "/v1/stats", &[], b"").json();
    assert_eq!(stats["in_flight"], 1, "{stats}");
}

#[test]
fn bad_uploads_are_refused_before_anything_is_stored_or_queued() {
    let edge = Running::start(
        EdgeConfig {
            max_file_size: 1000,
            ..quick()
        },
        Answer::Never,
        Duration::ZERO,
    );
    let cases: [(&str, Vec<u8>, u16, &str); 3] = [
        (
            "notes.txt",
            b"hello, not an image".to_vec(),
            415,
            "not_an_image",
        ),
        ("empty.jpg", Vec::new(), 400, "empty"),
        ("big.jpg", photo_of(&"x".repeat(2000)), 413, "too_large"),
    ];
    for (name, bytes, status, kind) in cases {
        let r = edge.recognize(name, &bytes);
        assert_eq!(r.status, status, "{name}: {}", r.text());
        assert_eq!(r.json()["kind"], kind, "{name}");
    }
    let r = post_files(
        &edge.addr,
        "/",
        &[("other", "a.jpg", &photo_of("Paul"))],
        &[],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!((edge.queued(), edge.stored_uploads()), (0, 0));
}

#[test]
fn shutdown_answers_open_requests_refuses_new_ones_and_returns() {
    let mut edge = Running::start(quick(), Answer::Both, Duration::from_millis(1500));
    let addr = edge.addr.clone();
    let open = std::thread::spawn(move || {
        post_files(
            &addr,
            "/",
            &[("inputFile", "a.jpg", &photo_of("Paul"))],
            &[],
        )
        .text()
    });
    // The upload is queued: the stand-in worker holds it for 1.5 s.
    let t = std::time::Instant::now();
    while edge.stored_uploads() == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the upload never arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    edge.shutdown.cancel();
    std::thread::sleep(Duration::from_millis(300));
    let late = edge.recognize("b.jpg", &photo_of("Bob"));
    assert_eq!(late.status, 503, "{}", late.text());
    assert_eq!(
        late.headers.get("connection").map(String::as_str),
        Some("close")
    );
    assert_eq!(open.join().unwrap(), "a:Paul");
    let server = edge.server.take().unwrap();
    edge.rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), server).await })
        .expect("run returns once drained")
        .unwrap();
}
