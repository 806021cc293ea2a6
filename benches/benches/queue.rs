//! The durable queue of `facerec up` (SQLite, WAL) against the in-memory one it replaced,
//! same run: one round of the worker's traffic per iteration — 100 request messages sent
//! in batches of 10 (the edge), received 10 at a time and acknowledged (the worker).
//! Throughput is messages through the whole round per second.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use facerec_seams::sqlite_queue::SqliteQueues;
use facerec_seams::{LocalQueue, Queue};

const MESSAGES: usize = 100;

async fn round(q: &dyn Queue, body: &str) {
    for _ in 0..MESSAGES / 10 {
        q.send(vec![body.to_string(); 10]).await.expect("send");
    }
    let mut got = 0;
    while got < MESSAGES {
        let batch = q.receive(10, Duration::ZERO).await.expect("receive");
        got += batch.len();
        q.ack(batch.into_iter().map(|m| m.receipt).collect())
            .await
            .expect("ack");
    }
}

fn queues(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // A request message as the edge sends it.
    let body = r#"{"v":1,"request_id":"0b6c2a7e-5d1f-4d7e-9b0e-3c4f5a6b7c8d","filename":"test_000.jpg","key":"uploads/0b6c2a7e-5d1f-4d7e-9b0e-3c4f5a6b7c8d","embeddings":false}"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = SqliteQueues::open(&dir.path().join("queue.db")).expect("queue db");
    let durable = db.queue("requests", Duration::from_secs(300));
    let memory = LocalQueue::new("requests", Duration::from_secs(300));
    let mut group = c.benchmark_group("queue_round_100");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.bench_function("sqlite_wal", |b| {
        b.iter(|| rt.block_on(round(&durable, body)))
    });
    group.bench_function("in_memory", |b| {
        b.iter(|| rt.block_on(round(&memory, body)))
    });
    group.finish();
}

criterion_group!(benches, queues);
criterion_main!(benches);
