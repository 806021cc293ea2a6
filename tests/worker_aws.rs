//! `facerec worker` against a real AWS wire-protocol server: moto in server mode (PyPI
//! `moto[server]`, installed by `.ci/run`), S3 and SQS on a local port. The real binary,
//! real models, real faces. Checks that every request gets exactly one correct result,
//! poison messages reach the DLQ with reasons, a worker SIGKILLed mid-batch loses
//! nothing, and an outage between the worker and AWS (a fault-injecting TCP proxy)
//! opens the circuit, recovers and loses nothing.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use facerec_contract::message::input_key;
use facerec_contract::{DeadLetter, Request, ResultMessage};
use facerec_seams::aws::Aws;
use facerec_seams::gallery::GALLERY_KEY;
use facerec_seams::{BlobStore, Bucket, Queue};

use facerec_testkit as kit;

use facerec_testkit::{Moto, free_port};

const REGION: &str = "us-east-1";

/// A TCP proxy that can be switched off: while down, connections are refused (closed at
/// once) and open ones are cut.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let d = down.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if d.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let d = d.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = async {
                            while !d.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        } => {}
                    }
                });
            }
        });
        Self { addr, down }
    }
}

fn env_for(cmd: &mut Command, id: &str, endpoint: &str) {
    cmd.env("ID", id)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("FACEREC_BACKEND", "cpu")
        .env("FACEREC_MODELS", facerec_testkit::models_dir())
        .env("FACEREC_LOG", "info")
        .env_remove("AWS_PROFILE");
}

fn facerec(id: &str, endpoint: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facerec"));
    cmd.args(args);
    env_for(&mut cmd, id, endpoint);
    cmd.output().expect("facerec runs")
}

fn spawn_worker(id: &str, endpoint: &str, extra: &[&str], log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facerec"));
    cmd.args(["--log-json", "worker", "--poll-wait", "1", "--batch", "16"])
        .args(extra)
        .env("VISIBILITY_TIMEOUT", "6")
        .env("RETRY_DELAY", "0.2")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    env_for(&mut cmd, id, endpoint);
    cmd.spawn().expect("worker starts")
}

async fn client(endpoint: &str, id: &str) -> Aws {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(facerec_seams::aws::https_client())
        .load()
        .await;
    Aws::from_config(id, &config)
}

/// The CSE546 workload unzipped, a gallery of its ten people built with the CLI.
struct Workload {
    dir: tempfile::TempDir,
    expected: Vec<(String, String)>,
}

impl Workload {
    fn new() -> Self {
        let (dir, expected) = kit::Cse546::unzip().into_parts();
        let mut first: HashMap<&str, &str> = HashMap::new();
        for (stem, name) in &expected {
            first.entry(name).or_insert(stem);
        }
        for (name, stem) in first {
            let d = dir.path().join("people").join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(self_image(dir.path(), stem), d.join(format!("{stem}.jpg"))).unwrap();
        }
        kit::enroll_gallery_file(&dir.path().join("gallery.frg"), &dir.path().join("people"));
        Self { dir, expected }
    }

    fn image(&self, stem: &str) -> PathBuf {
        self_image(self.dir.path(), stem)
    }
}

fn self_image(dir: &Path, stem: &str) -> PathBuf {
    dir.join("face_images_1000").join(format!("{stem}.jpg"))
}

/// Creates the resources, uploads the gallery and `n` requests; returns id → expected.
async fn prepare(
    aws: &Aws,
    id: &str,
    endpoint: &str,
    w: &Workload,
    n: usize,
    tag: &str,
) -> HashMap<String, String> {
    let out = facerec(id, endpoint, &["infra", "up", "--visibility-timeout", "6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = aws.store();
    let gallery = std::fs::read(w.dir.path().join("gallery.frg")).unwrap();
    store
        .put(Bucket::Out, GALLERY_KEY, Bytes::from(gallery))
        .await
        .unwrap();
    let req = aws.queue(&aws.names.req_queue).await.unwrap();
    let mut want = HashMap::new();
    let mut bodies = Vec::new();
    for (i, (stem, name)) in w.expected.iter().step_by(1000 / n).take(n).enumerate() {
        let rid = format!("{tag}-{i:04}");
        let bytes = std::fs::read(w.image(stem)).unwrap();
        store
            .put(Bucket::In, &input_key(&rid), Bytes::from(bytes))
            .await
            .unwrap();
        bodies.push(Request::new(rid.clone(), format!("{stem}.jpg")).to_json());
        want.insert(rid, name.clone());
    }
    req.send(bodies).await.unwrap();
    want
}

/// Reads the response queue until `want` distinct request ids are answered; checks
/// duplicates are identical.
async fn collect(aws: &Aws, want: usize, limit: Duration) -> HashMap<String, ResultMessage> {
    let resp = aws.queue(&aws.names.resp_queue).await.unwrap();
    let mut got: HashMap<String, ResultMessage> = HashMap::new();
    let end = Instant::now() + limit;
    while got.len() < want && Instant::now() < end {
        let msgs = resp.receive(10, Duration::from_secs(1)).await.unwrap();
        let receipts = msgs.iter().map(|m| m.receipt.clone()).collect();
        for m in msgs {
            let r = ResultMessage::parse(m.body.as_bytes()).unwrap();
            if let Some(prev) = got.get(&r.request_id) {
                assert_eq!(prev, &r, "two different results for {}", r.request_id);
            }
            got.insert(r.request_id.clone(), r);
        }
        resp.ack(receipts).await.unwrap();
    }
    got
}

async fn assert_results(
    aws: &Aws,
    want: &HashMap<String, String>,
    got: &HashMap<String, ResultMessage>,
) {
    let store = aws.store();
    for (rid, name) in want {
        let r = got
            .get(rid)
            .unwrap_or_else(|| panic!("no result for {rid}"));
        assert_eq!(r.name.as_deref(), Some(name.as_str()), "{rid}: {r:?}");
        let stored = store
            .get(Bucket::Out, &facerec_contract::message::result_key(rid))
            .await
            .unwrap();
        assert_eq!(&ResultMessage::parse(&stored).unwrap(), r);
    }
}

async fn assert_drained(aws: &Aws) {
    for q in [&aws.names.req_queue, &aws.names.resp_queue] {
        let depth = aws.queue(q).await.unwrap().depth().await.unwrap();
        assert_eq!(depth, Default::default(), "{q} not empty");
    }
}

fn stop(mut child: Child) {
    // SIGTERM: finish or release, then exit 0.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "worker exited with {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_on_moto_answers_everything_once_and_dead_letters_poison() {
    let moto = Moto::start();
    let w = Workload::new();
    let id = "facerec-t1";
    let aws = client(&moto.url, id).await;
    let mut want = prepare(&aws, id, &moto.url, &w, 100, "ok").await;

    // Poison: malformed JSON, a missing upload, a text file; and a duplicate send.
    let store = aws.store();
    let req = aws.queue(&aws.names.req_queue).await.unwrap();
    store
        .put(
            Bucket::In,
            &input_key("text-file"),
            Bytes::from_static(b"just text"),
        )
        .await
        .unwrap();
    let dup = Request::new("ok-0000", "test_000.jpg").to_json();
    req.send(vec![
        "{not json".into(),
        Request::new("gone", "gone.jpg").to_json(),
        Request::new("text-file", "notes.jpg").to_json(),
        dup,
    ])
    .await
    .unwrap();

    let log = w.dir.path().join("worker.log");
    let worker = spawn_worker(id, &moto.url, &[], &log);
    let got = collect(&aws, want.len() + 2, Duration::from_secs(420)).await;
    // Let the duplicate's second answer and the dead letters land, then stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop(worker);

    assert_eq!(got["text-file"].plain(), "notes:not_an_image");
    assert_eq!(got["gone"].error.as_ref().unwrap().kind.as_str(), "io");
    want.retain(|k, _| k.starts_with("ok-"));
    assert_results(&aws, &want, &got).await;

    let dlq = aws.queue(&aws.names.dlq_queue).await.unwrap();
    let mut reasons = Vec::new();
    for _ in 0..5 {
        for m in dlq.receive(10, Duration::from_secs(1)).await.unwrap() {
            reasons.push(serde_json::from_str::<DeadLetter>(&m.body).unwrap().reason);
        }
    }
    reasons.sort();
    assert_eq!(reasons, ["malformed", "missing_object", "not_an_image"]);
    let _ = collect(&aws, usize::MAX, Duration::from_secs(2)).await;
    assert_drained(&aws).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("\"request_id\":\"ok-0001\""),
        "structured logs carry request ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sigkilled_mid_batch_then_outage_loses_nothing() {
    let moto = Moto::start();
    let w = Workload::new();
    let id = "facerec-t2";
    let aws = client(&moto.url, id).await;
    let want = prepare(&aws, id, &moto.url, &w, 100, "k").await;

    // 1. SIGKILL while it holds messages.
    let log = w.dir.path().join("worker-a.log");
    let mut a = spawn_worker(id, &moto.url, &[], &log);
    let mut got = collect(&aws, 10, Duration::from_secs(300)).await;
    a.kill().unwrap();
    a.wait().unwrap();
    let held = aws
        .queue(&aws.names.req_queue)
        .await
        .unwrap()
        .depth()
        .await
        .unwrap();
    assert!(
        held.in_flight > 0,
        "killed while holding messages: {held:?}"
    );

    // 2. A new worker behind a proxy; AWS becomes unreachable for a while.
    let upstream: SocketAddr = moto.url.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let via = format!("http://{}", proxy.addr);
    let metrics_port = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let log_b = w.dir.path().join("worker-b.log");
    let b = spawn_worker(id, &via, &["--metrics-listen", &metrics_addr], &log_b);
    let more = collect(&aws, 10, Duration::from_secs(300)).await;
    got.extend(more);
    proxy.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let during = metrics(&metrics_addr).await;
    proxy.down.store(false, Ordering::SeqCst);
    assert!(
        during.contains("facerec_engine_circuit_open 1"),
        "circuit open during the outage:\n{during}"
    );

    // Responses to redelivered messages may repeat ids already answered (identical, as
    // checked), so collect until the union is complete.
    let deadline = Instant::now() + Duration::from_secs(420);
    while got.len() < want.len() && Instant::now() < deadline {
        for (k, v) in collect(&aws, 1, Duration::from_secs(5)).await {
            if let Some(prev) = got.get(&k) {
                assert_eq!(prev, &v, "two different results for {k}");
            }
            got.insert(k, v);
        }
    }
    let after = metrics(&metrics_addr).await;
    stop(b);
    assert!(after.contains("facerec_engine_circuit_open 0"), "{after}");
    assert_results(&aws, &want, &got).await;
    assert_drained(&aws).await;
}

async fn metrics(addr: &str) -> String {
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            "import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1]).read().decode())",
        ])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_gives_up_with_nonzero_exit_after_too_many_failed_polls() {
    let moto = Moto::start();
    let w = Workload::new();
    let id = "facerec-t3";
    let aws = client(&moto.url, id).await;
    let _ = prepare(&aws, id, &moto.url, &w, 1, "z").await;
    let upstream: SocketAddr = moto.url.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let log = w.dir.path().join("worker-c.log");
    let mut c = spawn_worker(
        id,
        &format!("http://{}", proxy.addr),
        &["--max-failures", "3"],
        &log,
    );
    // Let it start (it resolves the queues through the proxy), then cut AWS off for good.
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("worker started")
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "worker did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    proxy.down.store(true, Ordering::SeqCst);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "worker kept running through the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!status.success(), "exit status {status}");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("giving up after 3 consecutive failed polls"),
        "{log}"
    );
}

/// `facerec scaler` with the local-processes fleet on moto's SQS: from zero workers it
/// starts `facerec worker` processes when requests wait, every request is answered, and
/// once the queue is empty it stops them again (SIGTERM), back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaler_starts_worker_processes_from_zero_and_stops_them_after() {
    let moto = Moto::start();
    let w = Workload::new();
    let id = "facerec-t4";
    let aws = client(&moto.url, id).await;
    let want = prepare(&aws, id, &moto.url, &w, 20, "s").await;
    let log = w.dir.path().join("scaler.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facerec"));
    cmd.args([
        "--log-json",
        "scaler",
        "--fleet",
        "processes",
        "--source",
        "queue",
    ])
    .args([
        "--check-interval",
        "1",
        "--worker-rate",
        "1",
        "--target-latency",
        "5",
    ])
    .args(["--scale-in-window", "3", "--max-instances", "3"])
    .env("FACEREC_WORKER_ARGS", "--poll-wait 1 --batch 4")
    .env("VISIBILITY_TIMEOUT", "6")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    env_for(&mut cmd, id, &moto.url);
    let mut scaler = cmd.spawn().expect("scaler starts");
    let pid = scaler.id().to_string();
    let children = || {
        let out = Command::new("pgrep").args(["-P", &pid]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().count()
    };

    let got = collect(&aws, want.len(), Duration::from_secs(300)).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("launched"),
        "the scaler launched workers:\n{text}"
    );
    assert_results(&aws, &want, &got).await;

    let start = Instant::now();
    while children() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "workers still running after the drain:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("terminating worker-"), "{text}");
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    assert!(
        scaler.wait().unwrap().success(),
        "the scaler exits cleanly on SIGTERM"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("the fleet is left as it is")
    );
    assert_drained(&aws).await;
}

/// `facerec edge` on a free port against moto, its log in `log`.
fn spawn_edge(id: &str, endpoint: &str, port: u16, log: &Path) -> Child {
    spawn_edge_with(id, endpoint, port, log, &[])
}

/// `facerec edge` with extra flags.
fn spawn_edge_with(id: &str, endpoint: &str, port: u16, log: &Path, extra: &[&str]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facerec"));
    cmd.args(["--log-json", "edge"])
        .args(extra)
        .env("FACEREC_LISTEN", format!("127.0.0.1:{port}"))
        .env("REQUEST_TIMEOUT", "120")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    env_for(&mut cmd, id, endpoint);
    let child = cmd.spawn().expect("edge starts");
    let addr = format!("127.0.0.1:{port}");
    let t = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "edge on {addr} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}

/// Two edges behind one deployment, one worker: a bulk job posted to edge A is read
/// (progress and every result) from edge B, which never saw the upload; edge A, killed
/// and restarted, still serves it; each image has exactly one result line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_posted_to_one_edge_is_served_by_another_and_after_a_restart() {
    let moto = Moto::start();
    let w = Workload::new();
    let id = "facerec-t5";
    let aws = client(&moto.url, id).await;
    let out = facerec(id, &moto.url, &["infra", "up", "--visibility-timeout", "6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gallery = std::fs::read(w.dir.path().join("gallery.frg")).unwrap();
    aws.store()
        .put(Bucket::Out, GALLERY_KEY, Bytes::from(gallery))
        .await
        .unwrap();
    let worker = spawn_worker(id, &moto.url, &[], &w.dir.path().join("worker.log"));
    let (port_a, port_b) = (free_port(), free_port());
    let log_a = w.dir.path().join("edge-a.log");
    let mut edge_a = spawn_edge(id, &moto.url, port_a, &log_a);
    let edge_b = spawn_edge(id, &moto.url, port_b, &w.dir.path().join("edge-b.log"));
    let (a, b) = (format!("127.0.0.1:{port_a}"), format!("127.0.0.1:{port_b}"));

    let picks: Vec<(String, String)> = w.expected.iter().step_by(25).take(40).cloned().collect();
    let bytes: Vec<Vec<u8>> = picks
        .iter()
        .map(|(s, _)| std::fs::read(w.image(s)).unwrap())
        .collect();
    let names: Vec<String> = (0..picks.len())
        .map(|i| format!("{i:02}_{}.jpg", picks[i].0))
        .collect();
    let files: Vec<(&str, &str, &[u8])> = names
        .iter()
        .zip(&bytes)
        .map(|(n, b)| ("image", n.as_str(), b.as_slice()))
        .collect();
    // The HTTP calls block: off the runtime's async threads.
    use tokio::task::block_in_place as blocking;
    let job = blocking(|| {
        let r = kit::post_files(&a, "/v1/batches", &files, &[]);
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    });
    let want = files.len();
    let check = |addr: &str| {
        let p = kit::wait_finished(addr, &job, Duration::from_secs(420));
        assert_eq!(
            (p["total"].as_u64(), p["done"].as_u64()),
            (Some(want as u64), Some(want as u64)),
            "{addr}: {p}"
        );
        let r = kit::http(addr, "GET", &format!("/v1/batches/{job}/results"), &[], b"");
        let body = String::from_utf8(kit::dechunk(&r)).unwrap();
        assert_eq!(body.lines().count(), want, "{addr}: one line per image");
        let got = kit::batch_results(addr, &job, &[]);
        for (i, (_, name)) in picks.iter().enumerate() {
            assert_eq!(got.get(&names[i]), Some(name), "{addr}: {}", names[i]);
        }
    };
    // Edge B never saw the upload: it reads the job from the output bucket, and lists it.
    blocking(|| check(&b));
    let list = blocking(|| kit::http(&b, "GET", "/v1/batches", &[], b"").json());
    let ids: Vec<&str> = list["batches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids, [job.as_str()], "{list}");
    // Edge A, killed and restarted, serves it from the bucket too.
    let _ = edge_a.kill();
    let _ = edge_a.wait();
    let edge_a = spawn_edge(id, &moto.url, port_a, &log_a);
    blocking(|| check(&a));

    for mut e in [edge_a, edge_b] {
        let _ = e.kill();
        let _ = e.wait();
    }
    stop(worker);
}

/// A fleet keeps every enrolment: four `facerec edge` processes and a worker on one
/// deployment (moto) and one PostgreSQL face store; 200 enrolments (a different real face
/// each) sent through the four edges at once all answer 200, every edge lists all 200
/// within 2 s of the last answer, and so does an edge started afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolments_through_four_edges_at_once_are_all_kept_and_listed_everywhere() {
    const N: usize = 200;
    let moto = Moto::start();
    let pg = kit::Postgres::start();
    let database = pg.database();
    let w = Workload::new();
    let id = "facerec-t6";
    let out = facerec(id, &moto.url, &["infra", "up", "--visibility-timeout", "6"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = ["--database-url", database.as_str()];
    let worker = spawn_worker(id, &moto.url, &db, &w.dir.path().join("worker.log"));
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut edges: Vec<Child> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let log = w.dir.path().join(format!("edge-{i}.log"));
            spawn_edge_with(id, &moto.url, port, &log, &db)
        })
        .collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let picks: Vec<Vec<u8>> = w
        .expected
        .iter()
        .take(N)
        .map(|(s, _)| std::fs::read(w.image(s)).unwrap())
        .collect();
    let clients: Vec<_> = picks
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let addr = addrs[i % addrs.len()].clone();
            std::thread::spawn(move || {
                let r = kit::post_files(
                    &addr,
                    &format!("/v1/identities/person{i}/faces"),
                    &[("image", "face.jpg", &bytes)],
                    &[],
                );
                (r.status, r.text())
            })
        })
        .collect();
    for c in clients {
        let (status, text) = tokio::task::block_in_place(|| c.join().unwrap());
        assert_eq!(status, 200, "{text}");
    }
    let listed = |addr: &str| -> usize {
        let r = kit::http(addr, "GET", "/v1/identities", &[], b"").json();
        r["identities"].as_array().map_or(0, Vec::len)
    };
    let start = Instant::now();
    for addr in &addrs {
        tokio::task::block_in_place(|| {
            while listed(addr) < N {
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "{addr} lists {} of {N} identities 2 s after the last answer",
                    listed(addr)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        assert_eq!(tokio::task::block_in_place(|| listed(addr)), N);
    }
    // An edge (re)started afterwards loads them all.
    let _ = edges[0].kill();
    let _ = edges[0].wait();
    edges[0] = spawn_edge_with(
        id,
        &moto.url,
        ports[0],
        &w.dir.path().join("edge-0b.log"),
        &db,
    );
    assert_eq!(tokio::task::block_in_place(|| listed(&addrs[0])), N);
    // Collections across the fleet: created through one edge, enrolled through others,
    // followed by a third, matched by the worker (its own process) against their gallery.
    let photo = |i: usize| std::fs::read(w.image(&w.expected[i].0)).unwrap();
    let (a, b) = (photo(0), photo(1));
    tokio::task::block_in_place(|| {
        let r = kit::http(&addrs[1], "PUT", "/v1/collections/events", &[], b"");
        assert_eq!(r.status, 201, "{}", r.text());
        let enrol = |addr: &str, name: &str, bytes: &[u8]| {
            let path = format!("/v1/collections/events/identities/{name}/faces");
            let r = kit::post_files(addr, &path, &[("image", "face.jpg", bytes)], &[]);
            assert_eq!(r.status, 200, "{}", r.text());
        };
        let in_events = |addr: &str| -> usize {
            let r = kit::http(addr, "GET", "/v1/collections/events/identities", &[], b"");
            r.json()["identities"].as_array().map_or(0, Vec::len)
        };
        // Every edge lists a collection's enrolments through the others within 2 s.
        let listed_within_2s = |want: usize| {
            let start = Instant::now();
            while in_events(&addrs[3]) < want {
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "edge 3 lists {} of {want} identities of events",
                    in_events(&addrs[3])
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(in_events(&addrs[3]), want);
        };
        enrol(&addrs[2], "ev-a", &a);
        listed_within_2s(1);
        enrol(&addrs[1], "ev-b", &b);
        listed_within_2s(2);
        let name = |path: &str| -> (u16, String) {
            let r = kit::post_files(&addrs[0], path, &[("image", "q.jpg", &a)], &[]);
            let name = r.json()["results"][0]["name"].as_str().map(str::to_string);
            (r.status, name.unwrap_or_else(|| r.text()))
        };
        assert_eq!(
            name("/v1/collections/events/recognize"),
            (200, "ev-a".into())
        );
        // The default collection holds the same photo under its own names.
        let (status, default) = name("/v1/recognize");
        assert_eq!(status, 200);
        assert!(default.starts_with("person"), "{default}");
        assert_eq!(name("/v1/collections/nope/recognize").0, 404);
    });
    assert_eq!(
        pg.psql_in(
            database.rsplit('/').next().unwrap(),
            "SELECT COUNT(*) FROM facerec_faces"
        ),
        (N + 2).to_string()
    );
    for mut e in edges {
        let _ = e.kill();
        let _ = e.wait();
    }
    stop(worker);
}
