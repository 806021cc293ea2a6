//! The face store on SQLite: one file (WAL mode, so a killed process loses no committed
//! row), the embedded default's (`facerec up` keeps it at `--data/faces.db`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use facerec_contract::Gallery;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    Appearance, Change, ChangeRow, CollectionInfo, DEFAULT_COLLECTION, Enrolled, FaceStore,
    FaceStoreError, Migrations, NewFace, Pin, Retag, RetagPlan, RetagProgress, RetagStatus,
    SeenFace, SeenFilter, SeenRecord, SeenScan, StoreStatus, StoredFace, StoredSeen, UnknownFace,
    UnknownSummary, check_collection_name, check_faces, check_pins, decode, encode, group_changes,
    model_mismatch, no_collection, now_ms, pin_value,
};

const MIGRATIONS: Migrations = Migrations(&[
    (1, include_str!("../../migrations/sqlite/0001_gallery.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_seen_faces.sql"),
    ),
    (3, include_str!("../../migrations/sqlite/0003_retag.sql")),
    (
        4,
        include_str!("../../migrations/sqlite/0004_collections.sql"),
    ),
    (5, include_str!("../../migrations/sqlite/0005_groups.sql")),
]);

fn db_err(e: rusqlite::Error) -> FaceStoreError {
    FaceStoreError::Unavailable(format!("sqlite: {e}"))
}

/// The face store in one SQLite file, working in one collection.
#[derive(Clone)]
pub struct SqliteFaces {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    collection: Arc<str>,
}

impl SqliteFaces {
    /// Opens (creating) the file, applies migrations and checks the recognition model.
    pub async fn open(path: &Path, model_id: &str) -> Result<Self, FaceStoreError> {
        let (p, model) = (path.to_path_buf(), model_id.to_string());
        let conn = tokio::task::spawn_blocking(move || open_blocking(&p, &model))
            .await
            .map_err(|e| FaceStoreError::Unavailable(format!("opening the face store: {e}")))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
            collection: DEFAULT_COLLECTION.into(),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, FaceStoreError> + Send + 'static,
    ) -> Result<T, FaceStoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| FaceStoreError::Unavailable(format!("face store task failed: {e}")))?
    }
}

fn open_blocking(path: &Path, model_id: &str) -> Result<Connection, FaceStoreError> {
    let what = format!("the face store {}", path.display());
    let mut conn = Connection::open(path)
        .map_err(|e| FaceStoreError::Unavailable(format!("opening {what}: {e}")))?;
    let setup = |conn: &mut Connection| -> rusqlite::Result<()> {
        // WAL: a commit is one append and survives a killed process; readers never wait
        // for the writer. Several processes may share the file (busy_timeout).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(())
    };
    setup(&mut conn).map_err(|e| FaceStoreError::Unavailable(format!("{what}: {e}")))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS facerec_schema (version INTEGER NOT NULL)")
        .map_err(db_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM facerec_schema",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    for (version, sql) in MIGRATIONS.pending(current, &what)? {
        tx.execute_batch(sql)
            .map_err(|e| FaceStoreError::Schema(format!("{what}: migration {version}: {e}")))?;
        tx.execute(
            "INSERT INTO facerec_schema (version) VALUES (?1)",
            [version],
        )
        .map_err(db_err)?;
        tracing::info!(store = %path.display(), version, "face store migrated");
    }
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM facerec_meta WHERE key = 'model_id'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    let faces: i64 = tx
        .query_row("SELECT COUNT(*) FROM facerec_faces", [], |r| r.get(0))
        .map_err(db_err)?;
    if let Some(e) = stored
        .as_deref()
        .and_then(|s| model_mismatch(s, model_id, faces as u64))
    {
        return Err(e);
    }
    tx.execute(
        "INSERT INTO facerec_meta (key, value) VALUES ('model_id', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [model_id],
    )
    .map_err(db_err)?;
    tx.commit().map_err(db_err)?;
    Ok(conn)
}

/// The schema and counts of the file at `path`, changing nothing; `None` when it holds no
/// face store yet (or does not exist).
pub(super) async fn probe(path: &Path) -> Result<Option<StoreStatus>, FaceStoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(db_err)?;
        let exists: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'facerec_counter'",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        if !exists {
            return Ok(None);
        }
        status_of(&conn).map(Some)
    })
    .await
    .map_err(|e| FaceStoreError::Unavailable(format!("face store task failed: {e}")))?
}

fn status_of(conn: &Connection) -> Result<StoreStatus, FaceStoreError> {
    let one = |sql: &str| -> Result<i64, FaceStoreError> {
        conn.query_row(sql, [], |r| r.get(0)).map_err(db_err)
    };
    Ok(StoreStatus {
        schema: one("SELECT COALESCE(MAX(version), 0) FROM facerec_schema")?,
        identities: one("SELECT COUNT(*) FROM facerec_identities")? as u64,
        faces: one("SELECT COUNT(*) FROM facerec_faces")? as u64,
        seq: one("SELECT last FROM facerec_counter WHERE id = 1")?,
    })
}

/// A write transaction with the change's number, in collection `c` (`NotFound` when it
/// does not exist): the counter's row is written first, so SQLite's one writer holds it to
/// the commit; the collection's last change is set to it.
fn begin_change<'a>(
    conn: &'a mut Connection,
    c: &str,
) -> Result<(Transaction<'a>, i64), FaceStoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let seq = next_seq(&tx)?;
    let found = tx
        .execute(
            "UPDATE facerec_collections SET last_seq = ?1 WHERE name = ?2",
            params![seq, c],
        )
        .map_err(db_err)?;
    if found == 0 {
        return Err(no_collection(c));
    }
    Ok((tx, seq))
}

/// Takes the next change number.
fn next_seq(tx: &Transaction<'_>) -> Result<i64, FaceStoreError> {
    tx.query_row(
        "UPDATE facerec_counter SET last = last + 1 WHERE id = 1 RETURNING last",
        [],
        |r| r.get(0),
    )
    .map_err(db_err)
}

fn identity_id(tx: &Transaction<'_>, c: &str, name: &str) -> Result<Option<i64>, FaceStoreError> {
    tx.query_row(
        "SELECT id FROM facerec_identities WHERE collection = ?1 AND name = ?2",
        [c, name],
        |r| r.get(0),
    )
    .optional()
    .map_err(db_err)
}

/// A collection's row: (created_seq, last_seq, retag_seq, lease); `NotFound` when there
/// is none.
fn collection_row(
    conn: &Connection,
    c: &str,
) -> Result<(i64, i64, i64, Option<RetagProgress>), FaceStoreError> {
    let row: Option<(i64, i64, i64, Option<String>)> = conn
        .query_row(
            "SELECT created_seq, last_seq, retag_seq, retag_lease FROM facerec_collections
             WHERE name = ?1",
            [c],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
        .map_err(db_err)?;
    let (created, last, cursor, lease) = row.ok_or_else(|| no_collection(c))?;
    let lease = lease.and_then(|v| serde_json::from_str(&v).ok());
    Ok((created, last, cursor, lease))
}

/// The re-tagging lease of collection `c` and its progress, if a process took it.
fn lease(conn: &Connection, c: &str) -> Result<Option<RetagProgress>, FaceStoreError> {
    Ok(collection_row(conn, c)?.3)
}

/// The columns of a seen face's place ([`appearance`]).
const APPEARANCE: &str = "s.id, s.request_id, s.face_index, s.batch, s.filename, s.box_x, s.box_y,
    s.box_w, s.box_h, s.score, s.distance, s.seen_ms, s.yaw, s.roll, s.sharpness";

/// A seen face's place from a row whose first 15 columns are `APPEARANCE`'s.
fn appearance(r: &rusqlite::Row<'_>) -> rusqlite::Result<Appearance> {
    let quality = super::quality_of(r.get(12)?, r.get(13)?, r.get(14)?);
    Ok(Appearance {
        quality,
        id: r.get(0)?,
        request_id: r.get(1)?,
        face_index: r.get(2)?,
        batch: r.get(3)?,
        filename: r.get(4)?,
        bbox: [r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?],
        score: r.get(9)?,
        distance: r.get(10)?,
        seen_ms: r.get(11)?,
    })
}

/// Seen faces of collection `c` waiting to be matched again.
fn stale_count(conn: &Connection, c: &str) -> Result<u64, FaceStoreError> {
    conn.query_row(
        "SELECT COUNT(*) FROM facerec_seen_faces WHERE stale = 1 AND collection = ?1",
        [c],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n as u64)
    .map_err(db_err)
}

fn face_count(tx: &Transaction<'_>, id: i64) -> Result<usize, FaceStoreError> {
    let n: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM facerec_faces WHERE identity_id = ?1",
            [id],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    Ok(n as usize)
}

/// Adds faces to `name` in collection `c` under change `seq` (the change row included).
fn add_faces(
    tx: &Transaction<'_>,
    c: &str,
    seq: i64,
    name: &str,
    faces: impl IntoIterator<Item = (Vec<u8>, f32, Option<String>)>,
) -> Result<i64, FaceStoreError> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO facerec_identities (collection, name, created_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (collection, name) DO NOTHING",
        params![c, name, now],
    )
    .map_err(db_err)?;
    let id = identity_id(tx, c, name)?.ok_or_else(|| {
        FaceStoreError::Unavailable("an identity vanished mid-transaction".into())
    })?;
    let mut insert = tx
        .prepare_cached(
            "INSERT INTO facerec_faces (identity_id, seq, embedding, side, source, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(db_err)?;
    for (embedding, side, source) in faces {
        insert
            .execute(params![id, seq, embedding, side, source, now])
            .map_err(db_err)?;
    }
    tx.execute(
        "INSERT INTO facerec_changes (seq, collection, kind, identity, created_ms)
         VALUES (?1, ?2, 'enrol', ?3, ?4)",
        params![seq, c, name, now],
    )
    .map_err(db_err)?;
    Ok(id)
}

#[async_trait]
impl FaceStore for SqliteFaces {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn collection(&self) -> &str {
        &self.collection
    }

    fn in_collection(&self, name: &str) -> Arc<dyn FaceStore> {
        Arc::new(Self {
            collection: name.into(),
            ..self.clone()
        })
    }

    async fn collections(&self) -> Result<Vec<CollectionInfo>, FaceStoreError> {
        self.run(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT c.name, c.created_ms,
                        (SELECT COUNT(*) FROM facerec_identities i WHERE i.collection = c.name),
                        (SELECT COUNT(*) FROM facerec_faces f JOIN facerec_identities i
                            ON i.id = f.identity_id WHERE i.collection = c.name)
                     FROM facerec_collections c ORDER BY c.name",
                )
                .map_err(db_err)?;
            stmt.query_map([], |r| {
                Ok(CollectionInfo {
                    name: r.get(0)?,
                    created_ms: r.get(1)?,
                    identities: r.get::<_, i64>(2)? as u64,
                    faces: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(db_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db_err)
        })
        .await
    }

    async fn collection_names(&self) -> Result<Vec<String>, FaceStoreError> {
        self.run(|conn| {
            conn.prepare_cached("SELECT name FROM facerec_collections ORDER BY name")
                .map_err(db_err)?
                .query_map([], |r| r.get(0))
                .map_err(db_err)?
                .collect::<Result<Vec<String>, _>>()
                .map_err(db_err)
        })
        .await
    }

    async fn create_collection(&self, name: &str) -> Result<bool, FaceStoreError> {
        check_collection_name(name)?;
        let name = name.to_string();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            if collection_row(&tx, &name).is_ok() {
                return Ok(false);
            }
            let seq = next_seq(&tx)?;
            tx.execute(
                "INSERT INTO facerec_collections
                     (name, created_seq, last_seq, retag_seq, retag_lease, created_ms)
                 VALUES (?1, ?2, ?2, ?2, NULL, ?3)",
                params![name, seq, now_ms()],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn delete_collection(&self, name: &str) -> Result<CollectionInfo, FaceStoreError> {
        if name == DEFAULT_COLLECTION {
            return Err(FaceStoreError::Conflict(
                "the default collection cannot be deleted (remove its identities instead)".into(),
            ));
        }
        let info = self
            .collections()
            .await?
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| no_collection(name))?;
        let name = name.to_string();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            collection_row(&tx, &name)?;
            for sql in [
                "DELETE FROM facerec_seen_faces WHERE collection = ?1",
                "DELETE FROM facerec_faces WHERE identity_id IN
                     (SELECT id FROM facerec_identities WHERE collection = ?1)",
                "DELETE FROM facerec_identities WHERE collection = ?1",
                "DELETE FROM facerec_changes WHERE collection = ?1",
                "DELETE FROM facerec_collections WHERE name = ?1",
            ] {
                tx.execute(sql, [&name]).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)
        })
        .await?;
        Ok(info)
    }

    async fn enroll(&self, name: &str, faces: &[NewFace]) -> Result<Enrolled, FaceStoreError> {
        check_faces(faces)?;
        let name = name.to_string();
        let rows: Vec<_> = faces
            .iter()
            .map(|f| (encode(&f.embedding), f.side, f.source.clone()))
            .collect();
        let c = self.collection.clone();
        self.run(move |conn| {
            let (tx, seq) = begin_change(conn, &c)?;
            let id = add_faces(&tx, &c, seq, &name, rows)?;
            let faces = face_count(&tx, id)?;
            tx.commit().map_err(db_err)?;
            Ok(Enrolled { seq, faces })
        })
        .await
    }

    async fn remove(&self, name: &str) -> Result<usize, FaceStoreError> {
        let name = name.to_string();
        let c = self.collection.clone();
        self.run(move |conn| {
            let (tx, seq) = begin_change(conn, &c)?;
            let Some(id) = identity_id(&tx, &c, &name)? else {
                return Err(FaceStoreError::NotFound(format!("no identity {name:?}")));
            };
            let removed = tx
                .execute("DELETE FROM facerec_faces WHERE identity_id = ?1", [id])
                .map_err(db_err)?;
            tx.execute("DELETE FROM facerec_identities WHERE id = ?1", [id])
                .map_err(db_err)?;
            // Where it was seen stays, as unknown faces, matched again against the rest
            // of the gallery by the re-tagger (so are the faces it was nearest to).
            tx.execute(
                "UPDATE facerec_seen_faces
                 SET identity_id = NULL, nearest_id = NULL, distance = NULL, stale = 1
                 WHERE nearest_id = ?1 OR identity_id = ?1",
                [id],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO facerec_changes (seq, collection, kind, identity, created_ms)
                 VALUES (?1, ?2, 'remove', ?3, ?4)",
                params![seq, c, name, now_ms()],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(removed)
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<usize, FaceStoreError> {
        let (from, to) = (from.to_string(), to.to_string());
        let c = self.collection.clone();
        self.run(move |conn| {
            let (tx, seq) = begin_change(conn, &c)?;
            let Some(id) = identity_id(&tx, &c, &from)? else {
                return Err(FaceStoreError::NotFound(format!("no identity {from:?}")));
            };
            let faces = face_count(&tx, id)?;
            if from == to {
                return Ok(faces);
            }
            if identity_id(&tx, &c, &to)?.is_some() {
                return Err(FaceStoreError::Conflict(format!(
                    "an identity {to:?} exists"
                )));
            }
            tx.execute(
                "UPDATE facerec_identities SET name = ?1 WHERE id = ?2",
                params![to, id],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO facerec_changes (seq, collection, kind, identity, renamed_to, created_ms)
                 VALUES (?1, ?2, 'rename', ?3, ?4, ?5)",
                params![seq, c, from, to, now_ms()],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(faces)
        })
        .await
    }

    async fn load(&self, model_id: &str) -> Result<(Gallery, i64), FaceStoreError> {
        let model_id = model_id.to_string();
        let c = self.collection.clone();
        self.run(move |conn| {
            // One read transaction: the rows and the counter as of one commit.
            let tx = conn.transaction().map_err(db_err)?;
            collection_row(&tx, &c)?;
            let seq: i64 = tx
                .query_row("SELECT last FROM facerec_counter WHERE id = 1", [], |r| {
                    r.get(0)
                })
                .map_err(db_err)?;
            let mut gallery = Gallery::new(model_id);
            {
                let mut stmt = tx
                    .prepare(
                        "SELECT i.name, f.embedding, f.side FROM facerec_faces f
                         JOIN facerec_identities i ON i.id = f.identity_id
                         WHERE i.collection = ?1 ORDER BY f.seq, f.id",
                    )
                    .map_err(db_err)?;
                let mut rows = stmt.query([&*c]).map_err(db_err)?;
                while let Some(row) = rows.next().map_err(db_err)? {
                    let name: String = row.get(0).map_err(db_err)?;
                    let bytes: Vec<u8> = row.get(1).map_err(db_err)?;
                    let side: f64 = row.get(2).map_err(db_err)?;
                    gallery.add_face(&name, &decode(&bytes)?, side as f32);
                }
            }
            tx.commit().map_err(db_err)?;
            Ok((gallery, seq))
        })
        .await
    }

    async fn changes(&self, after: i64, limit: usize) -> Result<Vec<Change>, FaceStoreError> {
        let limit = limit.max(1) as i64;
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            // A collection deleted and created again since `after`: its feed does not
            // continue the one followed (0: the whole feed).
            let created = collection_row(&tx, &c)?.0;
            if after > 0 && created > after {
                return Err(no_collection(&c));
            }
            let upto: i64 = tx
                .query_row(
                    "SELECT seq FROM facerec_changes WHERE collection = ?3 AND seq > ?1
                     ORDER BY seq LIMIT 1 OFFSET ?2",
                    params![after, limit - 1, c],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?
                .unwrap_or(i64::MAX);
            let rows = {
                let mut stmt = tx
                    .prepare(
                        "SELECT c.seq, c.kind, c.identity, c.renamed_to, f.embedding, f.side
                         FROM facerec_changes c LEFT JOIN facerec_faces f ON f.seq = c.seq
                         WHERE c.collection = ?3 AND c.seq > ?1 AND c.seq <= ?2
                         ORDER BY c.seq, f.id",
                    )
                    .map_err(db_err)?;
                stmt.query_map(params![after, upto, c], |r| {
                    Ok(ChangeRow {
                        seq: r.get(0)?,
                        kind: r.get(1)?,
                        identity: r.get(2)?,
                        renamed_to: r.get(3)?,
                        embedding: r.get(4)?,
                        side: r.get::<_, Option<f64>>(5)?.map(|s| s as f32),
                    })
                })
                .map_err(db_err)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(db_err)?
            };
            tx.commit().map_err(db_err)?;
            group_changes(rows)
        })
        .await
    }

    async fn import_once(&self, gallery: &Gallery) -> Result<Option<usize>, FaceStoreError> {
        let runs = super::runs_of(gallery);
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let done: Option<String> = tx
                .query_row(
                    "SELECT value FROM facerec_meta WHERE key = 'legacy_import'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            if done.is_some() {
                return Ok(None);
            }
            collection_row(&tx, &c)?;
            let mut faces = 0;
            for (name, rows) in runs {
                let seq = next_seq(&tx)?;
                faces += rows.len();
                add_faces(
                    &tx,
                    &c,
                    seq,
                    &name,
                    rows.into_iter().map(|(e, s)| (e, s, None)),
                )?;
            }
            tx.execute(
                "UPDATE facerec_collections SET last_seq =
                     (SELECT last FROM facerec_counter WHERE id = 1) WHERE name = ?1",
                [&*c],
            )
            .map_err(db_err)?;
            tx.execute(
                "INSERT INTO facerec_meta (key, value) VALUES ('legacy_import', ?1)",
                [format!("{faces} faces, {} ms", now_ms())],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(Some(faces))
        })
        .await
    }

    async fn status(&self) -> Result<StoreStatus, FaceStoreError> {
        self.run(|conn| {
            // One read transaction: the counts as of one commit.
            let tx = conn.transaction().map_err(db_err)?;
            status_of(&tx)
        })
        .await
    }

    async fn record_seen(&self, faces: &[SeenFace]) -> Result<usize, FaceStoreError> {
        if faces.is_empty() {
            return Ok(0);
        }
        let faces = faces.to_vec();
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            // A collection deleted since the faces were matched keeps nothing.
            let last = match collection_row(&tx, &c) {
                Ok((_, last, _, _)) => last,
                Err(FaceStoreError::NotFound(_)) => return Ok(0),
                Err(e) => return Err(e),
            };
            let mut added = 0;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO facerec_seen_faces (id, request_id, face_index,
                             batch, filename, box_x, box_y, box_w, box_h, score, side, embedding,
                             identity_id, distance, seen_ms, nearest_id, gallery_seq, stale,
                             collection, yaw, roll, sharpness)
                         VALUES ((SELECT MAX(COALESCE((SELECT MAX(id) FROM facerec_seen_faces), 0),
                                             last) + 1
                                  FROM facerec_seen_high WHERE id = 1),
                             ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,
                             (SELECT id FROM facerec_identities
                              WHERE collection = ?18 AND name = ?12), ?13, ?14,
                             (SELECT id FROM facerec_identities
                              WHERE collection = ?18 AND name = ?15), ?16,
                             ?16 < ?17, ?18, ?19, ?20, ?21)",
                    )
                    .map_err(db_err)?;
                for f in &faces {
                    let [x, y, w, h] = f.bbox;
                    added += insert
                        .execute(params![
                            f.request_id,
                            f.face_index,
                            f.batch,
                            f.filename,
                            x,
                            y,
                            w,
                            h,
                            f.score,
                            f.side,
                            encode(&f.embedding),
                            f.identity,
                            f.distance,
                            f.seen_ms,
                            f.nearest,
                            f.gallery_seq,
                            last,
                            &*c,
                            f.quality.map(|q| q.yaw),
                            f.quality.map(|q| q.roll),
                            f.quality.map(|q| q.sharpness)
                        ])
                        .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(added)
        })
        .await
    }

    async fn appearances(
        &self,
        name: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Appearance>, FaceStoreError> {
        let name = name.to_string();
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let Some(id) = identity_id(&tx, &c, &name)? else {
                return Err(FaceStoreError::NotFound(format!("no identity {name:?}")));
            };
            let mut query = tx
                .prepare_cached(&format!(
                    "SELECT {APPEARANCE} FROM facerec_seen_faces s
                     WHERE s.identity_id = ?1 AND s.id < ?2 ORDER BY s.id DESC LIMIT ?3"
                ))
                .map_err(db_err)?;
            let rows = query
                .query_map(
                    params![id, before.unwrap_or(i64::MAX), limit as i64],
                    appearance,
                )
                .map_err(db_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(db_err)
        })
        .await
    }

    async fn forget_seen_before(&self, cutoff_ms: i64) -> Result<u64, FaceStoreError> {
        self.run(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM facerec_seen_faces WHERE seen_ms < ?1",
                    [cutoff_ms],
                )
                .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn retag_lease(&self, progress: &RetagProgress) -> Result<bool, FaceStoreError> {
        let progress = progress.clone();
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            if let Some(held) = lease(&tx, &c)?
                && !held.yields_to(&progress.owner, now_ms())
            {
                return Ok(false);
            }
            tx.execute(
                "UPDATE facerec_collections SET retag_lease = ?1 WHERE name = ?2",
                params![serde_json::to_string(&progress).unwrap_or_default(), c],
            )
            .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn finish_retag(&self, owner: &str, target: Option<i64>) -> Result<(), FaceStoreError> {
        let owner = owner.to_string();
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            if let Some(target) = target {
                tx.execute(
                    "UPDATE facerec_collections SET retag_seq = MAX(retag_seq, ?1) WHERE name = ?2",
                    params![target, c],
                )
                .map_err(db_err)?;
            }
            if lease(&tx, &c)?.is_some_and(|l| l.owner == owner) {
                tx.execute(
                    "UPDATE facerec_collections SET retag_lease = NULL WHERE name = ?1",
                    [&*c],
                )
                .map_err(db_err)?;
            }
            tx.commit().map_err(db_err)
        })
        .await
    }

    async fn retag_plan(&self) -> Result<RetagPlan, FaceStoreError> {
        let c = self.collection.clone();
        self.run(move |conn| {
            // One read transaction: the counts and faces as of one commit.
            let tx = conn.transaction().map_err(db_err)?;
            let (_, target, cursor, _) = collection_row(&tx, &c)?;
            let stale = stale_count(&tx, &c)?;
            let (behind, oldest): (i64, Option<i64>) = tx
                .query_row(
                    "SELECT COUNT(*), MIN(gallery_seq) FROM facerec_seen_faces
                     WHERE stale = 0 AND gallery_seq < ?1 AND collection = ?2",
                    params![target, c],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db_err)?;
            // No seen face behind: no face to read.
            let faces_after = oldest.map_or(target, |o| o.max(cursor));
            let faces = {
                let mut stmt = tx
                    .prepare(
                        "SELECT f.seq, f.identity_id, f.embedding, f.side FROM facerec_faces f
                         JOIN facerec_identities i ON i.id = f.identity_id
                         WHERE i.collection = ?3 AND f.seq > ?1 AND f.seq <= ?2
                         ORDER BY f.seq, f.id",
                    )
                    .map_err(db_err)?;
                let mut rows = stmt
                    .query(params![faces_after, target, c])
                    .map_err(db_err)?;
                let mut faces = Vec::new();
                while let Some(row) = rows.next().map_err(db_err)? {
                    let bytes: Vec<u8> = row.get(2).map_err(db_err)?;
                    faces.push(StoredFace {
                        seq: row.get(0).map_err(db_err)?,
                        identity_id: row.get(1).map_err(db_err)?,
                        embedding: decode(&bytes)?,
                        side: row.get::<_, f64>(3).map_err(db_err)? as f32,
                    });
                }
                faces
            };
            let identities = tx
                .prepare("SELECT name, id FROM facerec_identities WHERE collection = ?1")
                .map_err(db_err)?
                .query_map([&*c], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?
                .collect::<Result<_, _>>()
                .map_err(db_err)?;
            Ok(RetagPlan {
                cursor,
                target,
                faces,
                faces_after,
                stale,
                behind: behind as u64,
                identities,
            })
        })
        .await
    }

    async fn seen_page(
        &self,
        scan: SeenScan,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredSeen>, FaceStoreError> {
        let c = self.collection.clone();
        self.run(move |conn| {
            let (filter, arg) = match scan {
                // ?1 unused: SQLite binds by number.
                SeenScan::Stale => ("stale = 1", 0),
                SeenScan::Before(target) => ("stale = 0 AND gallery_seq < ?1", target),
            };
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT id, embedding, side, identity_id, nearest_id, distance, gallery_seq
                     FROM facerec_seen_faces WHERE {filter} AND id > ?2 AND collection = ?4
                     ORDER BY id LIMIT ?3"
                ))
                .map_err(db_err)?;
            let mut rows = stmt
                .query(params![arg, after, limit as i64, c])
                .map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db_err)? {
                let bytes: Vec<u8> = row.get(1).map_err(db_err)?;
                out.push(StoredSeen {
                    id: row.get(0).map_err(db_err)?,
                    embedding: decode(&bytes)?,
                    side: row.get::<_, f64>(2).map_err(db_err)? as f32,
                    identity_id: row.get(3).map_err(db_err)?,
                    nearest_id: row.get(4).map_err(db_err)?,
                    distance: row
                        .get::<_, Option<f64>>(5)
                        .map_err(db_err)?
                        .map(|d| d as f32),
                    gallery_seq: row.get(6).map_err(db_err)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn write_retags(&self, retags: &[Retag]) -> Result<usize, FaceStoreError> {
        if retags.is_empty() {
            return Ok(0);
        }
        let retags = retags.to_vec();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            let mut changed = 0;
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE facerec_seen_faces SET
                             identity_id = (SELECT id FROM facerec_identities WHERE id = ?2),
                             nearest_id = ?3,
                             distance = ?4,
                             gallery_seq = MAX(gallery_seq, ?5),
                             stale = CASE WHEN ?3 IS NULL
                                 OR EXISTS (SELECT 1 FROM facerec_identities WHERE id = ?3)
                                 THEN 0 ELSE 1 END
                         WHERE id = ?1 AND stale = ?6
                             AND (?6 = 1 OR distance IS NULL OR distance > ?4)",
                    )
                    .map_err(db_err)?;
                for r in &retags {
                    changed += update
                        .execute(params![
                            r.id,
                            r.identity_id,
                            r.nearest_id,
                            r.distance,
                            r.rematched.unwrap_or(0),
                            r.rematched.is_some() as i64
                        ])
                        .map_err(db_err)?;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(changed)
        })
        .await
    }

    async fn retag_status(&self) -> Result<RetagStatus, FaceStoreError> {
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let (_, latest, cursor, lease) = collection_row(&tx, &c)?;
            Ok(RetagStatus {
                cursor,
                latest,
                stale: stale_count(&tx, &c)?,
                running: lease.filter(|l| l.until_ms >= now_ms()),
            })
        })
        .await
    }

    async fn seen_embeddings(
        &self,
        filter: &SeenFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>, FaceStoreError> {
        let filter = filter.clone();
        let c = self.collection.to_string();
        self.run(move |conn| {
            let mut sql = String::from(
                "SELECT id, embedding FROM facerec_seen_faces WHERE id > ?1 AND collection = ?2",
            );
            let mut args: Vec<rusqlite::types::Value> = vec![after.into(), c.into()];
            if let Some(b) = filter.batch {
                args.push(b.into());
                sql += &format!(" AND batch = ?{}", args.len());
            }
            if let Some(t) = filter.since_ms {
                args.push(t.into());
                sql += &format!(" AND seen_ms >= ?{}", args.len());
            }
            if let Some(t) = filter.until_ms {
                args.push(t.into());
                sql += &format!(" AND seen_ms < ?{}", args.len());
            }
            args.push((limit as i64).into());
            sql += &format!(" ORDER BY id LIMIT ?{}", args.len());
            let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(args))
                .map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db_err)? {
                let bytes: Vec<u8> = row.get(1).map_err(db_err)?;
                out.push((row.get(0).map_err(db_err)?, decode(&bytes)?));
            }
            Ok(out)
        })
        .await
    }

    async fn seen_faces(&self, ids: &[i64]) -> Result<Vec<SeenRecord>, FaceStoreError> {
        let ids = ids.to_vec();
        let c = self.collection.clone();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {APPEARANCE}, i.name, s.side, s.embedding
                     FROM facerec_seen_faces s
                     LEFT JOIN facerec_identities i ON i.id = s.identity_id
                     WHERE s.id = ?1 AND s.collection = ?2"
                ))
                .map_err(db_err)?;
            let mut out = Vec::new();
            for id in ids {
                let row = stmt
                    .query_row(params![id, c], |r| {
                        Ok((
                            appearance(r)?,
                            r.get::<_, Option<String>>(15)?,
                            r.get::<_, f64>(16)? as f32,
                            r.get::<_, Vec<u8>>(17)?,
                        ))
                    })
                    .optional()
                    .map_err(db_err)?;
                if let Some((at, identity, side, bytes)) = row {
                    out.push(SeenRecord {
                        at,
                        identity,
                        side,
                        embedding: decode(&bytes)?,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn forget_seen_of_batch(&self, batch: &str) -> Result<u64, FaceStoreError> {
        let batch = batch.to_string();
        let c = self.collection.clone();
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM facerec_seen_faces WHERE batch = ?1 AND collection = ?2",
                params![batch, c],
            )
            .map(|n| n as u64)
            .map_err(db_err)
        })
        .await
    }

    async fn unknown_faces(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<UnknownFace>, FaceStoreError> {
        let c = self.collection.clone();
        self.run(move |conn| {
            collection_row(conn, &c)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, request_id, face_index, embedding, side, yaw, roll, sharpness,
                            group_pin
                     FROM facerec_seen_faces
                     WHERE collection = ?1 AND identity_id IS NULL AND id > ?2
                       AND (group_pin IS NULL OR group_pin <> 0)
                     ORDER BY id LIMIT ?3",
                )
                .map_err(db_err)?;
            let mut rows = stmt
                .query(params![c, after, limit as i64])
                .map_err(db_err)?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(db_err)? {
                let bytes: Vec<u8> = r.get(3).map_err(db_err)?;
                let quality = super::quality_of(
                    r.get(5).map_err(db_err)?,
                    r.get(6).map_err(db_err)?,
                    r.get(7).map_err(db_err)?,
                );
                out.push(UnknownFace {
                    id: r.get(0).map_err(db_err)?,
                    request_id: r.get(1).map_err(db_err)?,
                    face_index: r.get(2).map_err(db_err)?,
                    embedding: decode(&bytes)?,
                    side: r.get::<_, f64>(4).map_err(db_err)? as f32,
                    quality,
                    pin: r.get(8).map_err(db_err)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn unknown_summary(&self, up_to: i64) -> Result<UnknownSummary, FaceStoreError> {
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn.transaction().map_err(db_err)?;
            let version: i64 = tx
                .query_row(
                    "SELECT group_version FROM facerec_collections WHERE name = ?1",
                    [&*c],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?
                .ok_or_else(|| no_collection(&c))?;
            let (count, id_sum, last_id): (i64, i64, i64) = tx
                .query_row(
                    "SELECT COUNT(*) FILTER (WHERE id <= ?2),
                            COALESCE(SUM(id) FILTER (WHERE id <= ?2), 0),
                            COALESCE(MAX(id), 0)
                     FROM facerec_seen_faces
                     WHERE collection = ?1 AND identity_id IS NULL
                       AND (group_pin IS NULL OR group_pin <> 0)",
                    params![c, up_to],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .map_err(db_err)?;
            Ok(UnknownSummary {
                count: count as u64,
                id_sum,
                last_id,
                version,
            })
        })
        .await
    }

    async fn unknown_pins(&self, up_to: i64) -> Result<Vec<(i64, Option<i64>)>, FaceStoreError> {
        let c = self.collection.clone();
        self.run(move |conn| {
            collection_row(conn, &c)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, group_pin FROM facerec_seen_faces
                     WHERE collection = ?1 AND identity_id IS NULL AND id <= ?2
                       AND (group_pin IS NULL OR group_pin <> 0)
                     ORDER BY id",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![c, up_to], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
        })
        .await
    }

    async fn pin_faces(&self, pins: &[(i64, Pin)]) -> Result<u64, FaceStoreError> {
        check_pins(pins)?;
        let pins = pins.to_vec();
        let c = self.collection.clone();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(db_err)?;
            collection_row(&tx, &c)?;
            let version: i64 = tx
                .query_row(
                    "UPDATE facerec_collections SET group_version = group_version + 1
                     WHERE name = ?1 RETURNING group_version",
                    [&*c],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            let mut pinned = 0;
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE facerec_seen_faces SET group_pin = ?1
                         WHERE id = ?2 AND collection = ?3",
                    )
                    .map_err(db_err)?;
                for (id, pin) in pins {
                    pinned += stmt
                        .execute(params![pin_value(version, pin), id, c])
                        .map_err(db_err)? as u64;
                }
            }
            tx.commit().map_err(db_err)?;
            Ok(pinned)
        })
        .await
    }
}
