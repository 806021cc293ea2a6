//! The gallery shared by workers and the edge. It lives in the output bucket (one
//! object, [`GALLERY_KEY`]), so every worker of a fleet matches against the same
//! identities; workers poll its version and reload it when it changes.

use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use facerec_contract::Gallery;

use crate::SeamError;
use crate::store::{BlobStore, Bucket};

/// Where the gallery is stored in the output bucket.
pub const GALLERY_KEY: &str = "gallery/gallery.frg";

pub struct GalleryHandle {
    current: RwLock<Arc<Gallery>>,
    version: Mutex<Option<String>>,
    model_id: String,
    writer: tokio::sync::Mutex<()>,
}

impl GalleryHandle {
    /// An empty gallery for the given recognition model.
    pub fn new(model_id: impl Into<String>) -> Self {
        let model_id = model_id.into();
        Self {
            current: RwLock::new(Arc::new(Gallery::new(model_id.clone()))),
            version: Mutex::new(None),
            model_id,
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// The gallery as it is now (cheap; later changes do not affect the snapshot).
    pub fn get(&self) -> Arc<Gallery> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads the gallery from the store if its version changed; true when it did.
    pub async fn refresh(&self, store: &dyn BlobStore) -> Result<bool, SeamError> {
        // Serialised with `update`: a reload must never replace a newer local change with
        // the older object it read before that change was stored.
        let _writer = self.writer.lock().await;
        let version = store.version(Bucket::Out, GALLERY_KEY).await?;
        if version.is_none() || *self.version.lock().unwrap_or_else(|p| p.into_inner()) == version {
            return Ok(false);
        }
        let bytes = match store.get(Bucket::Out, GALLERY_KEY).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(false),
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
        tracing::info!(faces = gallery.len(), "gallery reloaded");
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(gallery);
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version;
        Ok(true)
    }

    /// Applies a change, stores the result and publishes it. Changes are serialised.
    pub async fn update(
        &self,
        store: &dyn BlobStore,
        change: impl FnOnce(&mut Gallery),
    ) -> Result<Arc<Gallery>, SeamError> {
        let _writer = self.writer.lock().await;
        let mut next = (*self.get()).clone();
        change(&mut next);
        store
            .put(Bucket::Out, GALLERY_KEY, Bytes::from(next.to_bytes()))
            .await?;
        let version = store.version(Bucket::Out, GALLERY_KEY).await?;
        let next = Arc::new(next);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next.clone();
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version;
        Ok(next)
    }
}
