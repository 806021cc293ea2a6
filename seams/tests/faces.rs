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

use facerec_contract::gallery::DIM;
use facerec_contract::{Gallery, Threshold};
use facerec_seams::faces::{
    self, FaceStore, FaceStoreError, NewFace, Pin, RetagProgress, SeenFace, SeenScan,
};
use facerec_seams::gallery::{GALLERY_KEY, GalleryChangeError};
use facerec_seams::retag::Retagger;
use facerec_seams::{BlobStore, Bucket, FsStore, Galleries, GalleryHandle};
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
    re_tagging_gives_what_matching_against_todays_gallery_gives,
    one_process_re_tags_at_a_time_and_another_takes_over_a_lapsed_lease,
    a_search_of_seen_faces_equals_a_brute_force_reference,
    collections_are_independent_galleries_with_their_own_seen_faces,
    every_collection_is_re_tagged_in_the_background_a_recreated_one_too,
    unknown_faces_their_pins_and_their_summary,
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
    assert_eq!((status.identities, status.faces, status.schema), (1, 3, 5));
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
        assert_eq!(t.await.expect("task").expect("enrolled").faces, 1);
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
            .contains("version 99, newer than this binary's 5"),
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
    // Processes that loaded the store before the import: one applies the feed, page by
    // page; one so far behind it loads the gallery whole instead.
    let replays = GalleryHandle::with_store(MODEL, db.open().await);
    replays.load_store().await.expect("load");
    let reloads = GalleryHandle::with_store(MODEL, db.open().await).reload_after(2);
    reloads.load_store().await.expect("load");
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
    for late in [&replays, &reloads] {
        assert!(late.sync_store().await.expect("sync"));
        assert_eq!(got(&late.get()), want);
        assert_eq!(late.snapshot().1, h.snapshot().1);
    }
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
        nearest: identity.map(str::to_string),
        gallery_seq: 0,
        seen_ms: at,
        quality: (index == 0).then_some(faces::FaceQuality {
            yaw: -0.25,
            roll: 3.5,
            sharpness: 120.0,
        }),
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
    // A face's quality comes back as recorded; one recorded without has none.
    assert_eq!(b.quality, None);
    assert_eq!(
        page[0].quality,
        Some(faces::FaceQuality {
            yaw: -0.25,
            roll: 3.5,
            sharpness: 120.0
        })
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

async fn unknown_faces_their_pins_and_their_summary(kind: Kind) {
    let db = Db::new(kind);
    let store = db.open().await;
    store.enroll("ada", &[face(1)]).await.expect("enrol");
    let recorded = vec![
        seen("r1", 0, Some("ada"), 1_000),
        seen("r2", 0, None, 2_000),
        seen("r2", 1, None, 2_001),
        seen("r3", 0, None, 3_000),
        seen("r4", 0, None, 4_000),
        seen("r5", 1, None, 5_000),
    ];
    store.record_seen(&recorded).await.expect("record");
    let unknown = store.unknown_faces(0, 100).await.expect("unknown");
    let keys: Vec<(&str, u32)> = unknown
        .iter()
        .map(|u| (u.request_id.as_str(), u.face_index))
        .collect();
    assert_eq!(
        keys,
        [("r2", 0), ("r2", 1), ("r3", 0), ("r4", 0), ("r5", 1)]
    );
    assert!(unknown.windows(2).all(|w| w[0].id < w[1].id));
    for (u, s) in unknown.iter().zip(&recorded[1..]) {
        assert_eq!(
            (&u.embedding, u.side, u.quality, u.pin),
            (&s.embedding, s.side, s.quality, None)
        );
    }
    // Pages after an id.
    let page = store.unknown_faces(unknown[1].id, 2).await.expect("page");
    assert_eq!(page, unknown[2..4].to_vec());
    let id = |k: usize| unknown[k].id;
    let sum = |ks: &[usize]| ks.iter().map(|&k| id(k)).sum::<i64>();
    let summary = store.unknown_summary(id(3)).await.expect("summary");
    assert_eq!(
        (
            summary.count,
            summary.id_sum,
            summary.last_id,
            summary.version
        ),
        (4, sum(&[0, 1, 2, 3]), id(4), 0)
    );

    // A correction: two new pins, and a face taken out of grouping.
    let pinned = store
        .pin_faces(&[
            (id(0), Pin::New(1)),
            (id(2), Pin::New(1)),
            (id(3), Pin::New(2)),
        ])
        .await
        .expect("pin");
    assert_eq!(pinned, 3);
    store
        .pin_faces(&[(id(1), Pin::Reject)])
        .await
        .expect("reject");
    let pins = store.unknown_pins(id(4)).await.expect("pins");
    assert_eq!(pins.len(), 4, "the rejected face is not grouped: {pins:?}");
    let pin = |k: usize| pins.iter().find(|p| p.0 == id(k)).expect("listed").1;
    assert!(pin(0).is_some() && pin(0) == pin(2));
    assert!(pin(3).is_some() && pin(3) != pin(0));
    assert_eq!(pin(4), None);
    let summary = store.unknown_summary(id(4)).await.expect("summary");
    assert_eq!(
        (summary.count, summary.id_sum, summary.version),
        (4, sum(&[0, 2, 3, 4]), 2)
    );
    // A later correction's pins are new ones, shared with no earlier pin.
    store.pin_faces(&[(id(4), Pin::New(1))]).await.expect("pin");
    let again = store.unknown_faces(0, 100).await.expect("unknown");
    let p4 = again.iter().find(|u| u.id == id(4)).expect("listed").pin;
    assert!(p4.is_some() && p4 != pin(0) && p4 != pin(3));

    // A face named since leaves; a face whose identity was removed comes back.
    store.remove("ada").await.expect("remove");
    let back = store.unknown_faces(0, 100).await.expect("unknown");
    assert_eq!(back.len(), 5);
    assert_eq!(back[0].request_id, "r1");
    // Forgetting a job takes its faces out.
    store.forget_seen_of_batch("job-1").await.expect("forget");
    let left: Vec<i64> = store
        .unknown_pins(i64::MAX)
        .await
        .expect("pins")
        .iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(left, vec![back[0].id, id(0), id(2), id(3)]);
    // The newest face was forgotten: the next one recorded gets a new id all the same.
    store
        .record_seen(&[seen("r6", 0, None, 6_000)])
        .await
        .expect("record");
    let newest = store.unknown_faces(id(3), 10).await.expect("unknown");
    assert_eq!(newest.len(), 1);
    assert!(newest[0].id > id(4), "{} reused", newest[0].id);

    // Faces of another collection are not pinned from this one; bad pins and missing
    // collections are refused.
    store.create_collection("other").await.expect("create");
    let other = store.in_collection("other");
    assert_eq!(
        other.pin_faces(&[(id(0), Pin::New(1))]).await.expect("pin"),
        0
    );
    assert!(other.unknown_faces(0, 10).await.expect("empty").is_empty());
    let err = store
        .pin_faces(&[(id(0), Pin::New(0))])
        .await
        .expect_err("refused");
    assert!(matches!(err, FaceStoreError::Invalid(_)), "{err}");
    let gone = store.in_collection("gone");
    for err in [
        gone.unknown_faces(0, 10)
            .await
            .map(|_| ())
            .expect_err("missing"),
        gone.unknown_summary(0)
            .await
            .map(|_| ())
            .expect_err("missing"),
        gone.unknown_pins(0).await.map(|_| ()).expect_err("missing"),
        gone.pin_faces(&[(id(0), Pin::Reject)])
            .await
            .map(|_| ())
            .expect_err("missing"),
    ] {
        assert!(matches!(err, FaceStoreError::NotFound(_)), "{err}");
    }
}

/// A face of person `p` (a seed), photo `k`: the person's vector with some of another
/// mixed in, about 0.28 from the person's own; `small` photos have a 40 px face.
fn photo(p: u64, k: u64) -> (Vec<f32>, f32) {
    let unit = |v: Vec<f32>| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let (a, b) = (unit(vector(p)), unit(vector(1000 + p * 100 + k)));
    let mixed = unit(a.iter().zip(&b).map(|(a, b)| 0.96 * a + 0.28 * b).collect());
    (mixed, if k % 4 == 3 { 40.0 } else { 120.0 })
}

fn enrolled(p: u64, k: u64) -> NewFace {
    let (embedding, side) = photo(p, k);
    NewFace {
        embedding,
        side,
        source: None,
    }
}

/// Records photos as a worker does: matched against `handle`'s gallery as it is in
/// memory, with the change it has reached.
async fn record_as_worker(
    handle: &GalleryHandle,
    store: &dyn FaceStore,
    request: &str,
    photos: &[(u64, u64)],
) {
    let (gallery, at) = handle.snapshot();
    let faces: Vec<SeenFace> = photos
        .iter()
        .enumerate()
        .map(|(i, &(p, k))| {
            let (embedding, side) = photo(p, k);
            let m = gallery.nearest(&[&embedding]).pop().flatten();
            SeenFace {
                identity: m
                    .as_ref()
                    .filter(|m| Threshold::DEFAULT.is_same(m.distance, side, m.side))
                    .map(|m| m.name.clone()),
                distance: m.as_ref().map(|m| m.distance),
                nearest: m.map(|m| m.name),
                gallery_seq: at,
                side,
                embedding,
                ..seen(request, i as u32, None, 1_000 + i as i64)
            }
        })
        .collect();
    store.record_seen(&faces).await.expect("record");
}

/// Every seen face as (identity, nearest, distance) by name, in the order recorded.
async fn tags(store: &dyn FaceStore) -> Vec<(Option<String>, Option<String>, Option<f32>)> {
    let rows = store
        .seen_page(SeenScan::Before(i64::MAX), 0, 100_000)
        .await
        .expect("read");
    let ids = store.retag_plan().await.expect("plan").identities;
    let name = |id: Option<i64>| {
        id.map(|id| {
            ids.iter()
                .find(|(_, v)| **v == id)
                .map_or(format!("removed identity {id}"), |(n, _)| n.clone())
        })
    };
    rows.into_iter()
        .map(|r| (name(r.identity_id), name(r.nearest_id), r.distance))
        .collect()
}

async fn re_tagging_gives_what_matching_against_todays_gallery_gives(kind: Kind) {
    let db = Db::new(kind);
    let store = db.open().await;
    let blobs = db.blobs();
    // Person 1 and 2 enrolled; 60 photos of people 1 to 6 seen.
    store.enroll("p1", &[enrolled(1, 0)]).await.expect("enrol");
    store.enroll("p2", &[enrolled(2, 0)]).await.expect("enrol");
    let worker = GalleryHandle::with_store(MODEL, db.open().await);
    worker.load(&blobs).await.expect("load");
    let photos = |from: u64| -> Vec<(u64, u64)> {
        (0..20).map(|i| (1 + (i * 7 + from) % 6, 1 + i)).collect()
    };
    record_as_worker(&worker, store.as_ref(), "r1", &photos(0)).await;
    // People 3 and 4 enrolled through another process: the worker, not synced yet,
    // records more against its gallery behind the store (those are stale).
    store
        .enroll("p3", &[enrolled(3, 0), enrolled(3, 50)])
        .await
        .expect("enrol");
    store.enroll("p4", &[enrolled(4, 0)]).await.expect("enrol");
    record_as_worker(&worker, store.as_ref(), "r2", &photos(3)).await;
    assert!(store.retag_status().await.expect("status").stale > 0);

    // The re-tagger's own gallery is loaded now; more changes come after it.
    let own = Arc::new(GalleryHandle::with_store(MODEL, db.open().await));
    own.load(&blobs).await.expect("load");
    let retagger = Retagger::new(own.clone(), Threshold::DEFAULT).expect("a store");
    store.enroll("p5", &[enrolled(5, 0)]).await.expect("enrol");
    store.remove("p1").await.expect("remove");
    store.rename("p2", "person two").await.expect("rename");
    worker.sync(&blobs).await.expect("sync");
    record_as_worker(&worker, store.as_ref(), "r3", &photos(5)).await;
    store
        .enroll("p1", &[enrolled(1, 9)])
        .await
        .expect("enrol again");

    let stop = tokio_util::sync::CancellationToken::new();
    let mut passes = 0;
    while retagger.pass(&stop).await.expect("pass").is_some() {
        passes += 1;
        assert!(passes < 10, "re-tagging does not settle");
    }
    let status = store.retag_status().await.expect("status");
    assert_eq!(
        (status.cursor, status.stale, status.running),
        (status.latest, 0, None)
    );

    // The reference: every seen face matched against today's gallery, loaded afresh.
    let (today, _) = store.load(MODEL).await.expect("load");
    let all: Vec<(u64, u64)> = [photos(0), photos(3), photos(5)].concat();
    let expected: Vec<_> = all
        .iter()
        .map(|&(p, k)| {
            let (e, side) = photo(p, k);
            let m = today.nearest(&[&e]).pop().flatten().expect("a gallery");
            (
                Threshold::DEFAULT
                    .is_same(m.distance, side, m.side)
                    .then(|| m.name.clone()),
                Some(m.name),
                Some(m.distance),
            )
        })
        .collect();
    let got = tags(store.as_ref()).await;
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!((&g.0, &g.1), (&e.0, &e.1), "seen face {i} ({:?})", all[i]);
        assert!((g.2.unwrap() - e.2.unwrap()).abs() < 1e-5, "seen face {i}");
    }
    // Every person's photos found under their name (person 6 was never enrolled), the
    // removed-and-enrolled-again p1 included, and the renamed p2 under its new name.
    for (name, p) in [
        ("p1", 1),
        ("person two", 2),
        ("p3", 3),
        ("p4", 4),
        ("p5", 5),
    ] {
        let listed = store
            .appearances(name, None, 100)
            .await
            .expect("list")
            .len();
        let tagged = expected
            .iter()
            .filter(|e| e.0.as_deref() == Some(name))
            .count();
        assert_eq!(listed, tagged, "{name}");
        assert!(
            tagged > 0 && tagged <= all.iter().filter(|a| a.0 == p).count(),
            "{name}"
        );
    }
}

async fn one_process_re_tags_at_a_time_and_another_takes_over_a_lapsed_lease(kind: Kind) {
    let db = Db::new(kind);
    let store = db.open().await;
    let blobs = db.blobs();
    let worker = GalleryHandle::with_store(MODEL, db.open().await);
    worker.load(&blobs).await.expect("load");
    record_as_worker(&worker, store.as_ref(), "r1", &[(1, 1), (1, 2), (2, 1)]).await;
    store.enroll("p1", &[enrolled(1, 0)]).await.expect("enrol");
    let own = Arc::new(GalleryHandle::with_store(MODEL, db.open().await));
    own.load(&blobs).await.expect("load");
    let retagger = Retagger::new(own, Threshold::DEFAULT).expect("a store");
    let stop = tokio_util::sync::CancellationToken::new();

    // Another process holds the lease: nothing happens here, and the status shows it.
    let now = faces::now_ms();
    let other = RetagProgress {
        owner: "other-host:1:1".into(),
        until_ms: now + 60_000,
        target: 1,
        done: 0,
        total: 3,
        started_ms: now,
    };
    assert!(store.retag_lease(&other).await.expect("lease"));
    assert_eq!(retagger.pass(&stop).await.expect("pass"), None);
    let status = store.retag_status().await.expect("status");
    assert_eq!(
        status.running.as_ref().map(|r| r.owner.as_str()),
        Some("other-host:1:1")
    );
    assert!(
        store
            .appearances("p1", None, 10)
            .await
            .expect("list")
            .is_empty()
    );

    // Its lease lapses (it died): this process takes over and does the work.
    let lapsed = RetagProgress {
        until_ms: now - 1,
        ..other
    };
    assert!(store.retag_lease(&lapsed).await.expect("lease"));
    let report = retagger
        .pass(&stop)
        .await
        .expect("pass")
        .expect("work done");
    // All three met p1 (two are p1's, tagged; one is only nearest to it, untagged).
    assert_eq!((report.target, report.scanned, report.changed), (1, 3, 3));
    assert_eq!(
        store.appearances("p1", None, 10).await.expect("list").len(),
        2
    );
    let status = store.retag_status().await.expect("status");
    assert_eq!((status.cursor, status.latest, status.running), (1, 1, None));
}

async fn a_search_of_seen_faces_equals_a_brute_force_reference(kind: Kind) {
    use facerec_seams::faces::SeenFilter;
    use facerec_seams::faces::search::{Query, nearest_seen};
    let db = Db::new(kind);
    let store = db.open().await;
    let blobs = db.blobs();
    store.enroll("p1", &[enrolled(1, 0)]).await.expect("enrol");
    let worker = GalleryHandle::with_store(MODEL, db.open().await);
    worker.load(&blobs).await.expect("load");
    // 3 requests of 40 photos of 8 people; the second one a bulk job's; seen at 1000 + i.
    let photos: Vec<(u64, u64)> = (0..120).map(|i| (1 + i % 8, 1 + i / 8)).collect();
    for (r, chunk) in photos.chunks(40).enumerate() {
        record_as_worker(&worker, store.as_ref(), &format!("r{r}"), chunk).await;
    }
    let rows = store
        .seen_page(SeenScan::Before(i64::MAX), 0, 1000)
        .await
        .expect("read");
    assert_eq!(rows.len(), 120);
    // The reference: plain euclidean distances, sorted (ties: the face seen first).
    let reference = |q: &[f32], keep: &dyn Fn(usize) -> bool, k: usize| -> Vec<(i64, f32)> {
        let mut all: Vec<(i64, f32)> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, r)| {
                let d2: f32 = q
                    .iter()
                    .zip(&r.embedding)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum();
                (r.id, d2.sqrt())
            })
            .collect();
        all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    };
    let check = |got: &[facerec_seams::faces::search::Similar], want: &[(i64, f32)]| {
        let ids: Vec<i64> = got.iter().map(|s| s.face.at.id).collect();
        let want_ids: Vec<i64> = want.iter().map(|w| w.0).collect();
        assert_eq!(ids, want_ids);
        for (g, w) in got.iter().zip(want) {
            assert!((g.distance - w.1).abs() < 1e-4, "{} vs {}", g.distance, w.1);
        }
    };
    // An uploaded face of person 3: every seen face, then the k nearest.
    let (q, side) = photo(3, 99);
    let all = SeenFilter::default();
    for k in [1, 7, 15, 120, 1000] {
        let got = nearest_seen(
            store.as_ref(),
            &Query::Face {
                embedding: q.clone(),
                side,
            },
            k,
            &all,
            Threshold::DEFAULT,
        )
        .await
        .expect("search");
        check(&got, &reference(&q, &|_| true, k));
    }
    let top = nearest_seen(
        store.as_ref(),
        &Query::Face {
            embedding: q.clone(),
            side,
        },
        15,
        &all,
        Threshold::DEFAULT,
    )
    .await
    .expect("search");
    // Person 3's 15 photos come first, all the same person by the rule.
    assert!(top.iter().all(|s| s.same && s.confidence > 0.5), "{top:?}");
    // Filters: a bulk job (face 1 of each request belongs to job-1), a time window.
    let job = SeenFilter {
        batch: Some("job-1".into()),
        ..SeenFilter::default()
    };
    let in_job: Vec<usize> = (0..120).filter(|i| i % 40 == 1).collect();
    let got = nearest_seen(
        store.as_ref(),
        &Query::Face {
            embedding: q.clone(),
            side,
        },
        10,
        &job,
        Threshold::DEFAULT,
    )
    .await
    .expect("search");
    check(&got, &reference(&q, &|i| in_job.contains(&i), 10));
    let window = SeenFilter {
        since_ms: Some(1_005),
        until_ms: Some(1_020),
        ..SeenFilter::default()
    };
    let got = nearest_seen(
        store.as_ref(),
        &Query::Face {
            embedding: q.clone(),
            side,
        },
        1000,
        &window,
        Threshold::DEFAULT,
    )
    .await
    .expect("search");
    check(&got, &reference(&q, &|i| (5..20).contains(&(i % 40)), 1000));
    // By a seen face's id: itself left out.
    let pick = &rows[42];
    let got = nearest_seen(
        store.as_ref(),
        &Query::Seen(pick.id),
        5,
        &all,
        Threshold::DEFAULT,
    )
    .await
    .expect("search");
    check(&got, &reference(&pick.embedding, &|i| i != 42, 5));
    assert!(matches!(
        nearest_seen(
            store.as_ref(),
            &Query::Seen(1_000_000),
            5,
            &all,
            Threshold::DEFAULT
        )
        .await,
        Err(FaceStoreError::NotFound(_))
    ));
    // A bulk job's seen faces forgotten: only those.
    assert_eq!(
        store.forget_seen_of_batch("job-1").await.expect("forget"),
        3
    );
    assert_eq!(
        store
            .seen_page(SeenScan::Before(i64::MAX), 0, 1000)
            .await
            .expect("read")
            .len(),
        117
    );
}

async fn collections_are_independent_galleries_with_their_own_seen_faces(kind: Kind) {
    let db = Db::new(kind);
    let store = db.open().await;
    let blobs = db.blobs();
    let names = |all: Vec<faces::CollectionInfo>| -> Vec<String> {
        all.into_iter().map(|c| c.name).collect()
    };
    assert_eq!(names(store.collections().await.unwrap()), ["default"]);
    assert!(store.create_collection("events").await.unwrap());
    assert!(!store.create_collection("events").await.unwrap(), "exists");
    for bad in ["", "a/b", ".x", "-x", "sp ace", &"x".repeat(65)] {
        let e = store.create_collection(bad).await.expect_err(bad);
        assert!(matches!(e, FaceStoreError::Invalid(_)), "{bad:?}: {e}");
    }
    let events = store.in_collection("events");
    assert_eq!(events.collection(), "events");

    // The same name in two collections: two identities.
    store.enroll("p1", &[enrolled(1, 0)]).await.unwrap();
    let default_latest = store.retag_status().await.unwrap().latest;
    events.enroll("p1", &[enrolled(2, 0)]).await.unwrap();
    events.enroll("p2", &[enrolled(3, 0)]).await.unwrap();
    let (d, _) = store.load(MODEL).await.unwrap();
    let (e, _) = events.load(MODEL).await.unwrap();
    assert_eq!(rows(&d), [("p1".to_string(), enrolled(1, 0).embedding)]);
    assert_eq!(
        rows(&e),
        [
            ("p1".to_string(), enrolled(2, 0).embedding),
            ("p2".to_string(), enrolled(3, 0).embedding)
        ]
    );
    // Each feed holds its own changes; a change in one is no change of the other's.
    assert_eq!(store.changes(0, 100).await.unwrap().len(), 1);
    assert_eq!(events.changes(0, 100).await.unwrap().len(), 2);
    assert_eq!(store.retag_status().await.unwrap().latest, default_latest);
    let listed = store.collections().await.unwrap();
    let ev = listed.iter().find(|c| c.name == "events").unwrap();
    assert_eq!((ev.identities, ev.faces), (2, 2));

    // A process's galleries: the default one, and the others loaded when named.
    let default = Arc::new(GalleryHandle::with_store(MODEL, db.open().await));
    default.load(&blobs).await.unwrap();
    let galleries = Galleries::new(default);
    let g = galleries.get("events").await.unwrap();
    assert_eq!(rows(&g.get()), rows(&e));
    assert!(matches!(
        galleries.get("nope").await,
        Err(FaceStoreError::NotFound(_))
    ));
    events.rename("p2", "two").await.unwrap();
    assert!(galleries.sync_others().await.unwrap());
    assert_eq!(g.get().identities().len(), 2);
    assert!(g.get().identities().iter().any(|i| i.name == "two"));

    // Seen faces, their appearances, searches and re-tagging stay in their collection.
    record_as_worker(&g, events.as_ref(), "e1", &[(2, 1), (3, 1), (9, 1)]).await;
    record_as_worker(
        galleries.default_gallery(),
        store.as_ref(),
        "d1",
        &[(1, 1), (2, 2)],
    )
    .await;
    let in_events = events.appearances("p1", None, 10).await.unwrap();
    let in_default = store.appearances("p1", None, 10).await.unwrap();
    assert_eq!(in_events.len(), 1);
    assert_eq!(in_events[0].request_id, "e1");
    assert_eq!(in_default.len(), 1);
    assert_eq!(in_default[0].request_id, "d1");
    let all = faces::SeenFilter::default();
    let ids: Vec<i64> = events
        .seen_embeddings(&all, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(store.seen_embeddings(&all, 0, 100).await.unwrap().len(), 2);
    assert!(store.seen_faces(&ids).await.unwrap().is_empty());
    assert_eq!(events.seen_faces(&ids).await.unwrap().len(), 3);
    // Person 9 enrolled in events: re-tagging there tags its seen face; the default
    // collection has nothing to do.
    events.enroll("p9", &[enrolled(9, 0)]).await.unwrap();
    galleries.sync_others().await.unwrap();
    let retagger = Retagger::new(g.clone(), Threshold::DEFAULT).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    while retagger.pass(&stop).await.unwrap().is_some() {}
    assert_eq!(events.appearances("p9", None, 10).await.unwrap().len(), 1);
    let own = Retagger::new(galleries.default_gallery().clone(), Threshold::DEFAULT).unwrap();
    while own.pass(&stop).await.unwrap().is_some() {}
    let d = store.retag_status().await.unwrap();
    assert_eq!(
        (d.cursor, d.latest, d.stale),
        (default_latest, default_latest, 0)
    );

    // A collection that does not exist answers NotFound; a worker's faces for it are
    // not kept.
    let nope = store.in_collection("nope");
    assert!(matches!(
        nope.enroll("x", &[face(1)]).await,
        Err(FaceStoreError::NotFound(_))
    ));
    assert!(matches!(
        nope.load(MODEL).await,
        Err(FaceStoreError::NotFound(_))
    ));
    assert!(matches!(
        nope.changes(0, 10).await,
        Err(FaceStoreError::NotFound(_))
    ));
    assert_eq!(
        nope.record_seen(&[seen("n1", 0, None, 1)]).await.unwrap(),
        0
    );

    // Deleting: the default collection cannot go; events goes whole.
    assert!(matches!(
        store.delete_collection("default").await,
        Err(FaceStoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete_collection("nope").await,
        Err(FaceStoreError::NotFound(_))
    ));
    let gone = store.delete_collection("events").await.unwrap();
    assert_eq!((gone.identities, gone.faces), (3, 3));
    assert_eq!(names(store.collections().await.unwrap()), ["default"]);
    assert!(matches!(
        events.appearances("p1", None, 10).await,
        Err(FaceStoreError::NotFound(_))
    ));
    // Created again, it starts empty; a process that followed the old one loads it anew.
    assert!(store.create_collection("events").await.unwrap());
    assert!(matches!(
        g.sync_store().await,
        Err(FaceStoreError::NotFound(_))
    ));
    galleries.sync_others().await.unwrap();
    let fresh = galleries.get("events").await.unwrap();
    assert!(fresh.get().is_empty());
    assert!(
        events
            .seen_embeddings(&all, 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The default collection kept everything.
    assert_eq!(rows(&store.load(MODEL).await.unwrap().0).len(), 1);
    assert_eq!(store.seen_embeddings(&all, 0, 100).await.unwrap().len(), 2);
}

async fn every_collection_is_re_tagged_in_the_background_a_recreated_one_too(kind: Kind) {
    let db = Db::new(kind);
    let store = db.open().await;
    let blobs = db.blobs();
    let default = Arc::new(GalleryHandle::with_store(MODEL, db.open().await));
    default.load(&blobs).await.unwrap();
    let galleries = Arc::new(Galleries::new(default));
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(galleries.clone().follow_others(stop.clone()));
    tokio::spawn(facerec_seams::retag::run_all(
        galleries.clone(),
        Threshold::DEFAULT,
        facerec_seams::retag::RetagMetrics::default(),
        stop.clone(),
    ));
    // Seen in "ev" before person 9 is enrolled there: tagged in the background.
    let tagged_in = |events: Arc<dyn FaceStore>| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match events.appearances("p9", None, 10).await {
                Ok(a) if !a.is_empty() => return a.len(),
                _ => {}
            }
            assert!(std::time::Instant::now() < deadline, "not re-tagged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    for round in 0..2 {
        assert!(store.create_collection("ev").await.unwrap());
        let events = store.in_collection("ev");
        let g = galleries.get("ev").await.unwrap();
        let request = format!("r{round}");
        record_as_worker(&g, events.as_ref(), &request, &[(9, 1), (4, 1)]).await;
        events.enroll("p9", &[enrolled(9, 0)]).await.unwrap();
        assert_eq!(tagged_in(events.clone()).await, 1, "round {round}");
        store.delete_collection("ev").await.unwrap();
        // The followers notice the deletion before it is created again.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.cancel();
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
                last = Some(n.faces);
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

/// A server that takes TLS only (as RDS asks for): `sslmode=require` with the server's CA
/// as `sslrootcert` connects and works; a plain connection, a CA the system does not know,
/// and a missing root file are refused with clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_needs_the_servers_ca() {
    let pg = Postgres::start_tls();
    let url = pg.database();
    let ca = pg.ca_file().display().to_string();
    let store = faces::open(
        &format!("{url}?sslmode=verify-full&sslrootcert={ca}"),
        MODEL,
    )
    .await
    .expect("opens over TLS");
    store.enroll("ada", &[face(1)]).await.expect("enrol");
    assert_eq!(store.status().await.expect("status").faces, 1);
    let via_localhost = url.replace("127.0.0.1", "localhost");
    let again = faces::open(
        &format!("{via_localhost}?sslmode=require&sslrootcert={ca}"),
        MODEL,
    )
    .await
    .expect("the certificate names localhost too");
    assert_eq!(again.status().await.expect("status").identities, 1);

    let plain = faces::open(&url, MODEL)
        .await
        .err()
        .expect("refused in plain");
    assert!(plain.to_string().contains("no encryption"), "{plain}");
    let unknown = faces::open(&format!("{url}?sslmode=require"), MODEL)
        .await
        .err()
        .expect("a CA the system does not know is refused");
    assert!(unknown.to_string().contains("certificate"), "{unknown}");
    let missing = faces::open(
        &format!("{url}?sslmode=require&sslrootcert=/nonexistent.pem"),
        MODEL,
    )
    .await
    .err()
    .expect("refused");
    assert!(
        matches!(missing, FaceStoreError::Invalid(_))
            && missing.to_string().contains("sslrootcert"),
        "{missing}"
    );
}
