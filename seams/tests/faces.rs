//! The face store's conformance suite: every case runs against SQLite (a file in a
//! temporary directory) and against a real PostgreSQL server (a private cluster the test
//! kit starts), through the `FaceStore` seam and the `GalleryHandle` that processes keep.
//!
//! Expected values come from plain arithmetic on the inputs (which identity holds which
//! vectors), never from the store under test.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use facerec_contract::Gallery;
use facerec_contract::gallery::DIM;
use facerec_seams::faces::{self, FaceStore, FaceStoreError, NewFace, SeenFace};
use facerec_seams::gallery::{GALLERY_KEY, GalleryChangeError};
use facerec_seams::{BlobStore, Bucket, FsStore, GalleryHandle};
use facerec_testkit::Postgres;

const MODEL: &str = "model-a";

/// A deterministic vector: seed `s` (stands in for a face's embedding).
fn vector(s: u64) -> Vec<f32> {
    let mut x = s
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..DIM)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

fn face(s: u64) -> NewFace {
    NewFace {
        embedding: vector(s),
        side: 100.0 + s as f32,
        source: Some(format!("img{s}.jpg")),
    }
}

/// A database to run a case on, and what keeps it alive.
struct Db {
    url: String,
    _pg: Option<Postgres>,
    _dir: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Sqlite,
    Postgres,
}

impl Db {
    fn new(kind: Kind) -> Self {
        let dir = tempfile::tempdir().unwrap();
        match kind {
            Kind::Sqlite => Self {
                url: format!("sqlite:{}", dir.path().join("faces.db").display()),
                _pg: None,
                _dir: dir,
            },
            Kind::Postgres => {
                let pg = Postgres::start();
                Self {
                    url: pg.database(),
                    _pg: Some(pg),
                    _dir: dir,
                }
            }
        }
    }

    async fn open(&self) -> Arc<dyn FaceStore> {
        faces::open(&self.url, MODEL)
            .await
            .expect("the store opens")
    }

    fn blobs(&self) -> FsStore {
        FsStore::new(self._dir.path().join("blobs")).unwrap()
    }
}

/// The gallery's faces as (name, embedding) in row order.
fn rows(g: &Gallery) -> Vec<(String, Vec<f32>)> {
    g.faces()
        .map(|(n, e, _)| (n.to_string(), e.to_vec()))
        .collect()
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Kind::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name(super::Kind::Postgres).await })*
        }
    };
}

both!(
    enrol_rename_and_remove_answer_as_documented,
    concurrent_enrolments_through_many_processes_are_all_kept_and_seen_everywhere,
    the_change_feed_gives_what_a_fresh_load_gives,
    a_schema_newer_than_the_binary_is_refused,
    a_store_of_another_model_is_refused_while_it_holds_faces,
    a_gallery_of_an_earlier_version_is_imported_once,
    a_large_earlier_gallery_is_imported_whole_and_in_order,
    seen_faces_are_kept_once_and_listed_per_identity,
);

async fn enrol_rename_and_remove_answer_as_documented(kind: Kind) {
    let db = Db::new(kind);
    let store = db.open().await;
    let first = store
        .enroll("ada", &[face(1), face(2)])
        .await
        .expect("enrol");
    assert_eq!(first.faces, 2);
    let second = store.enroll("ada", &[face(3)]).await.expect("enrol");
    assert_eq!(second.faces, 3);
    assert!(second.seq > first.seq);
    store.enroll("bob", &[face(4)]).await.expect("enrol");
    assert!(matches!(
        store.rename("ada", "bob").await,
        Err(FaceStoreError::Conflict(_))
    ));
    assert!(matches!(
        store.rename("nobody", "x").await,
        Err(FaceStoreError::NotFound(_))
    ));
    assert_eq!(
        store.rename("ada", "ada lovelace").await.expect("rename"),
        3
    );
    assert!(matches!(
        store.remove("ada").await,
        Err(FaceStoreError::NotFound(_))
    ));
    assert_eq!(store.remove("bob").await.expect("remove"), 1);
    // Refused before anything is written.
    let short = NewFace {
        embedding: vec![0.0; 3],
        side: 0.0,
        source: None,
    };
    assert!(matches!(
        store.enroll("x", &[short]).await,
        Err(FaceStoreError::Invalid(_))
    ));
    assert!(matches!(
        store.enroll("x", &[]).await,
        Err(FaceStoreError::Invalid(_))
    ));
    let status = store.status().await.expect("status");
    assert_eq!((status.identities, status.faces, status.schema), (1, 3, 2));
    let (g, seq) = store.load(MODEL).await.expect("load");
    assert_eq!(seq, status.seq);
    assert_eq!(
        rows(&g),
        [1, 2, 3].map(|s| ("ada lovelace".to_string(), vector(s)))
    );
    let sides: Vec<f32> = g.faces().map(|f| f.2).collect();
    assert_eq!(sides, [101.0, 102.0, 103.0]);
}

/// Four processes' worth of handles (each its own connection or pool) enrol 200
/// identities at once; every handle then lists all 200, within 2 s of the last answer.
async fn concurrent_enrolments_through_many_processes_are_all_kept_and_seen_everywhere(kind: Kind) {
    let db = Db::new(kind);
    let blobs: Arc<dyn BlobStore> = Arc::new(db.blobs());
    let mut handles = Vec::new();
    for _ in 0..4 {
        let h = Arc::new(GalleryHandle::with_store(MODEL, db.open().await));
        h.load(blobs.as_ref()).await.expect("load");
        handles.push(h);
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    for h in &handles {
        tokio::spawn(h.clone().follow(blobs.clone(), shutdown.clone(), |_| {}));
    }
    let tasks: Vec<_> = (0..200u64)
        .map(|i| {
            let (h, blobs) = (handles[i as usize % 4].clone(), blobs.clone());
            tokio::spawn(async move {
                h.enroll(blobs.as_ref(), &format!("person{i}"), &[face(i)])
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("enrolled"), 1);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    for h in &handles {
        while h.get().identities().len() < 200 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a process lists {} of 200 identities 2 s after the last enrolment",
                h.get().identities().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    shutdown.cancel();
    // Every process holds the same rows in the same order as a fresh load (a restart).
    let (fresh, _) = db.open().await.load(MODEL).await.expect("load");
    assert_eq!(fresh.len(), 200);
    for h in &handles {
        assert_eq!(rows(&h.get()), rows(&fresh));
    }
    // Each identity holds the vector it was enrolled with.
    for (name, e) in rows(&fresh) {
        let i: u64 = name.trim_start_matches("person").parse().expect("a number");
        assert_eq!(e, vector(i), "{name}");
    }
}

/// A follower that applies the feed ends with what a fresh load gives, through enrolments,
/// renames (onto new names), removals, and enrolments under a removed name again.
async fn the_change_feed_gives_what_a_fresh_load_gives(kind: Kind) {
    let db = Db::new(kind);
    let blobs = db.blobs();
    let writer = GalleryHandle::with_store(MODEL, db.open().await);
    writer.load(&blobs).await.expect("load");
    let follower = GalleryHandle::with_store(MODEL, db.open().await);
    follower.load(&blobs).await.expect("load");
    let mut seed = 0;
    for round in 0..6u64 {
        for who in ["a", "b", "c"] {
            seed += 1;
            writer
                .enroll(
                    &blobs,
                    &format!("{who}{round}"),
                    &[face(seed), face(seed + 100)],
                )
                .await
                .expect("enrol");
        }
        writer
            .rename(&blobs, &format!("a{round}"), &format!("renamed{round}"))
            .await
            .expect("rename");
        writer
            .remove(&blobs, &format!("b{round}"))
            .await
            .expect("remove");
        if round % 2 == 1 {
            // Synced in the middle of the run, and at the end.
            follower.sync(&blobs).await.expect("sync");
        }
        seed += 1;
        writer
            .enroll(&blobs, &format!("b{round}"), &[face(seed)])
            .await
            .expect("enrol again");
    }
    follower.sync(&blobs).await.expect("sync");
    let (fresh, _) = db.open().await.load(MODEL).await.expect("load");
    assert_eq!(rows(&follower.get()), rows(&fresh));
    assert_eq!(rows(&writer.get()), rows(&fresh));
    assert_eq!(fresh.identities().len(), 18);
    let q = vector(1);
    assert_eq!(
        follower.get().nearest(&[&q])[0]
            .as_ref()
            .expect("match")
            .name,
        "renamed0"
    );
}

async fn a_schema_newer_than_the_binary_is_refused(kind: Kind) {
    let db = Db::new(kind);
    drop(db.open().await);
    // What a newer binary leaves behind.
    match kind {
        Kind::Sqlite => {
            let path = db.url.trim_start_matches("sqlite:");
            let conn = rusqlite_open(path);
            conn.execute("INSERT INTO facerec_schema (version) VALUES (99)", [])
                .unwrap();
        }
        Kind::Postgres => {
            let pg = db._pg.as_ref().expect("a server");
            let name = db.url.rsplit('/').next().expect("a database name");
            pg.psql_in(name, "INSERT INTO facerec_schema (version) VALUES (99)");
        }
    }
    let err = faces::open(&db.url, MODEL).await.err().expect("refused");
    assert!(matches!(err, FaceStoreError::Schema(_)), "{err}");
    assert!(
        err.to_string()
            .contains("version 99, newer than this binary's 2"),
        "{err}"
    );
}

async fn a_store_of_another_model_is_refused_while_it_holds_faces(kind: Kind) {
    let db = Db::new(kind);
    // Empty: a store opened by another model first is taken over.
    drop(faces::open(&db.url, "model-b").await.expect("opens"));
    let store = db.open().await;
    store.enroll("ada", &[face(1)]).await.expect("enrol");
    let err = faces::open(&db.url, "model-b")
        .await
        .err()
        .expect("refused");
    assert!(matches!(err, FaceStoreError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("model-a"), "{err}");
}

/// The gallery object of an earlier version (here in a filesystem store's output bucket,
/// where `facerec up` kept it) is imported at the first start only, by one of the
/// processes starting at once, with its rows in their order.
async fn a_gallery_of_an_earlier_version_is_imported_once(kind: Kind) {
    let db = Db::new(kind);
    let blobs = db.blobs();
    let mut old = Gallery::new(MODEL);
    for (i, name) in ["x", "y", "x", "z", "z", "x"].iter().enumerate() {
        old.add_face(name, &vector(i as u64), 50.0 + i as f32);
    }
    blobs
        .put(Bucket::Out, GALLERY_KEY, old.to_bytes().into())
        .await
        .expect("put");
    let mut starts = Vec::new();
    for _ in 0..3 {
        let h = Arc::new(GalleryHandle::with_store(MODEL, db.open().await));
        let blobs = db.blobs();
        starts.push(tokio::spawn(async move {
            h.load(&blobs).await.expect("load");
            h
        }));
    }
    let mut handles = Vec::new();
    for s in starts {
        handles.push(s.await.expect("task"));
    }
    let want: Vec<(String, Vec<f32>)> = old
        .faces()
        .map(|(n, e, _)| (n.to_string(), e.to_vec()))
        .collect();
    for h in &handles {
        h.sync(&blobs).await.expect("sync");
        assert_eq!(rows(&h.get()), want);
    }
    // A change after the import; a restart does not import again.
    handles[0].remove(&blobs, "x").await.expect("remove");
    let again = GalleryHandle::with_store(MODEL, db.open().await);
    again.load(&blobs).await.expect("load");
    assert_eq!(again.get().len(), 3);
    assert_eq!(db.open().await.status().await.expect("status").faces, 3);
}

/// An earlier gallery larger than one round of the import's statements (thousands of
/// identities, some named again after others): every face arrives, in order, and a feed
/// reader that started before the import sees what a fresh load sees.
async fn a_large_earlier_gallery_is_imported_whole_and_in_order(kind: Kind) {
    let db = Db::new(kind);
    let blobs = db.blobs();
    let mut old = Gallery::new(MODEL);
    for i in 0..20_000u64 {
        // Runs of 1 to 7 faces; every 500th run takes an earlier name again.
        let run = i / 4 + (i % 7) / 3;
        let name = if run % 500 == 499 {
            format!("person-{}", run / 2)
        } else {
            format!("person-{run}")
        };
        old.add_face(&name, &vector(i), (i % 200) as f32);
    }
    blobs
        .put(Bucket::Out, GALLERY_KEY, old.to_bytes().into())
        .await
        .expect("put");
    let h = GalleryHandle::with_store(MODEL, db.open().await);
    h.load(&blobs).await.expect("load");
    let want: Vec<(String, Vec<f32>, f32)> = old
        .faces()
        .map(|(n, e, s)| (n.to_string(), e.to_vec(), s))
        .collect();
    let got = |g: &Gallery| -> Vec<(String, Vec<f32>, f32)> {
        g.faces()
            .map(|(n, e, s)| (n.to_string(), e.to_vec(), s))
            .collect()
    };
    assert_eq!(got(&h.get()).len(), 20_000);
    assert_eq!(got(&h.get()), want);
    let status = db.open().await.status().await.expect("status");
    assert_eq!(status.faces, 20_000);
    assert_eq!(status.identities as usize, old.identities().len());
}

/// A face seen in upload `request`, at `index`, matched to `identity`.
fn seen(request: &str, index: u32, identity: Option<&str>, at: i64) -> SeenFace {
    SeenFace {
        request_id: request.into(),
        face_index: index,
        batch: (index == 1).then(|| "job-1".to_string()),
        filename: format!("{request}.jpg"),
        bbox: [10.0, 20.0, 64.0 + index as f32, 70.0],
        score: 0.9,
        side: 64.0,
        embedding: vector(at as u64),
        identity: identity.map(str::to_string),
        distance: identity.map(|_| 0.3),
        seen_ms: at,
    }
}

async fn seen_faces_are_kept_once_and_listed_per_identity(kind: Kind) {
    let db = Db::new(kind);
    let store = db.open().await;
    store.enroll("ada", &[face(1)]).await.expect("enrol");
    store.enroll("bob", &[face(2)]).await.expect("enrol");
    let first = vec![
        seen("r1", 0, Some("ada"), 1_000),
        seen("r1", 1, Some("bob"), 1_000),
        seen("r2", 0, None, 2_000),
        seen("r3", 0, Some("ada"), 3_000),
        seen("r4", 0, Some("ada"), 4_000),
    ];
    assert_eq!(store.record_seen(&first).await.expect("record"), 5);
    // A request answered again (a redelivery) adds nothing; a new one is added.
    let again = vec![
        seen("r3", 0, Some("ada"), 3_000),
        seen("r5", 0, Some("ada"), 5_000),
    ];
    assert_eq!(store.record_seen(&again).await.expect("record"), 1);

    // Newest first, in pages.
    let page = store.appearances("ada", None, 2).await.expect("list");
    let ids: Vec<&str> = page.iter().map(|a| a.request_id.as_str()).collect();
    assert_eq!(ids, ["r5", "r4"]);
    let rest = store
        .appearances("ada", Some(page[1].id), 10)
        .await
        .expect("list");
    let ids: Vec<&str> = rest.iter().map(|a| a.request_id.as_str()).collect();
    assert_eq!(ids, ["r3", "r1"]);
    let bob = store.appearances("bob", None, 10).await.expect("list");
    assert_eq!(bob.len(), 1);
    let b = &bob[0];
    assert_eq!(
        (
            b.request_id.as_str(),
            b.face_index,
            b.batch.as_deref(),
            b.filename.as_str()
        ),
        ("r1", 1, Some("job-1"), "r1.jpg")
    );
    assert_eq!(
        (b.bbox, b.score, b.distance, b.seen_ms),
        ([10.0, 20.0, 65.0, 70.0], 0.9, Some(0.3), 1_000)
    );

    // A rename keeps them; a removal makes them unknown, and a new "bob" has none.
    store.rename("ada", "ada lovelace").await.expect("rename");
    assert_eq!(
        store
            .appearances("ada lovelace", None, 10)
            .await
            .expect("list")
            .len(),
        4
    );
    assert!(matches!(
        store.appearances("ada", None, 10).await,
        Err(FaceStoreError::NotFound(_))
    ));
    store.remove("bob").await.expect("remove");
    store.enroll("bob", &[face(3)]).await.expect("enrol");
    assert!(
        store
            .appearances("bob", None, 10)
            .await
            .expect("list")
            .is_empty()
    );

    // Retention: what was seen before the cut-off goes.
    assert_eq!(store.forget_seen_before(3_000).await.expect("forget"), 3);
    let left = store
        .appearances("ada lovelace", None, 10)
        .await
        .expect("list");
    let ids: Vec<&str> = left.iter().map(|a| a.request_id.as_str()).collect();
    assert_eq!(ids, ["r5", "r4", "r3"]);
}

fn rusqlite_open(path: &str) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

/// Without a face store the gallery is read-only: a change is refused, nothing is lost
/// silently.
#[tokio::test]
async fn without_a_face_store_changes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsStore::new(dir.path()).unwrap();
    let h = GalleryHandle::new(MODEL);
    h.load(&blobs).await.expect("load");
    assert_eq!(
        h.enroll(&blobs, "ada", &[face(1)]).await,
        Err(GalleryChangeError::ReadOnly)
    );
}

/// PostgreSQL going away: a change fails as unavailable (retryable), the gallery in memory
/// stays, and once the server is back the same process enrols again and every change
/// committed before is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_and_coming_back() {
    let mut pg = Postgres::start();
    let url = pg.database();
    let dir = tempfile::tempdir().unwrap();
    let blobs = FsStore::new(dir.path()).unwrap();
    let h = GalleryHandle::with_store(MODEL, faces::open(&url, MODEL).await.expect("opens"));
    h.load(&blobs).await.expect("load");
    h.enroll(&blobs, "ada", &[face(1)]).await.expect("enrol");
    pg.halt();
    let err = h
        .enroll(&blobs, "bob", &[face(2)])
        .await
        .expect_err("fails");
    match &err {
        GalleryChangeError::Store(e) => assert!(e.is_retryable(), "{e}"),
        other => panic!("{other}"),
    }
    assert!(h.sync(&blobs).await.is_err());
    assert_eq!(h.get().len(), 1, "the gallery in memory stays");
    pg.resume();
    let mut last = None;
    for _ in 0..50 {
        match h.enroll(&blobs, "bob", &[face(2)]).await {
            Ok(n) => {
                last = Some(n);
                break;
            }
            Err(e) => {
                last = None;
                eprintln!("retrying: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    assert_eq!(last, Some(1), "enrols again once the server is back");
    assert_eq!(
        rows(&h.get()),
        [
            ("ada".to_string(), vector(1)),
            ("bob".to_string(), vector(2))
        ]
    );
}
