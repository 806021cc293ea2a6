//! The seams every tier runs on: queues and blob stores with an AWS implementation (SQS,
//! S3: [`aws`]) and local ones ([`LocalQueue`], [`SqliteQueue`](sqlite_queue::SqliteQueue),
//! [`FsStore`]), the stored gallery ([`GalleryHandle`]), the Prometheus helpers and
//! names ([`metrics`]) and the `/metrics` server ([`http`]).
//!
//! Nothing here runs a network: the edge and the scaler build on these without the engine.

pub mod aws;
pub mod gallery;
pub mod http;
pub mod http_client;
pub mod metrics;
pub mod queue;
pub mod sqlite_queue;
pub mod store;

use std::sync::Arc;

pub use gallery::GalleryHandle;
pub use metrics::Metrics;
pub use queue::{Depth, LocalQueue, Queue, Received};
pub use store::{BlobStore, Bucket, FsStore, Listed};

/// A failure of a queue or store operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SeamError {
    /// The object or queue does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Worth retrying: network errors, timeouts, throttling, 5xx.
    #[error("{0}")]
    Transient(String),
    /// Retrying will not help: invalid key, access denied, malformed request.
    #[error("{0}")]
    Permanent(String),
}

/// The queues and store a deployment runs on.
#[derive(Clone)]
pub struct Seams {
    pub requests: Arc<dyn Queue>,
    pub responses: Arc<dyn Queue>,
    pub dead_letters: Arc<dyn Queue>,
    pub store: Arc<dyn BlobStore>,
}
