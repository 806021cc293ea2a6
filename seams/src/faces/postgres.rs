//! The face store on PostgreSQL: a fleet's edges and workers share one database (on AWS an
//! RDS or Aurora PostgreSQL named by `DATABASE_URL`), through a small pool of connections
//! per process that replaces a connection the server closed.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::tokio_postgres::{self, IsolationLevel};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use facerec_contract::Gallery;

use super::{
    Appearance, Change, ChangeRow, CollectionInfo, DEFAULT_COLLECTION, Enrolled, FaceStore,
    FaceStoreError, Migrations, NewFace, Pin, Retag, RetagPlan, RetagProgress, RetagStatus,
    SeenFace, SeenFilter, SeenRecord, SeenScan, StoreStatus, StoredFace, StoredSeen, UnknownFace,
    UnknownSummary, check_collection_name, check_faces, check_pins, decode, encode, group_changes,
    model_mismatch, no_collection, now_ms, pin_value, redact, runs_of,
};

const MIGRATIONS: Migrations = Migrations(&[
    (
        1,
        include_str!("../../migrations/postgres/0001_gallery.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_seen_faces.sql"),
    ),
    (3, include_str!("../../migrations/postgres/0003_retag.sql")),
    (
        4,
        include_str!("../../migrations/postgres/0004_collections.sql"),
    ),
    (5, include_str!("../../migrations/postgres/0005_groups.sql")),
]);

/// Serialises migrations across processes starting at once (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x0066_6163_6572_6563;
/// Connections per process.
const POOL_SIZE: usize = 8;
/// How long a call waits for a connection (or to open one) before it fails as unavailable.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

/// A PostgreSQL error as the seam reports it, by its SQLSTATE class: what a later call may
/// get past (a connection lost, the server shutting down or short of resources, a
/// serialisation failure) is `Unavailable`; a unique violation is a `Conflict`; what no
/// retry changes (bad data, an integrity or access rule, a missing table, a feature the
/// server lacks) is `Invalid`.
fn pg_err(e: tokio_postgres::Error) -> FaceStoreError {
    let Some(db) = e.as_db_error() else {
        return FaceStoreError::Unavailable(format!("postgres: {e}"));
    };
    let code = db.code().code();
    let message = format!("postgres: {} ({code})", db.message());
    match code.get(..2).unwrap_or_default() {
        _ if code == "23505" => FaceStoreError::Conflict(message),
        "22" | "23" | "42" | "0A" => FaceStoreError::Invalid(message),
        _ => FaceStoreError::Unavailable(message),
    }
}

fn pool_err(e: deadpool_postgres::PoolError) -> FaceStoreError {
    match e {
        // Connecting failed: the server's reason (a refused login, a TLS failure).
        deadpool_postgres::PoolError::Backend(e) => {
            let reason = match (e.as_db_error(), std::error::Error::source(&e)) {
                (Some(db), _) => format!("{} ({})", db.message(), db.code().code()),
                (None, Some(source)) => format!("{e}: {source}"),
                (None, None) => e.to_string(),
            };
            FaceStoreError::Unavailable(format!("postgres: connecting: {reason}"))
        }
        e => FaceStoreError::Unavailable(format!("postgres: {e}")),
    }
}

/// The face store in a PostgreSQL database, working in one collection.
#[derive(Clone)]
pub struct PgFaces {
    pool: Pool,
    describe: String,
    collection: std::sync::Arc<str>,
}

impl PgFaces {
    /// Connects to the database a `postgres://` URL names, applies migrations and checks
    /// the recognition model. The URL's password never reaches a message.
    pub async fn connect(url: &str, model_id: &str) -> Result<Self, FaceStoreError> {
        let store = Self::pool(url)?;
        store.migrate(model_id).await?;
        Ok(store)
    }

    /// The schema and counts of the database at `url`, changing nothing; `None` when it
    /// holds no face store yet.
    pub async fn probe(url: &str) -> Result<Option<StoreStatus>, FaceStoreError> {
        let store = Self::pool(url)?;
        let client = store.pool.get().await.map_err(pool_err)?;
        let exists: bool = client
            .query_one("SELECT to_regclass('facerec_counter') IS NOT NULL", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        drop(client);
        if !exists {
            return Ok(None);
        }
        store.status().await.map(Some)
    }

    fn pool(url: &str) -> Result<Self, FaceStoreError> {
        let (url, wish) = super::tls::split_url(url);
        let url = url.as_str();
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            FaceStoreError::Invalid(format!(
                "DATABASE_URL {:?} is not a PostgreSQL URL: {}",
                redact(url),
                redact(&e.to_string())
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_WAIT);
        }
        config.keepalives(true);
        if config.get_application_name().is_none() {
            config.application_name("facerec");
        }
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let describe = format!(
            "postgres {}:{}/{}",
            hosts.join(","),
            config.get_ports().first().copied().unwrap_or(5432),
            config.get_dbname().unwrap_or("")
        );
        let tls = super::tls::connector(&wish, &mut config)?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_WAIT))
            .create_timeout(Some(CONNECT_WAIT))
            .recycle_timeout(Some(CONNECT_WAIT))
            .build()
            .map_err(|e| FaceStoreError::Invalid(format!("postgres pool: {e}")))?;
        Ok(Self {
            pool,
            describe,
            collection: DEFAULT_COLLECTION.into(),
        })
    }

    async fn migrate(&self, model_id: &str) -> Result<(), FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg_err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS facerec_schema (version BIGINT NOT NULL)")
            .await
            .map_err(pg_err)?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM facerec_schema",
                &[],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        let what = format!("the face store ({})", self.describe);
        for (version, sql) in MIGRATIONS.pending(current, &what)? {
            tx.batch_execute(sql).await.map_err(|e| {
                FaceStoreError::Schema(format!("{what}: migration {version}: {}", pg_err(e)))
            })?;
            tx.execute(
                "INSERT INTO facerec_schema (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(pg_err)?;
            tracing::info!(store = %self.describe, version, "face store migrated");
        }
        let stored: Option<String> = tx
            .query_opt("SELECT value FROM facerec_meta WHERE key = 'model_id'", &[])
            .await
            .map_err(pg_err)?
            .map(|r| r.get(0));
        let faces: i64 = tx
            .query_one("SELECT COUNT(*) FROM facerec_faces", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        if let Some(e) = stored
            .as_deref()
            .and_then(|s| model_mismatch(s, model_id, faces as u64))
        {
            return Err(e);
        }
        tx.execute(
            "INSERT INTO facerec_meta (key, value) VALUES ('model_id', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&model_id],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }
}

/// A read-only transaction that sees one snapshot for all its statements.
async fn snapshot(
    client: &mut deadpool_postgres::Client,
) -> Result<deadpool_postgres::Transaction<'_>, FaceStoreError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_err)
}

/// The next change number; the counter row stays locked until the transaction ends, so
/// changes commit in the order of their numbers.
async fn next_seq(tx: &deadpool_postgres::Transaction<'_>) -> Result<i64, FaceStoreError> {
    Ok(tx
        .query_one(
            "UPDATE facerec_counter SET last = last + 1 WHERE id = 1 RETURNING last",
            &[],
        )
        .await
        .map_err(pg_err)?
        .get(0))
}

/// The next change number, made collection `c`'s last (its row locked to the commit too:
/// the counter first, then the collection, in every transaction that takes both);
/// `NotFound` when there is no such collection.
async fn change_in(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &str,
) -> Result<i64, FaceStoreError> {
    let seq = next_seq(tx).await?;
    let found = tx
        .execute(
            "UPDATE facerec_collections SET last_seq = $1 WHERE name = $2",
            &[&seq, &c],
        )
        .await
        .map_err(pg_err)?;
    if found == 0 {
        return Err(no_collection(c));
    }
    Ok(seq)
}

/// A collection's row: (created_seq, last_seq, retag_seq, lease), locked as `lock` says
/// (`""`, `" FOR SHARE"`, `" FOR UPDATE"`); `NotFound` when there is none.
async fn collection_row(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &str,
    lock: &str,
) -> Result<(i64, i64, i64, Option<RetagProgress>), FaceStoreError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT created_seq, last_seq, retag_seq, retag_lease FROM facerec_collections
                 WHERE name = $1{lock}"
            ),
            &[&c],
        )
        .await
        .map_err(pg_err)?
        .ok_or_else(|| no_collection(c))?;
    let lease = row
        .get::<_, Option<String>>(3)
        .and_then(|v| serde_json::from_str::<RetagProgress>(&v).ok());
    Ok((row.get(0), row.get(1), row.get(2), lease))
}

/// The columns of a seen face's place ([`appearance`]).
const APPEARANCE: &str = "s.id, s.request_id, s.face_index, s.batch, s.filename, s.box_x, s.box_y,
    s.box_w, s.box_h, s.score, s.distance, s.seen_ms, s.yaw, s.roll, s.sharpness";

/// Gives the planner statistics of the seen faces before a re-tagging pass when it has
/// none, or when a fifth of the rows changed since (a large archive recorded at once,
/// before autovacuum came by): without them it estimates a collection's faces as a few
/// hundred and reads all of them for every page (seconds a page, not a tenth of one).
async fn analyze_if_unknown(client: &deadpool_postgres::Client) -> Result<(), FaceStoreError> {
    let stale: bool = client
        .query_one(
            "SELECT COALESCE((
                 SELECT n_live_tup > 10000 AND (n_mod_since_analyze > 10000 + n_live_tup / 5
                     OR NOT EXISTS (SELECT 1 FROM pg_stats
                                    WHERE tablename = 'facerec_seen_faces'))
                 FROM pg_stat_user_tables WHERE relid = 'facerec_seen_faces'::regclass), false)",
            &[],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    if stale {
        tracing::info!("seen faces analysed for the planner before re-tagging");
        client
            .batch_execute("ANALYZE facerec_seen_faces")
            .await
            .map_err(pg_err)?;
    }
    Ok(())
}

/// A seen face's place from a row whose first 15 columns are `APPEARANCE`'s.
fn appearance(r: &tokio_postgres::Row) -> Appearance {
    let quality = super::quality_of(r.get(12), r.get(13), r.get(14));
    Appearance {
        quality,
        id: r.get(0),
        request_id: r.get(1),
        face_index: r.get::<_, i32>(2) as u32,
        batch: r.get(3),
        filename: r.get(4),
        bbox: [r.get(5), r.get(6), r.get(7), r.get(8)],
        score: r.get(9),
        distance: r.get(10),
        seen_ms: r.get(11),
    }
}

async fn identity_id(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &str,
    name: &str,
) -> Result<Option<i64>, FaceStoreError> {
    Ok(tx
        .query_opt(
            "SELECT id FROM facerec_identities WHERE collection = $1 AND name = $2",
            &[&c, &name],
        )
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0)))
}

async fn face_count(
    tx: &deadpool_postgres::Transaction<'_>,
    id: i64,
) -> Result<usize, FaceStoreError> {
    let n: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM facerec_faces WHERE identity_id = $1",
            &[&id],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    Ok(n as usize)
}

/// Adds faces to `name` in collection `c` under change `seq` (the change row included).
async fn add_faces(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &str,
    seq: i64,
    name: &str,
    faces: &[(Vec<u8>, f32, Option<String>)],
) -> Result<i64, FaceStoreError> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO facerec_identities (collection, name, created_ms) VALUES ($1, $2, $3)
         ON CONFLICT (collection, name) DO NOTHING",
        &[&c, &name, &now],
    )
    .await
    .map_err(pg_err)?;
    let id = identity_id(tx, c, name).await?.ok_or_else(|| {
        FaceStoreError::Unavailable("an identity vanished mid-transaction".into())
    })?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO facerec_faces (identity_id, seq, embedding, side, source, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(pg_err)?;
    for (embedding, side, source) in faces {
        tx.execute(&insert, &[&id, &seq, embedding, side, source, &now])
            .await
            .map_err(pg_err)?;
    }
    tx.execute(
        "INSERT INTO facerec_changes (seq, collection, kind, identity, created_ms)
         VALUES ($1, $2, 'enrol', $3, $4)",
        &[&seq, &c, &name, &now],
    )
    .await
    .map_err(pg_err)?;
    Ok(id)
}

/// Runs (identities in the earlier gallery's order) imported per round of statements: each
/// round is a handful of statements over arrays, not one per face (a million faces in
/// seconds, not a quarter of an hour of round trips).
const IMPORT_RUNS: usize = 2048;

/// Faces sent in one `INSERT` of an import.
const IMPORT_FACES: usize = 8192;

/// Imports `runs` inside the import's transaction: one change number each (taken from the
/// counter at once), their identities, faces and `enrol` changes, in order. Returns the
/// faces added.
async fn import_runs(
    tx: &deadpool_postgres::Transaction<'_>,
    c: &str,
    runs: &[super::Run],
) -> Result<usize, FaceStoreError> {
    let now = now_ms();
    let last: i64 = tx
        .query_one(
            "UPDATE facerec_counter SET last = last + $1 WHERE id = 1 RETURNING last",
            &[&(runs.len() as i64)],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    let first = last - runs.len() as i64 + 1;
    let seqs: Vec<i64> = (first..=last).collect();
    let names: Vec<&str> = runs.iter().map(|(n, _)| n.as_str()).collect();
    tx.execute(
        "INSERT INTO facerec_identities (collection, name, created_ms)
         SELECT $3, name, $2 FROM unnest($1::text[]) AS t(name)
         ON CONFLICT (collection, name) DO NOTHING",
        &[&names, &now, &c],
    )
    .await
    .map_err(pg_err)?;
    let ids: std::collections::HashMap<String, i64> = tx
        .query(
            "SELECT name, id FROM facerec_identities WHERE collection = $2 AND name = ANY($1)",
            &[&names, &c],
        )
        .await
        .map_err(pg_err)?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let insert = tx
        .prepare_cached(
            "INSERT INTO facerec_faces (identity_id, seq, embedding, side, created_ms)
             SELECT i, s, e, d, $5
             FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::real[])
                  WITH ORDINALITY AS t(i, s, e, d, o)
             ORDER BY o",
        )
        .await
        .map_err(pg_err)?;
    let mut batch = FaceColumns::default();
    let mut added = 0;
    for ((name, rows), seq) in runs.iter().zip(&seqs) {
        let id = *ids.get(name).ok_or_else(|| {
            FaceStoreError::Unavailable("an identity vanished mid-transaction".into())
        })?;
        for (embedding, side) in rows {
            batch.identity.push(id);
            batch.seq.push(*seq);
            batch.embedding.push(embedding);
            batch.side.push(*side);
            if batch.identity.len() == IMPORT_FACES {
                added += flush_faces(tx, &insert, &mut batch, now).await?;
            }
        }
    }
    added += flush_faces(tx, &insert, &mut batch, now).await?;
    tx.execute(
        "INSERT INTO facerec_changes (seq, collection, kind, identity, created_ms)
         SELECT s, $4, 'enrol', n, $3 FROM unnest($1::bigint[], $2::text[]) AS t(s, n)",
        &[&seqs, &names, &now, &c],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(
        "UPDATE facerec_collections SET last_seq = $1 WHERE name = $2",
        &[&last, &c],
    )
    .await
    .map_err(pg_err)?;
    Ok(added)
}

/// Faces of an import as columns, sent as arrays in one `INSERT`.
#[derive(Default)]
struct FaceColumns<'a> {
    identity: Vec<i64>,
    seq: Vec<i64>,
    embedding: Vec<&'a [u8]>,
    side: Vec<f32>,
}

/// Sends the faces gathered by `import_runs` as one `INSERT`, and empties the batch.
async fn flush_faces(
    tx: &deadpool_postgres::Transaction<'_>,
    insert: &tokio_postgres::Statement,
    batch: &mut FaceColumns<'_>,
    now: i64,
) -> Result<usize, FaceStoreError> {
    let n = batch.identity.len();
    if n == 0 {
        return Ok(0);
    }
    tx.execute(
        insert,
        &[
            &batch.identity,
            &batch.seq,
            &batch.embedding,
            &batch.side,
            &now,
        ],
    )
    .await
    .map_err(pg_err)?;
    *batch = FaceColumns::default();
    Ok(n)
}

#[async_trait]
impl FaceStore for PgFaces {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn collection(&self) -> &str {
        &self.collection
    }

    fn in_collection(&self, name: &str) -> std::sync::Arc<dyn FaceStore> {
        std::sync::Arc::new(Self {
            collection: name.into(),
            ..self.clone()
        })
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT c.name, c.created_ms,
                    (SELECT COUNT(*) FROM facerec_identities i WHERE i.collection = c.name),
                    (SELECT COUNT(*) FROM facerec_faces f JOIN facerec_identities i
                        ON i.id = f.identity_id WHERE i.collection = c.name)
                 FROM facerec_collections c ORDER BY c.name",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| CollectionInfo {
                name: r.get(0),
                created_ms: r.get(1),
                identities: r.get::<_, i64>(2) as u64,
                faces: r.get::<_, i64>(3) as u64,
            })
            .collect())
    }

    async fn collection_names(&self) -> Result<Vec<String>, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query("SELECT name FROM facerec_collections ORDER BY name", &[])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn create_collection(&self, name: &str) -> Result<bool, FaceStoreError> {
        check_collection_name(name)?;
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The counter's lock first: creations and deletions take turns with changes.
        let seq = next_seq(&tx).await?;
        let created = tx
            .execute(
                "INSERT INTO facerec_collections
                     (name, created_seq, last_seq, retag_seq, retag_lease, created_ms)
                 VALUES ($1, $2, $2, $2, NULL, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &seq, &now_ms()],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(created == 1)
    }

    async fn delete_collection(&self, name: &str) -> Result<CollectionInfo, FaceStoreError> {
        if name == DEFAULT_COLLECTION {
            return Err(FaceStoreError::Conflict(
                "the default collection cannot be deleted (remove its identities instead)".into(),
            ));
        }
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        next_seq(&tx).await?;
        collection_row(&tx, name, " FOR UPDATE").await?;
        let counts = tx
            .query_one(
                "SELECT c.created_ms,
                    (SELECT COUNT(*) FROM facerec_identities i WHERE i.collection = c.name),
                    (SELECT COUNT(*) FROM facerec_faces f JOIN facerec_identities i
                        ON i.id = f.identity_id WHERE i.collection = c.name)
                 FROM facerec_collections c WHERE c.name = $1",
                &[&name],
            )
            .await
            .map_err(pg_err)?;
        for sql in [
            "DELETE FROM facerec_seen_faces WHERE collection = $1",
            "DELETE FROM facerec_faces WHERE identity_id IN
                 (SELECT id FROM facerec_identities WHERE collection = $1)",
            "DELETE FROM facerec_identities WHERE collection = $1",
            "DELETE FROM facerec_changes WHERE collection = $1",
            "DELETE FROM facerec_collections WHERE name = $1",
        ] {
            tx.execute(sql, &[&name]).await.map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(CollectionInfo {
            name: name.to_string(),
            created_ms: counts.get(0),
            identities: counts.get::<_, i64>(1) as u64,
            faces: counts.get::<_, i64>(2) as u64,
        })
    }

    async fn enroll(&self, name: &str, faces: &[NewFace]) -> Result<Enrolled, FaceStoreError> {
        check_faces(faces)?;
        let rows: Vec<_> = faces
            .iter()
            .map(|f| (encode(&f.embedding), f.side, f.source.clone()))
            .collect();
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let c = &*self.collection;
        let seq = change_in(&tx, c).await?;
        let id = add_faces(&tx, c, seq, name, &rows).await?;
        let faces = face_count(&tx, id).await?;
        tx.commit().await.map_err(pg_err)?;
        Ok(Enrolled { seq, faces })
    }

    async fn remove(&self, name: &str) -> Result<usize, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let c = &*self.collection;
        let seq = change_in(&tx, c).await?;
        let Some(id) = identity_id(&tx, c, name).await? else {
            return Err(FaceStoreError::NotFound(format!("no identity {name:?}")));
        };
        let removed = tx
            .execute("DELETE FROM facerec_faces WHERE identity_id = $1", &[&id])
            .await
            .map_err(pg_err)?;
        tx.execute("DELETE FROM facerec_identities WHERE id = $1", &[&id])
            .await
            .map_err(pg_err)?;
        // Where it was seen stays, as unknown faces, matched again against the rest of the
        // gallery by the re-tagger (so are the faces it was nearest to).
        tx.execute(
            "UPDATE facerec_seen_faces
             SET identity_id = NULL, nearest_id = NULL, distance = NULL, stale = true
             WHERE nearest_id = $1 OR identity_id = $1",
            &[&id],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO facerec_changes (seq, collection, kind, identity, created_ms)
             VALUES ($1, $2, 'remove', $3, $4)",
            &[&seq, &c, &name, &now_ms()],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(removed as usize)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<usize, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let c = &*self.collection;
        let seq = change_in(&tx, c).await?;
        let Some(id) = identity_id(&tx, c, from).await? else {
            return Err(FaceStoreError::NotFound(format!("no identity {from:?}")));
        };
        let faces = face_count(&tx, id).await?;
        if from == to {
            return Ok(faces);
        }
        if identity_id(&tx, c, to).await?.is_some() {
            return Err(FaceStoreError::Conflict(format!(
                "an identity {to:?} exists"
            )));
        }
        tx.execute(
            "UPDATE facerec_identities SET name = $1 WHERE id = $2",
            &[&to, &id],
        )
        .await
        .map_err(pg_err)?;
        tx.execute(
            "INSERT INTO facerec_changes (seq, collection, kind, identity, renamed_to, created_ms)
             VALUES ($1, $2, 'rename', $3, $4, $5)",
            &[&seq, &c, &from, &to, &now_ms()],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(faces)
    }

    async fn load(&self, model_id: &str) -> Result<(Gallery, i64), FaceStoreError> {
        use futures_util::TryStreamExt;
        let mut client = self.pool.get().await.map_err(pool_err)?;
        // One snapshot: the rows and the counter as of one commit.
        let tx = snapshot(&mut client).await?;
        let c: &str = &self.collection;
        collection_row(&tx, c, "").await?;
        let seq: i64 = tx
            .query_one("SELECT last FROM facerec_counter WHERE id = 1", &[])
            .await
            .map_err(pg_err)?
            .get(0);
        // Streamed: a million rows are never held at once.
        let rows = tx
            .query_raw(
                "SELECT i.name, f.embedding, f.side FROM facerec_faces f
                 JOIN facerec_identities i ON i.id = f.identity_id
                 WHERE i.collection = $1 ORDER BY f.seq, f.id",
                [&c as &(dyn tokio_postgres::types::ToSql + Sync)],
            )
            .await
            .map_err(pg_err)?;
        let mut rows = std::pin::pin!(rows);
        let mut gallery = Gallery::new(model_id);
        while let Some(row) = rows.try_next().await.map_err(pg_err)? {
            let name: &str = row.get(0);
            let bytes: &[u8] = row.get(1);
            let side: f32 = row.get(2);
            gallery.add_face(name, &decode(bytes)?, side);
        }
        tx.commit().await.map_err(pg_err)?;
        Ok((gallery, seq))
    }

    async fn changes(&self, after: i64, limit: usize) -> Result<Vec<Change>, FaceStoreError> {
        let limit = limit.max(1) as i64;
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let c: &str = &self.collection;
        // A collection deleted and created again since `after`: its feed does not continue
        // the one followed (0: the whole feed).
        let created = collection_row(&tx, c, "").await?.0;
        if after > 0 && created > after {
            return Err(no_collection(c));
        }
        let upto: i64 = tx
            .query_opt(
                "SELECT seq FROM facerec_changes WHERE collection = $3 AND seq > $1
                 ORDER BY seq LIMIT 1 OFFSET $2",
                &[&after, &(limit - 1), &c],
            )
            .await
            .map_err(pg_err)?
            .map_or(i64::MAX, |r| r.get(0));
        let rows = tx
            .query(
                "SELECT c.seq, c.kind, c.identity, c.renamed_to, f.embedding, f.side
                 FROM facerec_changes c LEFT JOIN facerec_faces f ON f.seq = c.seq
                 WHERE c.collection = $3 AND c.seq > $1 AND c.seq <= $2
                 ORDER BY c.seq, f.id",
                &[&after, &upto, &c],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        group_changes(rows.into_iter().map(|r| ChangeRow {
            seq: r.get(0),
            kind: r.get(1),
            identity: r.get(2),
            renamed_to: r.get(3),
            embedding: r.get(4),
            side: r.get(5),
        }))
    }

    async fn import_once(&self, gallery: &Gallery) -> Result<Option<usize>, FaceStoreError> {
        let runs = runs_of(gallery);
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The counter's lock first: two processes importing at once take turns, and the
        // second finds the mark.
        tx.query_one(
            "SELECT last FROM facerec_counter WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(pg_err)?;
        let done = tx
            .query_opt(
                "SELECT value FROM facerec_meta WHERE key = 'legacy_import'",
                &[],
            )
            .await
            .map_err(pg_err)?;
        if done.is_some() {
            return Ok(None);
        }
        collection_row(&tx, &self.collection, " FOR UPDATE").await?;
        let mut faces = 0;
        for chunk in runs.chunks(IMPORT_RUNS) {
            faces += import_runs(&tx, &self.collection, chunk).await?;
        }
        tx.execute(
            "INSERT INTO facerec_meta (key, value) VALUES ('legacy_import', $1)",
            &[&format!("{faces} faces, {} ms", now_ms())],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        // Statistics for the planner at once (autovacuum comes later): without them the
        // change feed's query scans the whole feed after a large import.
        client
            .batch_execute("ANALYZE facerec_identities, facerec_faces, facerec_changes")
            .await
            .map_err(pg_err)?;
        Ok(Some(faces))
    }

    async fn status(&self) -> Result<StoreStatus, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let row = client
            .query_one(
                "SELECT (SELECT COALESCE(MAX(version), 0)::BIGINT FROM facerec_schema),
                        (SELECT COUNT(*) FROM facerec_identities),
                        (SELECT COUNT(*) FROM facerec_faces),
                        (SELECT last FROM facerec_counter WHERE id = 1)",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(StoreStatus {
            schema: row.get(0),
            identities: row.get::<_, i64>(1) as u64,
            faces: row.get::<_, i64>(2) as u64,
            seq: row.get(3),
        })
    }

    async fn record_seen(&self, faces: &[SeenFace]) -> Result<usize, FaceStoreError> {
        if faces.is_empty() {
            return Ok(0);
        }
        let col = |f: fn(&SeenFace) -> f32| faces.iter().map(f).collect::<Vec<f32>>();
        let request: Vec<&str> = faces.iter().map(|f| f.request_id.as_str()).collect();
        let index: Vec<i32> = faces.iter().map(|f| f.face_index as i32).collect();
        let batch: Vec<Option<&str>> = faces.iter().map(|f| f.batch.as_deref()).collect();
        let filename: Vec<&str> = faces.iter().map(|f| f.filename.as_str()).collect();
        let (x, y, w, h) = (
            col(|f| f.bbox[0]),
            col(|f| f.bbox[1]),
            col(|f| f.bbox[2]),
            col(|f| f.bbox[3]),
        );
        let (score, side) = (col(|f| f.score), col(|f| f.side));
        let embedding: Vec<Vec<u8>> = faces.iter().map(|f| encode(&f.embedding)).collect();
        let identity: Vec<Option<&str>> = faces.iter().map(|f| f.identity.as_deref()).collect();
        let distance: Vec<Option<f32>> = faces.iter().map(|f| f.distance).collect();
        let seen: Vec<i64> = faces.iter().map(|f| f.seen_ms).collect();
        let nearest: Vec<Option<&str>> = faces.iter().map(|f| f.nearest.as_deref()).collect();
        let gallery: Vec<i64> = faces.iter().map(|f| f.gallery_seq).collect();
        let quality = |f: fn(&super::FaceQuality) -> f32| -> Vec<Option<f32>> {
            faces.iter().map(|s| s.quality.as_ref().map(f)).collect()
        };
        let (yaw, roll, sharp) = (
            quality(|q| q.yaw),
            quality(|q| q.roll),
            quality(|q| q.sharpness),
        );
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The collection's row shared-locked to the commit: a change in it committing
        // meanwhile waits, so a face matched against a gallery behind the last change is
        // marked stale, and the re-tagger, which starts after that change, sees it. A
        // collection deleted since the faces were matched keeps nothing.
        let c: &str = &self.collection;
        let last = match collection_row(&tx, c, " FOR SHARE").await {
            Ok((_, last, _, _)) => last,
            Err(FaceStoreError::NotFound(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        let insert = tx
            .prepare_cached(
                "INSERT INTO facerec_seen_faces (request_id, face_index, batch, filename, box_x,
                     box_y, box_w, box_h, score, side, embedding, identity_id, distance, seen_ms,
                     nearest_id, gallery_seq, stale, collection, yaw, roll, sharpness)
                 SELECT t.r, t.i, t.b, t.f, t.x, t.y, t.w, t.h, t.s, t.d, t.e, ids.id, t.dist, t.ms,
                        near.id, t.g, t.g < $17, $18, t.yaw, t.roll, t.sharp
                 FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::real[],
                             $6::real[], $7::real[], $8::real[], $9::real[], $10::real[],
                             $11::bytea[], $12::text[], $13::real[], $14::bigint[], $15::text[],
                             $16::bigint[], $19::real[], $20::real[], $21::real[])
                      WITH ORDINALITY AS t(r, i, b, f, x, y, w, h, s, d, e, n, dist, ms, nn, g,
                                           yaw, roll, sharp, o)
                 LEFT JOIN facerec_identities ids
                        ON ids.collection = $18 AND ids.name = t.n
                 LEFT JOIN facerec_identities near
                        ON near.collection = $18 AND near.name = t.nn
                 ORDER BY t.o
                 ON CONFLICT (request_id, face_index) DO NOTHING",
            )
            .await
            .map_err(pg_err)?;
        let added = tx
            .execute(
                &insert,
                &[
                    &request, &index, &batch, &filename, &x, &y, &w, &h, &score, &side, &embedding,
                    &identity, &distance, &seen, &nearest, &gallery, &last, &c, &yaw, &roll,
                    &sharp,
                ],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(added as usize)
    }

    async fn appearances(
        &self,
        name: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Appearance>, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(pg_err)?;
        let Some(id) = identity_id(&tx, &self.collection, name).await? else {
            return Err(FaceStoreError::NotFound(format!("no identity {name:?}")));
        };
        let rows = tx
            .query(
                format!(
                    "SELECT {APPEARANCE} FROM facerec_seen_faces s
                     WHERE s.identity_id = $1 AND s.id < $2 ORDER BY s.id DESC LIMIT $3"
                )
                .as_str(),
                &[&id, &before.unwrap_or(i64::MAX), &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(rows.iter().map(appearance).collect())
    }

    async fn forget_seen_before(&self, cutoff_ms: i64) -> Result<u64, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "DELETE FROM facerec_seen_faces WHERE seen_ms < $1",
                &[&cutoff_ms],
            )
            .await
            .map_err(pg_err)
    }

    async fn retag_lease(&self, progress: &RetagProgress) -> Result<bool, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The collection's row locked to the commit.
        let c: &str = &self.collection;
        if let (_, _, _, Some(held)) = collection_row(&tx, c, " FOR UPDATE").await?
            && !held.yields_to(&progress.owner, now_ms())
        {
            return Ok(false);
        }
        tx.execute(
            "UPDATE facerec_collections SET retag_lease = $1 WHERE name = $2",
            &[&serde_json::to_string(progress).unwrap_or_default(), &c],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(true)
    }

    async fn finish_retag(&self, owner: &str, target: Option<i64>) -> Result<(), FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let c: &str = &self.collection;
        let (_, _, _, held) = collection_row(&tx, c, " FOR UPDATE").await?;
        if let Some(target) = target {
            tx.execute(
                "UPDATE facerec_collections SET retag_seq = GREATEST(retag_seq, $1) WHERE name = $2",
                &[&target, &c],
            )
            .await
            .map_err(pg_err)?;
        }
        if held.is_some_and(|l| l.owner == owner) {
            tx.execute(
                "UPDATE facerec_collections SET retag_lease = NULL WHERE name = $1",
                &[&c],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)
    }

    async fn retag_plan(&self) -> Result<RetagPlan, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        analyze_if_unknown(&client).await?;
        // One snapshot: the counts and faces as of one commit.
        let tx = snapshot(&mut client).await?;
        let c: &str = &self.collection;
        let (_, target, cursor, _) = collection_row(&tx, c, "").await?;
        let stale = tx
            .query_one(
                "SELECT COUNT(*) FROM facerec_seen_faces WHERE stale AND collection = $1",
                &[&c],
            )
            .await
            .map_err(pg_err)?
            .get::<_, i64>(0) as u64;
        let row = tx
            .query_one(
                "SELECT COUNT(*), MIN(gallery_seq) FROM facerec_seen_faces
                 WHERE NOT stale AND gallery_seq < $1 AND collection = $2",
                &[&target, &c],
            )
            .await
            .map_err(pg_err)?;
        let (behind, oldest): (i64, Option<i64>) = (row.get(0), row.get(1));
        // No seen face behind: no face to read.
        let faces_after = oldest.map_or(target, |o| o.max(cursor));
        let faces = tx
            .query(
                "SELECT f.seq, f.identity_id, f.embedding, f.side FROM facerec_faces f
                 JOIN facerec_identities i ON i.id = f.identity_id
                 WHERE i.collection = $3 AND f.seq > $1 AND f.seq <= $2
                 ORDER BY f.seq, f.id",
                &[&faces_after, &target, &c],
            )
            .await
            .map_err(pg_err)?
            .into_iter()
            .map(|r| {
                Ok(StoredFace {
                    seq: r.get(0),
                    identity_id: r.get(1),
                    embedding: decode(r.get(2))?,
                    side: r.get(3),
                })
            })
            .collect::<Result<Vec<_>, FaceStoreError>>()?;
        let identities = tx
            .query(
                "SELECT name, id FROM facerec_identities WHERE collection = $1",
                &[&c],
            )
            .await
            .map_err(pg_err)?
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        tx.commit().await.map_err(pg_err)?;
        Ok(RetagPlan {
            cursor,
            target,
            faces,
            faces_after,
            stale,
            behind: behind as u64,
            identities,
        })
    }

    async fn seen_page(
        &self,
        scan: SeenScan,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredSeen>, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let (stale, below) = match scan {
            SeenScan::Stale => (true, i64::MAX),
            SeenScan::Before(target) => (false, target),
        };
        let rows = client
            .query(
                "SELECT id, embedding, side, identity_id, nearest_id, distance, gallery_seq
                 FROM facerec_seen_faces
                 WHERE stale = $1 AND ($1 OR gallery_seq < $2) AND id > $3 AND collection = $5
                 ORDER BY id LIMIT $4",
                &[&stale, &below, &after, &(limit as i64), &&*self.collection],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredSeen {
                    id: r.get(0),
                    embedding: decode(r.get(1))?,
                    side: r.get(2),
                    identity_id: r.get(3),
                    nearest_id: r.get(4),
                    distance: r.get(5),
                    gallery_seq: r.get(6),
                })
            })
            .collect()
    }

    async fn write_retags(&self, retags: &[Retag]) -> Result<usize, FaceStoreError> {
        if retags.is_empty() {
            return Ok(0);
        }
        let id: Vec<i64> = retags.iter().map(|r| r.id).collect();
        let identity: Vec<Option<i64>> = retags.iter().map(|r| r.identity_id).collect();
        let nearest: Vec<Option<i64>> = retags.iter().map(|r| r.nearest_id).collect();
        let distance: Vec<Option<f32>> = retags.iter().map(|r| r.distance).collect();
        let gallery: Vec<i64> = retags.iter().map(|r| r.rematched.unwrap_or(0)).collect();
        let stale: Vec<bool> = retags.iter().map(|r| r.rematched.is_some()).collect();
        let client = self.pool.get().await.map_err(pool_err)?;
        // One statement over arrays: an identity removed meanwhile is not tagged, a face
        // whose nearest identity went stays stale.
        let changed = client
            .execute(
                "UPDATE facerec_seen_faces s SET
                     identity_id = ids.id,
                     nearest_id = t.n,
                     distance = t.d,
                     gallery_seq = GREATEST(s.gallery_seq, t.g),
                     stale = (t.n IS NOT NULL AND near.id IS NULL)
                 FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::real[], $5::bigint[],
                             $6::bool[]) AS t(id, i, n, d, g, st)
                 LEFT JOIN facerec_identities ids ON ids.id = t.i
                 LEFT JOIN facerec_identities near ON near.id = t.n
                 WHERE s.id = t.id AND s.stale = t.st
                   AND (t.st OR s.distance IS NULL OR s.distance > t.d)",
                &[&id, &identity, &nearest, &distance, &gallery, &stale],
            )
            .await
            .map_err(pg_err)?;
        Ok(changed as usize)
    }

    async fn retag_status(&self) -> Result<RetagStatus, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let c: &str = &self.collection;
        let (_, latest, cursor, lease) = collection_row(&tx, c, "").await?;
        let stale: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM facerec_seen_faces WHERE stale AND collection = $1",
                &[&c],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        tx.commit().await.map_err(pg_err)?;
        Ok(RetagStatus {
            cursor,
            latest,
            stale: stale as u64,
            running: lease.filter(|l| l.until_ms >= now_ms()),
        })
    }

    async fn seen_embeddings(
        &self,
        filter: &SeenFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                "SELECT id, embedding FROM facerec_seen_faces
                 WHERE id > $1 AND ($2::TEXT IS NULL OR batch = $2)
                   AND ($3::BIGINT IS NULL OR seen_ms >= $3)
                   AND ($4::BIGINT IS NULL OR seen_ms < $4)
                   AND collection = $6
                 ORDER BY id LIMIT $5",
                &[
                    &after,
                    &filter.batch,
                    &filter.since_ms,
                    &filter.until_ms,
                    &(limit as i64),
                    &&*self.collection,
                ],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| Ok((r.get(0), decode(r.get(1))?)))
            .collect()
    }

    async fn seen_faces(&self, ids: &[i64]) -> Result<Vec<SeenRecord>, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        let rows = client
            .query(
                format!(
                    "SELECT {APPEARANCE}, i.name, s.side, s.embedding
                     FROM facerec_seen_faces s
                     LEFT JOIN facerec_identities i ON i.id = s.identity_id
                     WHERE s.id = ANY($1) AND s.collection = $2"
                )
                .as_str(),
                &[&ids, &&*self.collection],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| {
                Ok(SeenRecord {
                    at: appearance(&r),
                    identity: r.get(15),
                    side: r.get(16),
                    embedding: decode(r.get(17))?,
                })
            })
            .collect()
    }

    async fn forget_seen_of_batch(&self, batch: &str) -> Result<u64, FaceStoreError> {
        let client = self.pool.get().await.map_err(pool_err)?;
        client
            .execute(
                "DELETE FROM facerec_seen_faces WHERE batch = $1 AND collection = $2",
                &[&batch, &&*self.collection],
            )
            .await
            .map_err(pg_err)
    }

    async fn unknown_faces(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<UnknownFace>, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let c: &str = &self.collection;
        collection_row(&tx, c, "").await?;
        let rows = tx
            .query(
                "SELECT id, request_id, face_index, embedding, side, yaw, roll, sharpness,
                        group_pin
                 FROM facerec_seen_faces
                 WHERE collection = $1 AND identity_id IS NULL AND id > $2
                   AND (group_pin IS NULL OR group_pin <> 0)
                 ORDER BY id LIMIT $3",
                &[&c, &after, &(limit as i64)],
            )
            .await
            .map_err(pg_err)?;
        rows.into_iter()
            .map(|r| {
                let quality = super::quality_of(r.get(5), r.get(6), r.get(7));
                Ok(UnknownFace {
                    id: r.get(0),
                    request_id: r.get(1),
                    face_index: r.get::<_, i32>(2) as u32,
                    embedding: decode(r.get(3))?,
                    side: r.get(4),
                    quality,
                    pin: r.get(8),
                })
            })
            .collect()
    }

    async fn unknown_summary(&self, up_to: i64) -> Result<UnknownSummary, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let c: &str = &self.collection;
        let version: i64 = tx
            .query_opt(
                "SELECT group_version FROM facerec_collections WHERE name = $1",
                &[&c],
            )
            .await
            .map_err(pg_err)?
            .ok_or_else(|| no_collection(c))?
            .get(0);
        let r = tx
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE id <= $2),
                        COALESCE(SUM(id) FILTER (WHERE id <= $2), 0)::BIGINT,
                        COALESCE(MAX(id), 0)::BIGINT
                 FROM facerec_seen_faces
                 WHERE collection = $1 AND identity_id IS NULL
                   AND (group_pin IS NULL OR group_pin <> 0)",
                &[&c, &up_to],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(UnknownSummary {
            count: r.get::<_, i64>(0) as u64,
            id_sum: r.get(1),
            last_id: r.get(2),
            version,
        })
    }

    async fn unknown_pins(&self, up_to: i64) -> Result<Vec<(i64, Option<i64>)>, FaceStoreError> {
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = snapshot(&mut client).await?;
        let c: &str = &self.collection;
        collection_row(&tx, c, "").await?;
        let rows = tx
            .query(
                "SELECT id, group_pin FROM facerec_seen_faces
                 WHERE collection = $1 AND identity_id IS NULL AND id <= $2
                   AND (group_pin IS NULL OR group_pin <> 0)
                 ORDER BY id",
                &[&c, &up_to],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn pin_faces(&self, pins: &[(i64, Pin)]) -> Result<u64, FaceStoreError> {
        check_pins(pins)?;
        let mut client = self.pool.get().await.map_err(pool_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let c: &str = &self.collection;
        let version: i64 = tx
            .query_opt(
                "UPDATE facerec_collections SET group_version = group_version + 1
                 WHERE name = $1 RETURNING group_version",
                &[&c],
            )
            .await
            .map_err(pg_err)?
            .ok_or_else(|| no_collection(c))?
            .get(0);
        let ids: Vec<i64> = pins.iter().map(|p| p.0).collect();
        let values: Vec<i64> = pins.iter().map(|p| pin_value(version, p.1)).collect();
        let pinned = tx
            .execute(
                "UPDATE facerec_seen_faces s SET group_pin = p.pin
                 FROM unnest($1::BIGINT[], $2::BIGINT[]) AS p(id, pin)
                 WHERE s.id = p.id AND s.collection = $3",
                &[&ids, &values, &c],
            )
            .await
            .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(pinned)
    }
}
