//! The worker on the local seams (in-process queue, filesystem store) with the real
//! engine and real faces: every request gets exactly one correct result, poison messages
//! are dead-lettered with reasons and still answered, duplicates give one result, a
//! worker killed mid-batch loses nothing, and one killed as it acknowledges leaves no
//! upload behind.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use facerec_contract::message::{input_key, result_key};
use facerec_contract::{DeadLetter, Request, ResultMessage};
use facerec_engine::{BackendChoice, Engine, EngineConfig};
use facerec_seams::{
    BlobStore, Bucket, Depth, FsStore, GalleryHandle, LocalQueue, Queue, Received, SeamError, Seams,
};
use facerec_worker::{Compute, Metrics, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn engine() -> Arc<Engine> {
    static ENGINE: OnceLock<Arc<Engine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = EngineConfig::new(facerec_testkit::models_dir());
            config.backend = BackendChoice::Cpu;
            Arc::new(Engine::new(config).expect("engine loads"))
        })
        .clone()
}

struct Setup {
    _dir: tempfile::TempDir,
    req: Arc<LocalQueue>,
    resp: Arc<LocalQueue>,
    dlq: Arc<LocalQueue>,
    store: Arc<FsStore>,
    gallery: Arc<GalleryHandle>,
    /// request id → expected name
    expected: HashMap<String, String>,
}

impl Setup {
    fn seams(&self) -> Seams {
        Seams {
            requests: self.req.clone(),
            responses: self.resp.clone(),
            dead_letters: self.dlq.clone(),
            store: self.store.clone(),
        }
    }

    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            wait: Duration::from_millis(200),
            max_batch: 16,
            visibility: Duration::from_secs(3),
            retry_delay: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(20),
            gallery_refresh: None,
            ..WorkerConfig::default()
        }
    }

    fn worker(&self) -> Arc<Worker> {
        Worker::new(
            Compute::new(engine(), 2),
            self.gallery.clone(),
            self.seams(),
            self.config(),
            Metrics::default(),
        )
    }

    async fn upload(&self, id: &str, filename: &str, bytes: Vec<u8>) -> String {
        let req = Request::new(id, filename);
        self.store
            .put(Bucket::In, &input_key(id), Bytes::from(bytes))
            .await
            .unwrap();
        req.to_json()
    }
}

/// Enrolls the first photo of each CSE546 person and uploads `n` workload images; the
/// face store is SQLite in the test's folder.
async fn setup(n: usize) -> Setup {
    setup_on(n, None).await
}

/// As `setup`, the face store at `faces_url` when given.
async fn setup_on(n: usize, faces_url: Option<String>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let dlq = Arc::new(LocalQueue::new("dlq", Duration::from_secs(30)));
    let req = Arc::new(LocalQueue::new("req", Duration::from_secs(3)).with_redrive(dlq.clone(), 4));
    let resp = Arc::new(LocalQueue::new("resp", Duration::from_secs(30)));
    let store = Arc::new(FsStore::new(dir.path()).unwrap());
    let engine = engine();
    let faces_db =
        faces_url.unwrap_or_else(|| format!("sqlite:{}", dir.path().join("faces.db").display()));
    let gallery = Arc::new(GalleryHandle::with_store(
        engine.models().recognition_id(),
        facerec_seams::faces::open(&faces_db, engine.models().recognition_id())
            .await
            .unwrap(),
    ));
    gallery.load(store.as_ref()).await.unwrap();

    let cse = facerec_testkit::cse546_dir();
    let expected = facerec_testkit::cse546_expected();
    // Every distinct photo (ten crops of eight people) under its name, as the original
    // system's gallery: Emily's and Gerry's two photos do not stand for each other.
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut embeddings = Vec::new();
    for (stem, name) in &expected {
        let bytes = std::fs::read(cse.join(format!("{stem}.jpg"))).unwrap();
        if seen.contains(&bytes) {
            continue;
        }
        seen.push(bytes.clone());
        let (mut a, _) = engine.analyze(&[&bytes]);
        let face = a.remove(0).unwrap().faces.remove(0);
        embeddings.push((name.clone(), face.embedding));
    }
    for (name, embedding) in embeddings {
        let face = facerec_seams::faces::NewFace {
            embedding,
            side: 0.0,
            source: None,
        };
        gallery
            .enroll(store.as_ref(), &name, &[face])
            .await
            .unwrap();
    }

    let s = Setup {
        _dir: dir,
        req,
        resp,
        dlq,
        store,
        gallery,
        expected: HashMap::new(),
    };
    let mut expected_ids = HashMap::new();
    let mut bodies = Vec::new();
    // A stride through the 1000 images covers every person.
    for (i, (stem, name)) in expected.iter().step_by(1000 / n).take(n).enumerate() {
        let id = format!("req-{i:04}");
        let bytes = std::fs::read(cse.join(format!("{stem}.jpg"))).unwrap();
        bodies.push(s.upload(&id, &format!("{stem}.jpg"), bytes).await);
        expected_ids.insert(id, name.clone());
    }
    s.req.send(bodies).await.unwrap();
    Setup {
        expected: expected_ids,
        ..s
    }
}

/// Reads responses until every id in `want` has one (or the deadline passes).
async fn collect(
    resp: &LocalQueue,
    want: usize,
    deadline: Duration,
) -> HashMap<String, ResultMessage> {
    let mut got: HashMap<String, ResultMessage> = HashMap::new();
    let end = tokio::time::Instant::now() + deadline;
    while got.len() < want && tokio::time::Instant::now() < end {
        let msgs = resp.receive(10, Duration::from_millis(500)).await.unwrap();
        let receipts = msgs.iter().map(|m| m.receipt.clone()).collect();
        for m in msgs {
            let r = ResultMessage::parse(m.body.as_bytes()).unwrap();
            if let Some(prev) = got.get(&r.request_id) {
                assert_eq!(prev, &r, "a second, different result for {}", r.request_id);
            }
            got.insert(r.request_id.clone(), r);
        }
        resp.ack(receipts).await.unwrap();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_answered_once_poison_dead_lettered() {
    let s = setup(60).await;
    // Poison and duplicates.
    let bad_image = s
        .upload("bad-image", "notes.jpg", b"hello, not an image".to_vec())
        .await;
    let missing = Request::new("missing-upload", "gone.jpg").to_json();
    // req-0000 is test_000.jpg; req-0001 is sent twice at once.
    let dup = "req-0000".to_string();
    let dup_body = Request::new(dup.clone(), "test_000.jpg");
    let twice = s
        .req
        .peek_bodies()
        .into_iter()
        .find(|b| b.contains("\"req-0001\""))
        .unwrap();
    s.req
        .send(vec![
            "this is not json".into(),
            r#"{"v":1,"request_id":"half","filename":"x.jpg"}"#.into(),
            bad_image,
            missing,
            twice,
        ])
        .await
        .unwrap();

    let worker = s.worker();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone()));

    let want = s.expected.len() + 3; // + bad-image, missing-upload, half (salvaged id)
    let got = collect(&s.resp, want, Duration::from_secs(240)).await;
    // A duplicate of an answered request, sent after the fact, is answered the same.
    let stored_before = s.store.get(Bucket::Out, &result_key(&dup)).await.unwrap();
    s.req.send(vec![dup_body.to_json()]).await.unwrap();
    // A late second answer of the request sent twice (req-0001) may come first: wait for
    // the duplicate's own answer, and hold every late answer to the first one.
    let mut again: HashMap<String, ResultMessage> = HashMap::new();
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    while !again.contains_key(&dup) && tokio::time::Instant::now() < end {
        again.extend(collect(&s.resp, 1, Duration::from_secs(5)).await);
    }
    for (id, r) in &again {
        if let Some(first) = got.get(id) {
            assert_eq!(first, r, "a second, different result for {id}");
        }
    }
    stop.cancel();
    run.await.unwrap().unwrap();

    assert_eq!(
        again[&dup], got[&dup],
        "redelivery must give the same result"
    );
    assert_eq!(
        s.store.get(Bucket::Out, &result_key(&dup)).await.unwrap(),
        stored_before
    );
    for (id, name) in &s.expected {
        let r = got.get(id).unwrap_or_else(|| panic!("no result for {id}"));
        assert_eq!(r.name.as_deref(), Some(name.as_str()), "{id}: {r:?}");
        assert_eq!(r.plain(), format!("{}:{name}", r.stem));
        let stored =
            ResultMessage::parse(&s.store.get(Bucket::Out, &result_key(id)).await.unwrap())
                .unwrap();
        assert_eq!(&stored, r);
    }
    assert_eq!(
        got["bad-image"].error.as_ref().unwrap().kind.as_str(),
        "not_an_image"
    );
    assert_eq!(got["bad-image"].plain(), "notes:not_an_image");
    assert_eq!(
        got["missing-upload"].error.as_ref().unwrap().kind.as_str(),
        "io"
    );
    assert!(got["half"].error.is_some());

    let mut reasons: Vec<String> = s
        .dlq
        .peek_bodies()
        .iter()
        .map(|b| serde_json::from_str::<DeadLetter>(b).unwrap().reason)
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["malformed", "malformed", "missing_object", "not_an_image"]
    );
    let missing_letter = s
        .dlq
        .peek_bodies()
        .iter()
        .map(|b| serde_json::from_str::<DeadLetter>(b).unwrap())
        .find(|d| d.reason == "missing_object")
        .unwrap();
    assert_eq!(
        missing_letter.receive_count, 3,
        "dead-lettered after MAX_RETRIES deliveries"
    );
    assert_eq!(s.req.depth().await.unwrap(), Default::default());
    assert_eq!(s.resp.depth().await.unwrap(), Default::default());
}

#[test]
fn worker_killed_mid_batch_loses_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(setup(40));

    // Worker A runs on its own runtime, which is torn down while it holds messages:
    // every task of the worker dies at once, as in a SIGKILL.
    let rt_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let a = s.worker();
    rt_a.spawn(a.run(CancellationToken::new()));
    let first = rt.block_on(collect(&s.resp, 5, Duration::from_secs(120)));
    assert!(first.len() >= 5);
    let held = rt.block_on(s.req.depth()).unwrap();
    rt_a.shutdown_background();

    // Worker B picks up what A held once the visibility timeout passes.
    let b = s.worker();
    let stop = CancellationToken::new();
    let run_b = rt.spawn(b.run(stop.clone()));
    let rest = rt.block_on(collect(
        &s.resp,
        s.expected.len() - first.len(),
        Duration::from_secs(240),
    ));
    stop.cancel();
    rt.block_on(run_b).unwrap().unwrap();

    let mut all = first;
    for (k, v) in rest {
        if let Some(prev) = all.get(&k) {
            assert_eq!(prev, &v);
        }
        all.insert(k, v);
    }
    assert!(
        held.in_flight + held.visible > 0,
        "A was killed while holding work"
    );
    for (id, name) in &s.expected {
        let r = all.get(id).unwrap_or_else(|| panic!("lost {id}"));
        assert_eq!(r.name.as_deref(), Some(name.as_str()));
    }
    assert_eq!(rt.block_on(s.req.depth()).unwrap(), Default::default());
    assert!(s.dlq.peek_bodies().is_empty());
}

/// The request queue of a process that dies as it acknowledges: the first
/// acknowledgement reaches the queue, and neither it nor any later one returns.
struct DiesOnAck {
    inner: Arc<LocalQueue>,
    acked: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Queue for DiesOnAck {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, SeamError> {
        self.inner.receive(max, wait).await
    }
    async fn send(&self, bodies: Vec<String>) -> Result<(), SeamError> {
        self.inner.send(bodies).await
    }
    async fn ack(&self, receipts: Vec<String>) -> Result<(), SeamError> {
        self.inner.ack(receipts).await?;
        self.acked.notify_one();
        std::future::pending().await
    }
    async fn set_visibility(
        &self,
        receipts: Vec<String>,
        timeout: Duration,
    ) -> Result<(), SeamError> {
        self.inner.set_visibility(receipts, timeout).await
    }
    async fn depth(&self) -> Result<Depth, SeamError> {
        self.inner.depth().await
    }
}

/// A worker that deletes answered uploads, killed right after a batch's
/// acknowledgement reached the queue: the uploads of that batch were deleted before it
/// (an acknowledged message is never seen again, so nothing would delete them later),
/// and a second worker answers the rest; no upload is left behind.
#[test]
fn worker_killed_as_it_acknowledges_leaves_no_upload_behind() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s = rt.block_on(setup(20));
    let config = WorkerConfig {
        delete_uploads: true,
        ..s.config()
    };
    let dies = Arc::new(DiesOnAck {
        inner: s.req.clone(),
        acked: tokio::sync::Notify::new(),
    });
    let rt_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let a = Worker::new(
        Compute::new(engine(), 2),
        s.gallery.clone(),
        Seams {
            requests: dies.clone(),
            ..s.seams()
        },
        config.clone(),
        Metrics::default(),
    );
    rt_a.spawn(a.run(CancellationToken::new()));
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), dies.acked.notified())
            .await
            .expect("worker A acknowledges a batch")
    });
    rt_a.shutdown_background();

    let b = Worker::new(
        Compute::new(engine(), 2),
        s.gallery.clone(),
        s.seams(),
        config,
        Metrics::default(),
    );
    let stop = CancellationToken::new();
    let run_b = rt.spawn(b.run(stop.clone()));
    let got = rt.block_on(collect(&s.resp, s.expected.len(), Duration::from_secs(240)));
    let drained = rt.block_on(async {
        let end = tokio::time::Instant::now() + Duration::from_secs(30);
        while s.req.depth().await.unwrap() != Depth::default() && tokio::time::Instant::now() < end
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        s.req.depth().await.unwrap()
    });
    stop.cancel();
    rt.block_on(run_b).unwrap().unwrap();

    for (id, name) in &s.expected {
        let r = got.get(id).unwrap_or_else(|| panic!("lost {id}"));
        assert_eq!(r.name.as_deref(), Some(name.as_str()));
    }
    assert_eq!(drained, Depth::default());
    let left = rt.block_on(s.store.list(Bucket::In, "uploads/")).unwrap();
    assert!(left.is_empty(), "uploads left behind: {left:?}");
    let results = rt.block_on(s.store.list(Bucket::Out, "results/")).unwrap();
    assert_eq!(results.len(), s.expected.len(), "one result per request");
}

/// Every recognised face is recorded once in the face store, even when the database goes
/// away while the worker runs: the requests whose faces could not be recorded wait and are
/// answered after it comes back; none is lost, none recorded twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seen_faces_are_recorded_once_across_a_database_outage() {
    let mut pg = facerec_testkit::Postgres::start();
    let url = pg.database();
    let s = setup_on(24, Some(url)).await;
    let faces = s.gallery.store().unwrap().clone();
    pg.halt();
    let worker = s.worker();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.clone().run(stop.clone()));
    // Nothing can finish while the database is away.
    let early = collect(&s.resp, 1, Duration::from_secs(4)).await;
    assert!(early.is_empty(), "answered without recording: {early:?}");
    pg.resume();
    let got = collect(&s.resp, s.expected.len(), Duration::from_secs(90)).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    assert_eq!(got.len(), s.expected.len());
    for (id, name) in &s.expected {
        assert_eq!(got[id].name.as_deref(), Some(name.as_str()), "{id}");
    }
    // Each person's appearances are exactly the requests expected to be them.
    let mut by_name: HashMap<&str, Vec<String>> = HashMap::new();
    for (id, name) in &s.expected {
        by_name.entry(name).or_default().push(id.clone());
    }
    for (name, mut want) in by_name {
        let mut listed: Vec<String> = faces
            .appearances(name, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.request_id)
            .collect();
        listed.sort();
        want.sort();
        assert_eq!(listed, want, "{name}");
    }
}
