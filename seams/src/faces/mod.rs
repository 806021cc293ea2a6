//! The face store: enrolled identities and their faces as rows of a database — SQLite for
//! one machine ([`sqlite`]), PostgreSQL for a fleet ([`postgres`]) — behind one trait,
//! [`FaceStore`].
//!
//! Every change (an enrolment, a removal, a rename) is one small transaction that also
//! takes the next number of one counter and writes a row to a change feed. The counter's
//! row is locked until the transaction commits, so writers through any number of
//! processes are serialised and commit in the order of their numbers: a reader that has
//! seen change `n` has seen every change before it. Processes keep the gallery in memory
//! for matching ([`crate::GalleryHandle`]) and apply the feed from the last number they
//! applied, so an enrolment costs its own rows, whatever the gallery's size.
//!
//! One schema, versioned migrations (`seams/migrations/<database>/NNNN_*.sql`) applied at
//! start-up; a database whose schema is newer than the binary is refused.

pub mod groups;
pub mod postgres;
pub mod search;
pub mod sqlite;
mod tls;

use std::sync::Arc;

use async_trait::async_trait;
use facerec_contract::Gallery;
use facerec_contract::gallery::DIM;
pub use facerec_contract::report::FaceQuality;

/// A face to enrol: its embedding, its size in its source image (`FaceBox::side`) and
/// where it came from (a file name, for people reading the store).
#[derive(Debug, Clone, PartialEq)]
pub struct NewFace {
    pub embedding: Vec<f32>,
    pub side: f32,
    pub source: Option<String>,
}

/// What an enrolment did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrolled {
    /// The change's number in the feed.
    pub seq: i64,
    /// The identity's faces after the enrolment.
    pub faces: usize,
}

/// One entry of the change feed, in the order the changes committed.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Faces added to `name` (created if new); `faces` are (embedding, side) in the order
    /// they were enrolled. Empty when the faces were removed since.
    Enrolled {
        seq: i64,
        name: String,
        faces: Vec<(Vec<f32>, f32)>,
    },
    /// The identity and all its faces removed.
    Removed { seq: i64, name: String },
    /// The identity renamed, its faces kept.
    Renamed { seq: i64, from: String, to: String },
}

impl Change {
    pub fn seq(&self) -> i64 {
        match self {
            Change::Enrolled { seq, .. }
            | Change::Removed { seq, .. }
            | Change::Renamed { seq, .. } => *seq,
        }
    }

    /// Applies the change to an in-memory gallery.
    pub fn apply(&self, gallery: &mut Gallery) {
        match self {
            Change::Enrolled { name, faces, .. } => {
                for (embedding, side) in faces {
                    gallery.add_face(name, embedding, *side);
                }
            }
            Change::Removed { name, .. } => {
                gallery.remove(name);
            }
            Change::Renamed { from, to, .. } => gallery.rename(from, to),
        }
    }
}

/// A face recognised in an upload, as a worker records it (`FaceStore::record_seen`).
#[derive(Debug, Clone, PartialEq)]
pub struct SeenFace {
    /// The upload's request id and the face's place in its answer: the pair is recorded
    /// once, however often the request is answered.
    pub request_id: String,
    pub face_index: u32,
    /// The bulk job of the upload, if any.
    pub batch: Option<String>,
    pub filename: String,
    /// `[x, y, w, h]` in pixels of the upright image.
    pub bbox: [f32; 4],
    pub score: f32,
    /// The face's size (`FaceBox::side`).
    pub side: f32,
    pub embedding: Vec<f32>,
    /// The enrolled identity it was matched to, by name; `None`: unknown.
    pub identity: Option<String>,
    /// The distance to the nearest enrolled face, when there was a gallery.
    pub distance: Option<f32>,
    /// The identity of that nearest face (tagged or not), by name.
    pub nearest: Option<String>,
    /// The change the gallery it was matched against had reached
    /// ([`crate::GalleryHandle::snapshot`]): a face matched against a gallery behind the
    /// store is matched again by the re-tagger.
    pub gallery_seq: i64,
    pub seen_ms: i64,
    /// Its pose and sharpness, when measured.
    pub quality: Option<FaceQuality>,
}

/// One place an identity appears: a seen face, without its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Appearance {
    /// The seen face's id: newest first, and the cursor of the next page.
    pub id: i64,
    pub request_id: String,
    pub face_index: u32,
    pub batch: Option<String>,
    pub filename: String,
    pub bbox: [f32; 4],
    pub score: f32,
    pub distance: Option<f32>,
    pub seen_ms: i64,
    /// Its pose and sharpness, when measured.
    pub quality: Option<FaceQuality>,
}

/// A seen face as the re-tagger reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeen {
    pub id: i64,
    pub embedding: Vec<f32>,
    pub side: f32,
    pub identity_id: Option<i64>,
    pub nearest_id: Option<i64>,
    pub distance: Option<f32>,
    pub gallery_seq: i64,
}

/// An enrolled face as the re-tagger reads it: the change that enrolled it and its
/// identity's id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFace {
    pub seq: i64,
    pub identity_id: i64,
    pub embedding: Vec<f32>,
    pub side: f32,
}

/// Which seen faces a re-tagging page reads ([`FaceStore::seen_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeenScan {
    /// Those to match again against the whole gallery.
    Stale,
    /// The others matched against a gallery before change `.0`.
    Before(i64),
}

/// What a re-tagging pass has to do ([`FaceStore::retag_plan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RetagPlan {
    /// Every change up to here has reached every seen face not stale.
    pub cursor: i64,
    /// The last change committed: the pass brings the seen faces up to it.
    pub target: i64,
    /// The enrolled faces of the changes after `faces_after` up to `target`, in the order
    /// they were enrolled: every face a seen face to go through has not met yet.
    pub faces: Vec<StoredFace>,
    /// The later of the cursor and the oldest gallery a seen face to go through was
    /// matched against.
    pub faces_after: i64,
    /// Seen faces to match again against the whole gallery.
    pub stale: u64,
    /// Seen faces matched against a gallery before `target`, not stale.
    pub behind: u64,
    /// Every identity's id by name, as of `target`.
    pub identities: std::collections::HashMap<String, i64>,
}

/// One seen face's match after re-tagging ([`FaceStore::write_retags`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Retag {
    pub id: i64,
    /// The identity it is tagged with now (`None`: unknown).
    pub identity_id: Option<i64>,
    pub nearest_id: Option<i64>,
    /// `None`: there is no enrolled face to be near.
    pub distance: Option<f32>,
    /// `Some(target)` for a stale face matched again against the whole gallery as of the
    /// pass's target; `None` for a face that only met nearer faces enrolled since (written
    /// only if it is still not stale and the distance is smaller than the stored one).
    pub rematched: Option<i64>,
}

/// Where re-tagging stands ([`FaceStore::retag_status`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetagStatus {
    /// Every change up to here has reached the seen faces (stale ones aside).
    pub cursor: i64,
    /// The last change committed.
    pub latest: i64,
    /// Seen faces waiting to be matched again.
    pub stale: u64,
    /// The pass under way, if any.
    pub running: Option<RetagProgress>,
}

/// A re-tagging pass under way, as its process reports it with its lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetagProgress {
    /// The process running it (host and pid).
    pub owner: String,
    /// The lease runs out at this time unless renewed; another process may take over then.
    pub until_ms: i64,
    pub target: i64,
    /// Seen faces gone through, of `total`.
    pub done: u64,
    pub total: u64,
    pub started_ms: i64,
}

impl RetagProgress {
    /// Whether `owner` may take (or renew) the lease `self` holds at `now`.
    pub(crate) fn yields_to(&self, owner: &str, now: i64) -> bool {
        self.owner == owner || self.until_ms < now
    }
}

/// Which seen faces a search looks among.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenFilter {
    /// Only the faces of this bulk job.
    pub batch: Option<String>,
    /// Only faces seen at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only faces seen before this time.
    pub until_ms: Option<i64>,
}

/// A seen face in full, as a search answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenRecord {
    pub at: Appearance,
    /// The identity it is tagged with now, by name.
    pub identity: Option<String>,
    pub side: f32,
    pub embedding: Vec<f32>,
}

/// An unknown seen face as grouping reads it ([`FaceStore::unknown_faces`]).
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownFace {
    pub id: i64,
    pub request_id: String,
    pub face_index: u32,
    pub embedding: Vec<f32>,
    pub side: f32,
    pub quality: Option<FaceQuality>,
    /// A person's correction ([`FaceStore::pin_faces`]): faces of one pin are one group,
    /// faces of two pins never are.
    pub pin: Option<i64>,
}

/// A collection's unknown faces summed up ([`FaceStore::unknown_summary`]): a process
/// holding the same faces with the same pins has nothing to take out or change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnknownSummary {
    /// How many unknown faces have an id up to the one asked for, and the sum of their ids.
    pub count: u64,
    pub id_sum: i64,
    /// The newest unknown face's id (0: none).
    pub last_id: i64,
    /// How many corrections were made in the collection.
    pub version: i64,
}

/// What [`FaceStore::pin_faces`] does to one face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The face is taken out of grouping for good (it stays unknown).
    Reject,
    /// The face joins the call's `n`th new pin (1 to 15).
    New(u8),
}

/// The stored pin of a face taken out of grouping.
pub const REJECTED: i64 = 0;

/// The collection every deployment has: what was stored before collections, and what
/// every route without a collection works in.
pub const DEFAULT_COLLECTION: &str = "default";

/// A collection as listed ([`FaceStore::collections`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionInfo {
    pub name: String,
    pub identities: u64,
    /// Enrolled faces.
    pub faces: u64,
    pub created_ms: i64,
}

/// Refuses a collection name that is not 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a
/// letter or digit (it appears in paths and metrics).
pub fn check_collection_name(name: &str) -> Result<(), FaceStoreError> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(FaceStoreError::Invalid(format!(
            "collection names are 1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or digit (got {name:?})"
        )))
    }
}

/// The answer to a call in a collection that does not exist.
pub fn no_collection(name: &str) -> FaceStoreError {
    FaceStoreError::NotFound(format!("no collection {name:?}"))
}

/// What `facerec infra status` and readiness report of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreStatus {
    /// The schema version the database is at.
    pub schema: i64,
    pub identities: u64,
    pub faces: u64,
    /// The last change's number.
    pub seq: i64,
}

/// Why a face store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaceStoreError {
    /// The database cannot be reached or failed; the same call may succeed later.
    #[error("face store unavailable: {0}")]
    Unavailable(String),
    /// No such identity.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with what is stored (a rename onto an existing name).
    #[error("{0}")]
    Conflict(String),
    /// The database's schema is newer than this binary's, or not facerec's.
    #[error("{0}")]
    Schema(String),
    /// The store cannot be used as configured: a malformed `DATABASE_URL`, embeddings
    /// of another recognition model, a corrupt row.
    #[error("{0}")]
    Invalid(String),
}

impl FaceStoreError {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, FaceStoreError::Unavailable(_))
    }
}

/// The face store seam: SQLite ([`sqlite::SqliteFaces`]) and PostgreSQL
/// ([`postgres::PgFaces`]) implement it, and one conformance suite runs against both.
///
/// A store works in one collection ([`FaceStore::collection`]; [`open`] gives the default
/// one, [`FaceStore::in_collection`] another over the same connections): every call is
/// about that collection alone, but for the collections' own calls, `status` and
/// `forget_seen_before`, which are about the whole database. A call in a collection that
/// does not exist answers `NotFound`.
#[async_trait]
pub trait FaceStore: Send + Sync {
    /// Where the store is, for logs (never a password).
    fn describe(&self) -> String;

    /// The collection this store works in.
    fn collection(&self) -> &str;

    /// The same database, working in collection `name` (checked when used).
    fn in_collection(&self, name: &str) -> Arc<dyn FaceStore>;

    /// Every collection, by name, with its counts.
    async fn collections(&self) -> Result<Vec<CollectionInfo>, FaceStoreError>;

    /// Every collection's name, in order (cheap: no counts).
    async fn collection_names(&self) -> Result<Vec<String>, FaceStoreError>;

    /// Creates a collection; false when it exists already. `Invalid` for a bad name.
    async fn create_collection(&self, name: &str) -> Result<bool, FaceStoreError>;

    /// Deletes a collection with its identities, enrolled faces, seen faces and change
    /// feed; what it held. `NotFound` when there is none; the default one is refused
    /// (`Conflict`).
    async fn delete_collection(&self, name: &str) -> Result<CollectionInfo, FaceStoreError>;

    /// Adds `faces` to the identity `name` (created if new), as one change.
    async fn enroll(&self, name: &str, faces: &[NewFace]) -> Result<Enrolled, FaceStoreError>;

    /// Removes the identity and its faces; how many faces went. `NotFound` when there is
    /// no such identity.
    async fn remove(&self, name: &str) -> Result<usize, FaceStoreError>;

    /// Renames an identity; how many faces it has. `NotFound` for an unknown `from`,
    /// `Conflict` when `to` exists.
    async fn rename(&self, from: &str, to: &str) -> Result<usize, FaceStoreError>;

    /// The whole gallery as of one change, and that change's number (0: none yet). Faces
    /// are in the order they were enrolled, as applying the feed from 0 gives them.
    async fn load(&self, model_id: &str) -> Result<(Gallery, i64), FaceStoreError>;

    /// The changes after `after`, oldest first, at most about `limit` of them.
    async fn changes(&self, after: i64, limit: usize) -> Result<Vec<Change>, FaceStoreError>;

    /// Imports a gallery kept by an earlier version (the gallery file), once in the
    /// store's life: `Some(faces)` when this call imported it, `None` when a gallery was
    /// imported before (by any process). Each identity becomes one change.
    async fn import_once(&self, gallery: &Gallery) -> Result<Option<usize>, FaceStoreError>;

    /// Schema version and counts, of the whole database.
    async fn status(&self) -> Result<StoreStatus, FaceStoreError>;

    /// Records faces seen in uploads, in one transaction; a face whose `(request_id,
    /// face_index)` is recorded already is skipped (a request answered again after a
    /// crash or a redelivery). Returns how many were added.
    async fn record_seen(&self, faces: &[SeenFace]) -> Result<usize, FaceStoreError>;

    /// Where the identity `name` appears: its seen faces with an id below `before` (all
    /// when `None`), newest first, at most `limit`. `NotFound` for an unknown name. A
    /// rename keeps them; a removal makes them unknown.
    async fn appearances(
        &self,
        name: &str,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Appearance>, FaceStoreError>;

    /// Forgets the faces seen before `cutoff_ms` (retention), in every collection; how many
    /// went.
    async fn forget_seen_before(&self, cutoff_ms: i64) -> Result<u64, FaceStoreError>;

    /// Takes or renews the re-tagging lease for `progress.owner` (until
    /// `progress.until_ms`) and stores its progress; false when another process holds a
    /// lease that has not run out.
    async fn retag_lease(&self, progress: &RetagProgress) -> Result<bool, FaceStoreError>;

    /// Releases `owner`'s lease; with `Some(target)`, every seen face not stale has met
    /// every change up to `target` (the cursor never goes back).
    async fn finish_retag(&self, owner: &str, target: Option<i64>) -> Result<(), FaceStoreError>;

    /// The cursor, the last change, the enrolled faces the seen faces to go through have
    /// not met, how many seen faces there are to go through and the identities' ids, as of
    /// one commit.
    async fn retag_plan(&self) -> Result<RetagPlan, FaceStoreError>;

    /// Seen faces of `scan` with ids above `after`, by id, at most `limit`.
    async fn seen_page(
        &self,
        scan: SeenScan,
        after: i64,
        limit: usize,
    ) -> Result<Vec<StoredSeen>, FaceStoreError>;

    /// Writes re-tagged matches, in one transaction; how many rows changed. An identity
    /// removed meanwhile is not tagged, and a face whose nearest identity was removed
    /// meanwhile stays stale.
    async fn write_retags(&self, retags: &[Retag]) -> Result<usize, FaceStoreError>;

    /// Where re-tagging stands.
    async fn retag_status(&self) -> Result<RetagStatus, FaceStoreError>;

    /// Seen faces of `filter` with ids above `after`, by id, at most `limit`: (id,
    /// embedding).
    async fn seen_embeddings(
        &self,
        filter: &SeenFilter,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<f32>)>, FaceStoreError>;

    /// The seen faces with these ids (those that exist), in no particular order.
    async fn seen_faces(&self, ids: &[i64]) -> Result<Vec<SeenRecord>, FaceStoreError>;

    /// Forgets the faces seen in bulk job `batch`; how many went.
    async fn forget_seen_of_batch(&self, batch: &str) -> Result<u64, FaceStoreError>;

    /// The unknown seen faces with ids above `after` that grouping takes (not rejected),
    /// by id, at most `limit`. `NotFound` when the collection does not exist.
    async fn unknown_faces(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<UnknownFace>, FaceStoreError>;

    /// The unknown faces grouping takes, summed up: count and id sum of those with ids up
    /// to `up_to`, the newest one's id and the corrections' count, as of one commit.
    async fn unknown_summary(&self, up_to: i64) -> Result<UnknownSummary, FaceStoreError>;

    /// The ids and pins of the unknown faces grouping takes with ids up to `up_to`, by id.
    async fn unknown_pins(&self, up_to: i64) -> Result<Vec<(i64, Option<i64>)>, FaceStoreError>;

    /// Pins seen faces, in one transaction that counts one correction: the faces of each
    /// `Pin::New(n)` get one new pin of their own, shared with no face before. Faces that
    /// are not in the collection are skipped; how many were pinned. `NotFound` when the
    /// collection does not exist.
    async fn pin_faces(&self, pins: &[(i64, Pin)]) -> Result<u64, FaceStoreError>;
}

/// The stored pin of `pin` in correction number `version`.
pub(crate) fn pin_value(version: i64, pin: Pin) -> i64 {
    match pin {
        Pin::Reject => REJECTED,
        Pin::New(n) => version * 16 + i64::from(n.clamp(1, 15)),
    }
}

/// Refuses pins that are not 1 to 15.
pub(crate) fn check_pins(pins: &[(i64, Pin)]) -> Result<(), FaceStoreError> {
    match pins
        .iter()
        .find(|(_, p)| matches!(p, Pin::New(n) if !(1..=15).contains(n)))
    {
        Some((_, p)) => Err(FaceStoreError::Invalid(format!(
            "a new pin is numbered 1 to 15 (got {p:?})"
        ))),
        None => Ok(()),
    }
}

/// Opens the store a `DATABASE_URL` names, applying migrations, for embeddings of
/// `model_id`: `postgres://…` or `postgresql://…` (PostgreSQL), `sqlite:PATH` or
/// `sqlite://PATH` (SQLite; created if missing).
pub async fn open(url: &str, model_id: &str) -> Result<Arc<dyn FaceStore>, FaceStoreError> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgFaces::connect(url, model_id).await?))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(FaceStoreError::Invalid(
                "DATABASE_URL sqlite: names no file (sqlite:PATH)".into(),
            ));
        }
        Ok(Arc::new(
            sqlite::SqliteFaces::open(std::path::Path::new(path), model_id).await?,
        ))
    } else {
        Err(FaceStoreError::Invalid(format!(
            "DATABASE_URL {:?} is neither postgres://USER:PASSWORD@HOST:PORT/DB nor sqlite:PATH",
            redact(url)
        )))
    }
}

/// Checks the store a `DATABASE_URL` names without changing it (`facerec infra status`):
/// its schema and counts, or `None` when the database is reachable but holds no face store
/// yet (the first edge or worker creates it).
pub async fn probe(url: &str) -> Result<Option<StoreStatus>, FaceStoreError> {
    let url = url.trim();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::PgFaces::probe(url).await
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        sqlite::probe(std::path::Path::new(path)).await
    } else {
        Err(FaceStoreError::Invalid(format!(
            "DATABASE_URL {:?} is neither postgres://USER:PASSWORD@HOST:PORT/DB nor sqlite:PATH",
            redact(url)
        )))
    }
}

/// A URL with its password (between `user:` and `@`) replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

/// The model the store's embeddings belong to: its `model_id` meta value is set when the
/// store is first opened, and a store of another model is refused while it holds faces.
pub(crate) fn model_mismatch(stored: &str, running: &str, faces: u64) -> Option<FaceStoreError> {
    (stored != running && faces > 0).then(|| {
        FaceStoreError::Invalid(format!(
            "the face store holds {faces} faces enrolled with recognition model {stored}, but this process runs {running}: enrol them again with this model, or run the model they were enrolled with"
        ))
    })
}

/// An embedding as stored: `DIM` little-endian f32.
pub(crate) fn encode(embedding: &[f32]) -> Vec<u8> {
    embedding.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The stored bytes back to an embedding; a row of the wrong size is corrupt.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<f32>, FaceStoreError> {
    if bytes.len() != DIM * 4 {
        return Err(FaceStoreError::Invalid(format!(
            "a stored embedding has {} bytes, not {}",
            bytes.len(),
            DIM * 4
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Refuses faces the gallery cannot hold, before anything is written.
pub(crate) fn check_faces(faces: &[NewFace]) -> Result<(), FaceStoreError> {
    if faces.is_empty() {
        return Err(FaceStoreError::Invalid("no faces to enrol".into()));
    }
    match faces
        .iter()
        .find(|f| f.embedding.len() != DIM || f.embedding.iter().any(|v| !v.is_finite()))
    {
        Some(f) => Err(FaceStoreError::Invalid(format!(
            "an embedding must be {DIM} finite numbers (got {})",
            f.embedding.len()
        ))),
        None => Ok(()),
    }
}

/// Groups the rows of a change query — (seq, kind, identity, renamed_to, embedding,
/// side), ordered by seq then face — into changes.
pub(crate) fn group_changes(
    rows: impl IntoIterator<Item = ChangeRow>,
) -> Result<Vec<Change>, FaceStoreError> {
    let mut out: Vec<Change> = Vec::new();
    for row in rows {
        let face = match row.embedding {
            Some(bytes) => Some((decode(&bytes)?, row.side.unwrap_or(0.0))),
            None => None,
        };
        if let Some(Change::Enrolled { seq, faces, .. }) = out.last_mut()
            && *seq == row.seq
        {
            faces.extend(face);
            continue;
        }
        out.push(match row.kind.as_str() {
            "enrol" => Change::Enrolled {
                seq: row.seq,
                name: row.identity,
                faces: face.into_iter().collect(),
            },
            "remove" => Change::Removed {
                seq: row.seq,
                name: row.identity,
            },
            "rename" => Change::Renamed {
                seq: row.seq,
                from: row.identity,
                to: row.renamed_to.unwrap_or_default(),
            },
            other => {
                return Err(FaceStoreError::Schema(format!(
                    "the change feed holds a change of kind {other:?}, unknown to this binary"
                )));
            }
        });
    }
    Ok(out)
}

/// One identity's consecutive faces: its name and each face's stored embedding and size.
pub(crate) type Run = (String, Vec<(Vec<u8>, f32)>);

/// A gallery's faces in order, as runs of consecutive faces of one identity (one change
/// each when imported, so the imported order is the file's).
pub(crate) fn runs_of(gallery: &Gallery) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (name, embedding, side) in gallery.faces() {
        match runs.last_mut() {
            Some((n, rows)) if n == name => rows.push((encode(embedding), side)),
            _ => runs.push((name.to_string(), vec![(encode(embedding), side)])),
        }
    }
    runs
}

/// One row of the change query (see [`group_changes`]).
pub(crate) struct ChangeRow {
    pub seq: i64,
    pub kind: String,
    pub identity: String,
    pub renamed_to: Option<String>,
    pub embedding: Option<Vec<u8>>,
    pub side: Option<f32>,
}

/// A stored face's quality from its three columns (NULL for faces recorded before it was
/// measured).
pub(crate) fn quality_of(
    yaw: Option<f32>,
    roll: Option<f32>,
    sharpness: Option<f32>,
) -> Option<FaceQuality> {
    Some(FaceQuality {
        yaw: yaw?,
        roll: roll?,
        sharpness: sharpness?,
    })
}

/// Milliseconds since the Unix epoch, the rows' times (`SeenFace::seen_ms` too).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The migrations of one database, numbered from 1, in order.
pub(crate) struct Migrations(pub &'static [(i64, &'static str)]);

impl Migrations {
    pub fn latest(&self) -> i64 {
        self.0.last().map_or(0, |m| m.0)
    }

    /// The ones to apply to a database at `current`, or the refusal of a newer schema.
    pub fn pending(
        &self,
        current: i64,
        what: &str,
    ) -> Result<&[(i64, &'static str)], FaceStoreError> {
        if current > self.latest() {
            return Err(FaceStoreError::Schema(format!(
                "{what}'s schema is version {current}, newer than this binary's {}: upgrade facerec (or point it at another database)",
                self.latest()
            )));
        }
        let start = self
            .0
            .iter()
            .position(|m| m.0 > current)
            .unwrap_or(self.0.len());
        Ok(&self.0[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            redact("postgres://app:s3cret@db.example:5432/faces"),
            "postgres://app:***@db.example:5432/faces"
        );
        assert_eq!(redact("postgres://db/faces"), "postgres://db/faces");
        assert_eq!(redact("sqlite:/tmp/x.db"), "sqlite:/tmp/x.db");
    }

    #[tokio::test]
    async fn a_malformed_url_is_refused_with_the_forms_it_takes() {
        for url in ["mysql://root:pw@h/db", "", "faces.db", "sqlite:"] {
            let err = open(url, "m").await.err().expect("refused");
            assert!(matches!(err, FaceStoreError::Invalid(_)), "{url}: {err}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
    }

    #[test]
    fn a_newer_schema_is_refused_and_older_ones_get_the_rest() {
        let m = Migrations(&[(1, "a"), (2, "b")]);
        assert_eq!(m.pending(0, "db").expect("ok").len(), 2);
        assert_eq!(m.pending(1, "db").expect("ok")[0].0, 2);
        assert!(m.pending(2, "db").expect("ok").is_empty());
        let err = m.pending(3, "the face store").expect_err("refused");
        assert!(
            err.to_string()
                .contains("version 3, newer than this binary's 2"),
            "{err}"
        );
    }

    #[test]
    fn embeddings_round_trip_and_a_short_row_is_corrupt() {
        let e: Vec<f32> = (0..DIM).map(|i| i as f32 * 0.5 - 3.0).collect();
        assert_eq!(decode(&encode(&e)).expect("decodes"), e);
        assert!(decode(&[0u8; 12]).is_err());
    }
}
