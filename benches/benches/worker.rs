//! Worker throughput on the local seams (in-process queue, filesystem store) with the
//! real engine: images/s for several engine batch sizes and poller counts, against the
//! original design's one-image-at-a-time worker (batch 1, one poller) measured in the
//! same run.
//!
//! `cargo bench --profile dev --workspace --bench worker` (env `WORKER_BENCH_IMAGES`,
//! default 96: CSE546 workload images).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use facerec_contract::Request;
use facerec_contract::message::input_key;
use facerec_engine::{BackendChoice, Engine, EngineConfig};
use facerec_seams::{BlobStore, Bucket, FsStore, GalleryHandle, LocalQueue, Queue, Seams};
use facerec_worker::Metrics;
use facerec_worker::{Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;

fn main() {
    let n: usize = std::env::var("WORKER_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96);
    let cse546 = facerec_testkit::Cse546::unzip();
    let images: Vec<(String, Bytes)> = (0..n)
        .map(|i| {
            let stem = format!("test_{:03}", i % 1000);
            let p = cse546.image(&stem);
            (stem, Bytes::from(std::fs::read(p).expect("image")))
        })
        .collect();

    let mut config = EngineConfig::new(facerec_testkit::models_dir());
    config.backend = std::env::var("FACEREC_BACKEND")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(BackendChoice::Cpu);
    config.max_batch = 64;
    let engine = Arc::new(Engine::new(config).expect("engine"));
    let rt = tokio::runtime::Runtime::new().expect("runtime");

    println!(
        "worker throughput, {n} CSE546 images, local seams, backend {:?}",
        engine.models().backend().name
    );
    println!("| engine batch | pollers | images/s | vs batch 1, 1 poller |");
    println!("|---:|---:|---:|---:|");
    let mut peer = None;
    for (batch, pollers) in [(1, 1), (8, 1), (32, 1), (32, 4)] {
        let secs = rt.block_on(run(&engine, &images, batch, pollers));
        let rate = n as f64 / secs;
        let base = *peer.get_or_insert(rate);
        println!("| {batch} | {pollers} | {rate:.1} | {:.2}x |", rate / base);
    }
}

/// Seconds for one worker to answer every image, queue full from the start.
async fn run(
    engine: &Arc<Engine>,
    images: &[(String, Bytes)],
    batch: usize,
    pollers: usize,
) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FsStore::new(dir.path()).expect("store"));
    let req = Arc::new(LocalQueue::new("req", Duration::from_secs(300)));
    let resp = Arc::new(LocalQueue::new("resp", Duration::from_secs(300)));
    let mut bodies = Vec::new();
    for (i, (stem, bytes)) in images.iter().enumerate() {
        let id = format!("b{i}");
        store
            .put(Bucket::In, &input_key(&id), bytes.clone())
            .await
            .expect("put");
        bodies.push(Request::new(id, format!("{stem}.jpg")).to_json());
    }
    let gallery = Arc::new(GalleryHandle::new(engine.models().recognition_id()));
    let seams = Seams {
        requests: req.clone(),
        responses: resp.clone(),
        dead_letters: Arc::new(LocalQueue::new("dlq", Duration::from_secs(300))),
        store,
    };
    let config = WorkerConfig {
        pollers,
        max_batch: batch,
        max_in_hand: (batch * 3).max(10),
        wait: Duration::from_millis(100),
        gallery_refresh: None,
        ..WorkerConfig::default()
    };
    let compute =
        facerec_worker::Compute::new(engine.clone(), facerec_worker::compute::DEFAULT_THREADS);
    let worker = Worker::new(compute, gallery, seams, config, Metrics::default());
    let stop = CancellationToken::new();
    req.send(bodies).await.expect("send");
    let start = Instant::now();
    let running = tokio::spawn(worker.run(stop.clone()));
    let mut answered = 0;
    while answered < images.len() {
        let got = resp
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        answered += got.len();
        resp.ack(got.into_iter().map(|m| m.receipt).collect())
            .await
            .expect("ack");
    }
    let secs = start.elapsed().as_secs_f64();
    stop.cancel();
    running.await.expect("join").expect("worker");
    secs
}
