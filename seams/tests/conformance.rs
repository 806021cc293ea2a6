//! One conformance suite for every `Queue` and every `BlobStore`: the semantics the tiers
//! rely on (SQS's and S3's, as the design has them), run against the in-process
//! `LocalQueue`, `facerec up`'s `SqliteQueue` and `FsStore`, and SQS and S3 themselves
//! through moto's server. What one implementation does beyond them (a paused clock, a
//! reopened database) is tested beside it.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use facerec_seams::aws::{Aws, SqsQueue};
use facerec_seams::sqlite_queue::SqliteQueues;
use facerec_seams::{BlobStore, Bucket, Depth, FsStore, LocalQueue, Queue, Received};
use facerec_testkit::Moto;

/// How long a delivered message stays hidden in every queue under test.
const VISIBILITY: Duration = Duration::from_secs(3);

/// Receives until `n` messages came (or `patience` passed): SQS may answer with fewer
/// than are there.
async fn receive_n(q: &dyn Queue, n: usize, patience: Duration) -> Vec<Received> {
    let deadline = std::time::Instant::now() + patience;
    let mut got = Vec::new();
    while got.len() < n && std::time::Instant::now() < deadline {
        got.extend(
            q.receive(n - got.len(), Duration::from_millis(500))
                .await
                .unwrap(),
        );
    }
    got
}

fn bodies(msgs: &[Received]) -> BTreeSet<String> {
    msgs.iter().map(|m| m.body.clone()).collect()
}

/// At-least-once delivery with a visibility timeout, acknowledgement, handing back,
/// receive counts, a dead-letter queue after two receives, long polling, depth.
async fn queue_semantics(q: Arc<dyn Queue>, dlq: Arc<dyn Queue>) {
    assert_eq!(q.depth().await.unwrap(), Depth::default());
    let sent: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    q.send(sent.clone()).await.unwrap();
    let got = receive_n(q.as_ref(), 3, Duration::from_secs(10)).await;
    assert_eq!(bodies(&got), sent.iter().cloned().collect());
    assert!(got.iter().all(|m| m.receive_count == 1), "{got:?}");
    assert_eq!(
        q.depth().await.unwrap(),
        Depth {
            visible: 0,
            in_flight: 3
        }
    );
    let by_body = |b: &str| got.iter().find(|m| m.body == b).unwrap().receipt.clone();

    // Acknowledged: gone. Handed back (visibility 0): delivered again at once, counted.
    q.ack(vec![by_body("a")]).await.unwrap();
    q.set_visibility(vec![by_body("b")], Duration::ZERO)
        .await
        .unwrap();
    let again = receive_n(q.as_ref(), 1, Duration::from_secs(5)).await;
    assert_eq!(bodies(&again), BTreeSet::from(["b".to_string()]));
    assert_eq!(again[0].receive_count, 2);
    // Neither held one comes back before its timeout.
    assert!(q.receive(10, Duration::ZERO).await.unwrap().is_empty());

    // Not acknowledged in time: delivered again (c, a second time); a message past two
    // receives goes to the dead-letter queue instead of a third delivery (b).
    tokio::time::sleep(VISIBILITY + Duration::from_millis(500)).await;
    let late = receive_n(q.as_ref(), 2, Duration::from_secs(3)).await;
    assert_eq!(bodies(&late), BTreeSet::from(["c".to_string()]));
    assert_eq!(late[0].receive_count, 2);
    q.set_visibility(vec![late[0].receipt.clone()], Duration::ZERO)
        .await
        .unwrap();
    let redriven = receive_n(q.as_ref(), 1, Duration::from_secs(2)).await;
    assert!(redriven.is_empty(), "{redriven:?}");
    let dead = receive_n(dlq.as_ref(), 2, Duration::from_secs(10)).await;
    assert_eq!(
        bodies(&dead),
        BTreeSet::from(["b".to_string(), "c".to_string()])
    );
    dlq.ack(dead.iter().map(|m| m.receipt.clone()).collect())
        .await
        .unwrap();

    // A long poll wakes when a message is sent.
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move { q.receive(1, Duration::from_secs(15)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    q.send(vec!["d".into()]).await.unwrap();
    let woke = waiter.await.unwrap().unwrap();
    assert_eq!(bodies(&woke), BTreeSet::from(["d".to_string()]));
    assert!(t.elapsed() < Duration::from_secs(10));
    q.ack(vec![woke[0].receipt.clone()]).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), Depth::default());
}

/// Objects: missing ones, replacement, write-once, versions, listing by prefix, the two
/// buckets apart, deletion.
async fn blob_semantics(s: &dyn BlobStore) {
    s.ping().await.unwrap();
    let missing = s.get(Bucket::Out, "results/none.json").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert_eq!(
        s.version(Bucket::Out, "results/none.json").await.unwrap(),
        None
    );
    s.delete(Bucket::Out, "results/none.json").await.unwrap();

    let key = "results/r1.json";
    s.put(Bucket::Out, key, Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(&s.get(Bucket::Out, key).await.unwrap()[..], b"one");
    let v1 = s.version(Bucket::Out, key).await.unwrap().unwrap();
    s.put(Bucket::Out, key, Bytes::from_static(b"two, longer"))
        .await
        .unwrap();
    assert_eq!(&s.get(Bucket::Out, key).await.unwrap()[..], b"two, longer");
    let v2 = s.version(Bucket::Out, key).await.unwrap().unwrap();
    assert_ne!(v1, v2, "a version changes with the object");
    // Write-once: a second writer changes nothing.
    assert!(
        !s.put_if_absent(Bucket::Out, key, Bytes::from_static(b"three"))
            .await
            .unwrap()
    );
    assert_eq!(&s.get(Bucket::Out, key).await.unwrap()[..], b"two, longer");
    assert!(
        s.put_if_absent(Bucket::Out, "results/r2.json", Bytes::from_static(b"r2"))
            .await
            .unwrap()
    );
    // The buckets are apart; a listing gives the prefix's keys only.
    s.put(Bucket::In, "uploads/r1", Bytes::from_static(b"jpeg"))
        .await
        .unwrap();
    assert!(s.get(Bucket::In, key).await.unwrap_err().is_not_found());
    s.put(Bucket::Out, "batches/j1.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let listed: BTreeSet<String> = s
        .list(Bucket::Out, "results/")
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["results/r1.json".to_string(), "results/r2.json".to_string()])
    );
    s.delete(Bucket::Out, key).await.unwrap();
    assert!(s.get(Bucket::Out, key).await.unwrap_err().is_not_found());
    assert_eq!(s.version(Bucket::Out, key).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_queue() {
    let dlq = Arc::new(LocalQueue::new("dlq", VISIBILITY));
    let q = LocalQueue::new("req", VISIBILITY).with_redrive(dlq.clone(), 2);
    queue_semantics(Arc::new(q), dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_queue() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteQueues::open(&dir.path().join("queue.db")).unwrap();
    let dlq = Arc::new(db.queue("dlq", VISIBILITY));
    let q = db.queue("req", VISIBILITY).with_redrive("dlq", 2);
    queue_semantics(Arc::new(q), dlq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_store() {
    let dir = tempfile::tempdir().unwrap();
    blob_semantics(&FsStore::new(dir.path()).unwrap()).await;
}

/// Clients of moto's server for deployment `id`.
async fn moto_client(moto: &Moto, id: &str) -> Aws {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(facerec_seams::aws::https_client())
        .load()
        .await;
    Aws::from_config(id, &config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_on_moto() {
    let moto = Moto::start();
    let aws = moto_client(&moto, "conformance").await;
    let dlq_url = aws
        .sqs
        .create_queue()
        .queue_name(&aws.names.dlq_queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let arn = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let redrive = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"2"}}"#);
    aws.sqs
        .create_queue()
        .queue_name(&aws.names.req_queue)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            VISIBILITY.as_secs().to_string(),
        )
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            redrive,
        )
        .send()
        .await
        .unwrap();
    let q: SqsQueue = aws.queue(&aws.names.req_queue).await.unwrap();
    let dlq: SqsQueue = aws.queue(&aws.names.dlq_queue).await.unwrap();
    queue_semantics(Arc::new(q), Arc::new(dlq)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_on_moto() {
    let moto = Moto::start();
    let aws = moto_client(&moto, "conformance").await;
    for bucket in [&aws.names.in_bucket, &aws.names.out_bucket] {
        aws.s3.create_bucket().bucket(bucket).send().await.unwrap();
    }
    blob_semantics(&aws.store()).await;
}
