//! The gallery every edge and worker matches against, kept in memory and fed from where it
//! is stored:
//!
//! - **a face store** ([`FaceStore`]: SQLite for `facerec up`, PostgreSQL for a fleet):
//!   enrolments, removals and renames are small transactions through any process, and
//!   every process applies the store's change feed to its in-memory gallery
//!   ([`GalleryHandle::sync`], every [`STORE_POLL`]), so a change is seen everywhere
//!   within about a second whatever the gallery's size;
//! - **the gallery object** of earlier versions ([`GALLERY_KEY`] in the output bucket),
//!   read-only, for a fleet without a database: reloaded when its version changes. With a
//!   face store the object is imported once, on the first start.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use facerec_contract::Gallery;

use crate::SeamError;
use crate::faces::{Change, Enrolled, FaceStore, FaceStoreError, NewFace};
use crate::store::{BlobStore, Bucket};

/// Where earlier versions kept the gallery in the output bucket (imported once into a
/// face store; read as it is without one).
pub const GALLERY_KEY: &str = "gallery/gallery.frg";
/// How often a process applies a face store's change feed.
pub const STORE_POLL: Duration = Duration::from_millis(500);
/// How often a process looks for a new version of the gallery object.
pub const OBJECT_POLL: Duration = Duration::from_secs(10);
/// Changes read from the feed at a time.
const FEED_PAGE: usize = 1000;
/// Pages of changes a sync applies before it loads the gallery whole instead (a process
/// that fell that far behind: loading is quicker than replaying).
const RELOAD_AFTER_PAGES: usize = 20;

/// Where a process's gallery comes from.
enum Source {
    /// The gallery object's last version seen.
    Object(Mutex<Option<String>>),
    /// A face store and the last change applied (also serialising the appliers).
    Store {
        store: Arc<dyn FaceStore>,
        applied: tokio::sync::Mutex<i64>,
    },
}

/// Why a gallery change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GalleryChangeError {
    /// There is no face store (a fleet without `DATABASE_URL`): the gallery is read-only.
    #[error(
        "this deployment keeps no face store (set DATABASE_URL): the gallery is read-only here"
    )]
    ReadOnly,
    #[error(transparent)]
    Store(#[from] FaceStoreError),
}

pub struct GalleryHandle {
    /// The gallery and the last change applied to it (0 without a face store).
    current: RwLock<(Arc<Gallery>, i64)>,
    model_id: String,
    source: Source,
    /// Pages of changes a sync applies before it loads the gallery whole instead.
    reload_after: usize,
}

impl GalleryHandle {
    /// An empty gallery for the given recognition model, fed from the gallery object.
    pub fn new(model_id: impl Into<String>) -> Self {
        Self::with_source(model_id.into(), Source::Object(Mutex::new(None)))
    }

    /// An empty gallery fed from a face store (call [`GalleryHandle::load`] first).
    pub fn with_store(model_id: impl Into<String>, store: Arc<dyn FaceStore>) -> Self {
        Self::with_source(
            model_id.into(),
            Source::Store {
                store,
                applied: tokio::sync::Mutex::new(0),
            },
        )
    }

    fn with_source(model_id: String, source: Source) -> Self {
        Self {
            current: RwLock::new((Arc::new(Gallery::new(model_id.clone())), 0)),
            model_id,
            source,
            reload_after: RELOAD_AFTER_PAGES,
        }
    }

    /// Loads the gallery whole when a sync finds more than `pages` pages of changes (1000
    /// each) to apply (default 20).
    pub fn reload_after(mut self, pages: usize) -> Self {
        self.reload_after = pages.max(1);
        self
    }

    /// The face store, when the gallery comes from one.
    pub fn store(&self) -> Option<&Arc<dyn FaceStore>> {
        match &self.source {
            Source::Store { store, .. } => Some(store),
            Source::Object(_) => None,
        }
    }

    /// How often [`GalleryHandle::sync`] is worth calling.
    pub fn poll_interval(&self) -> Duration {
        match self.source {
            Source::Store { .. } => STORE_POLL,
            Source::Object(_) => OBJECT_POLL,
        }
    }

    /// The gallery as it is now (cheap; later changes do not affect the snapshot).
    pub fn get(&self) -> Arc<Gallery> {
        self.snapshot().0
    }

    /// The gallery as it is now and the last change of the face store applied to it (0
    /// without a store): what a seen face was matched against (`SeenFace::gallery_seq`).
    pub fn snapshot(&self) -> (Arc<Gallery>, i64) {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// At start: with a face store, imports the gallery object of an earlier version
    /// (once in the store's life), then loads the store; without one, reads the object.
    pub async fn load(&self, blobs: &dyn BlobStore) -> Result<(), SeamError> {
        let Source::Store { store, applied } = &self.source else {
            self.refresh_object(blobs).await?;
            return Ok(());
        };
        let mut applied = applied.lock().await;
        if let Some(old) = self.read_object(blobs).await? {
            match store.import_once(&old).await.map_err(seam_error)? {
                Some(faces) => tracing::info!(
                    faces,
                    from = GALLERY_KEY,
                    store = %store.describe(),
                    "gallery of an earlier version imported into the face store"
                ),
                None => tracing::debug!("the gallery object was imported before"),
            }
        }
        Self::load_into(store, &self.model_id, &self.current, &mut applied)
            .await
            .map_err(seam_error)
    }

    /// Loads the gallery from its face store (nothing without one), importing nothing.
    pub async fn load_store(&self) -> Result<(), FaceStoreError> {
        let Source::Store { store, applied } = &self.source else {
            return Ok(());
        };
        let mut applied = applied.lock().await;
        Self::load_into(store, &self.model_id, &self.current, &mut applied).await
    }

    async fn load_into(
        store: &Arc<dyn FaceStore>,
        model_id: &str,
        current: &RwLock<(Arc<Gallery>, i64)>,
        applied: &mut i64,
    ) -> Result<(), FaceStoreError> {
        let (gallery, seq) = store.load(model_id).await?;
        tracing::info!(
            faces = gallery.len(),
            seq,
            store = %store.describe(),
            collection = store.collection(),
            "gallery loaded"
        );
        *current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(gallery), seq);
        *applied = seq;
        Ok(())
    }

    /// Brings the gallery up to date with where it is stored; true when it changed.
    pub async fn sync(&self, blobs: &dyn BlobStore) -> Result<bool, SeamError> {
        match &self.source {
            Source::Object(_) => self.refresh_object(blobs).await,
            Source::Store { .. } => self.sync_store().await.map_err(seam_error),
        }
    }

    /// Applies the face store's change feed (nothing without a store); true when the
    /// gallery changed.
    pub async fn sync_store(&self) -> Result<bool, FaceStoreError> {
        let Source::Store { store, applied } = &self.source else {
            return Ok(false);
        };
        let mut applied = applied.lock().await;
        let mut changed = false;
        for _ in 0..self.reload_after {
            let changes = store.changes(*applied, FEED_PAGE).await?;
            let Some(last) = changes.last().map(Change::seq) else {
                return Ok(changed);
            };
            self.apply(&changes);
            *applied = last;
            changed = true;
        }
        tracing::info!(
            applied = *applied,
            collection = store.collection(),
            "the gallery is far behind the store's change feed: loading it whole"
        );
        Self::load_into(store, &self.model_id, &self.current, &mut applied).await?;
        Ok(true)
    }

    /// Applies changes in place when no snapshot of the gallery is held elsewhere, else on
    /// a copy that replaces it.
    fn apply(&self, changes: &[Change]) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        let (gallery, seq) = &mut *current;
        let gallery = Arc::make_mut(gallery);
        for change in changes {
            change.apply(gallery);
            *seq = change.seq();
        }
    }

    /// Enrols faces under `name` in the face store and applies the change here at once
    /// (the other processes see it at their next sync): the change's number and the
    /// identity's faces after it.
    pub async fn enroll(
        &self,
        blobs: &dyn BlobStore,
        name: &str,
        faces: &[NewFace],
    ) -> Result<Enrolled, GalleryChangeError> {
        let enrolled = self.writable()?.enroll(name, faces).await?;
        self.settle(blobs).await;
        Ok(enrolled)
    }

    /// Removes an identity from the face store; how many faces went.
    pub async fn remove(
        &self,
        blobs: &dyn BlobStore,
        name: &str,
    ) -> Result<usize, GalleryChangeError> {
        let removed = self.writable()?.remove(name).await?;
        self.settle(blobs).await;
        Ok(removed)
    }

    /// Renames an identity in the face store; how many faces it has.
    pub async fn rename(
        &self,
        blobs: &dyn BlobStore,
        from: &str,
        to: &str,
    ) -> Result<usize, GalleryChangeError> {
        let faces = self.writable()?.rename(from, to).await?;
        self.settle(blobs).await;
        Ok(faces)
    }

    fn writable(&self) -> Result<&Arc<dyn FaceStore>, GalleryChangeError> {
        self.store().ok_or(GalleryChangeError::ReadOnly)
    }

    /// After a committed change: applies the feed so this process answers with it. A
    /// failure here loses nothing (the change is stored; the next sync applies it).
    async fn settle(&self, blobs: &dyn BlobStore) {
        if let Err(e) = self.sync(blobs).await {
            tracing::warn!(error = %e, "gallery sync after a change failed; the next sync applies it");
        }
    }

    /// Follows where the gallery is stored until `shutdown`: a sync every
    /// [`GalleryHandle::poll_interval`]; `on_change` runs after each sync that changed it.
    pub async fn follow(
        self: Arc<Self>,
        blobs: Arc<dyn BlobStore>,
        shutdown: tokio_util::sync::CancellationToken,
        on_change: impl Fn(&Gallery) + Send,
    ) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.poll_interval()) => {}
                () = shutdown.cancelled() => return,
            }
            match self.sync(blobs.as_ref()).await {
                Ok(changed) => {
                    if failing {
                        tracing::info!("gallery sync recovered");
                        failing = false;
                    }
                    if changed {
                        on_change(&self.get());
                    }
                }
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "gallery sync failed; matching goes on with the gallery in memory");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "gallery sync still failing"),
            }
        }
    }

    /// The gallery object, if there is one, checked against this process's model.
    async fn read_object(&self, blobs: &dyn BlobStore) -> Result<Option<Gallery>, SeamError> {
        let bytes = match blobs.get(Bucket::Out, GALLERY_KEY).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let gallery = Gallery::from_bytes(&bytes)
            .map_err(|e| SeamError::permanent(format!("{GALLERY_KEY}: {e}")))?;
        if gallery.model_id() != self.model_id {
            return Err(SeamError::permanent(format!(
                "{GALLERY_KEY} was built with model {} but this engine runs {}",
                gallery.model_id(),
                self.model_id
            )));
        }
        Ok(Some(gallery))
    }

    /// Reloads the gallery object if its version changed; true when it did.
    async fn refresh_object(&self, blobs: &dyn BlobStore) -> Result<bool, SeamError> {
        let Source::Object(seen) = &self.source else {
            return Ok(false);
        };
        let version = blobs.version(Bucket::Out, GALLERY_KEY).await?;
        if version.is_none() || *seen.lock().unwrap_or_else(|p| p.into_inner()) == version {
            return Ok(false);
        }
        let Some(gallery) = self.read_object(blobs).await? else {
            return Ok(false);
        };
        tracing::info!(faces = gallery.len(), "gallery reloaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(gallery), 0);
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = version;
        Ok(true)
    }
}

/// A face store failure as a seam failure (retryable when the database may come back).
fn seam_error(e: FaceStoreError) -> SeamError {
    if e.is_retryable() {
        SeamError::transient(e.to_string())
    } else {
        SeamError::permanent(e.to_string())
    }
}

/// A process's galleries, one per collection of its face store: the default one, loaded at
/// start and followed by [`GalleryHandle::follow`], and the others, loaded when first named
/// and followed by [`Galleries::follow_others`]. Without a face store there is only the
/// default one.
pub struct Galleries {
    default: Arc<GalleryHandle>,
    others: RwLock<std::collections::HashMap<String, Arc<GalleryHandle>>>,
}

impl Galleries {
    pub fn new(default: Arc<GalleryHandle>) -> Self {
        Self {
            default,
            others: RwLock::default(),
        }
    }

    /// The default collection's gallery.
    pub fn default_gallery(&self) -> &Arc<GalleryHandle> {
        &self.default
    }

    /// The face store, working in the default collection.
    pub fn store(&self) -> Option<&Arc<dyn FaceStore>> {
        self.default.store()
    }

    /// The gallery of `collection`, loaded on first use; `NotFound` when the collection
    /// does not exist (any but the default one without a face store).
    pub async fn get(&self, collection: &str) -> Result<Arc<GalleryHandle>, FaceStoreError> {
        if collection == crate::faces::DEFAULT_COLLECTION {
            return Ok(self.default.clone());
        }
        if let Some(g) = self
            .others
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(collection)
        {
            return Ok(g.clone());
        }
        let Some(store) = self.store() else {
            return Err(crate::faces::no_collection(collection));
        };
        let handle = Arc::new(GalleryHandle::with_store(
            self.default.model_id.clone(),
            store.in_collection(collection),
        ));
        handle.load_store().await?;
        let mut others = self.others.write().unwrap_or_else(|p| p.into_inner());
        Ok(others
            .entry(collection.to_string())
            .or_insert(handle)
            .clone())
    }

    /// Forgets the gallery of a collection deleted (the next use loads it again).
    pub fn forget(&self, collection: &str) {
        self.others
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(collection);
    }

    fn others_now(&self) -> std::collections::HashMap<String, Arc<GalleryHandle>> {
        self.others
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies the change feeds of the galleries loaded besides the default one; a
    /// collection deleted (or deleted and created again) is forgotten. True when one
    /// changed.
    pub async fn sync_others(&self) -> Result<bool, FaceStoreError> {
        let mut changed = false;
        for (name, gallery) in self.others_now() {
            match gallery.sync_store().await {
                Ok(c) => changed |= c,
                Err(FaceStoreError::NotFound(_)) => {
                    tracing::info!(collection = name, "collection gone; its gallery is dropped");
                    self.forget(&name);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(changed)
    }

    /// Follows the galleries loaded besides the default one until `shutdown`.
    pub async fn follow_others(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(STORE_POLL) => {}
                () = shutdown.cancelled() => return,
            }
            match self.sync_others().await {
                Ok(_) if failing => {
                    tracing::info!("collections' gallery sync recovered");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "collections' gallery sync failed; matching goes on with the galleries in memory");
                    failing = true;
                }
                Err(e) => tracing::debug!(error = %e, "collections' gallery sync still failing"),
            }
        }
    }
}
