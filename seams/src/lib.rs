//! The seams every tier runs on: queues and blob stores with an AWS implementation (SQS,
//! S3: [`aws`]) and local ones ([`LocalQueue`], [`SqliteQueue`](sqlite_queue::SqliteQueue),
//! [`FsStore`]), the stored gallery ([`GalleryHandle`]), the Prometheus helpers and
//! names ([`metrics`]) and the `/metrics` server ([`http`]).
//!
//! Nothing here runs a network: the edge and the scaler build on these without the engine.

pub mod aws;
pub mod faces;
pub mod gallery;
pub mod http;
pub mod http_client;
pub mod metrics;
pub mod queue;
pub mod retag;
pub mod sqlite_queue;
pub mod store;
pub mod sync;

use std::sync::Arc;

pub use faces::{FaceStore, FaceStoreError};
pub use gallery::{Galleries, GalleryHandle};
pub use queue::{Depth, LocalQueue, Queue, Received};
pub use store::{BlobStore, Bucket, FsStore, Listed};

/// A failure of a queue or store operation: its kind, which decides whether to retry
/// ([`SeamError::is_retryable`]), the service's error code when one answered
/// (`NoSuchKey`, `AWS.SimpleQueueService.NonExistentQueue`, `SlowDown`, ...) and a
/// message for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeamError {
    kind: SeamErrorKind,
    code: Option<String>,
    message: String,
}

/// What a failed queue or store operation means to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeamErrorKind {
    /// The object or queue does not exist.
    NotFound,
    /// Worth retrying: network errors, timeouts, throttling, 5xx.
    Transient,
    /// Retrying will not help: invalid key, access denied, malformed request.
    Permanent,
}

impl SeamError {
    pub fn new(kind: SeamErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(SeamErrorKind::NotFound, message)
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(SeamErrorKind::Transient, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(SeamErrorKind::Permanent, message)
    }

    pub fn kind(&self) -> SeamErrorKind {
        self.kind
    }

    /// The service's error code, when a service answered with one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same call may succeed later (network, timeout, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        self.kind == SeamErrorKind::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == SeamErrorKind::NotFound
    }
}

impl std::fmt::Display for SeamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == SeamErrorKind::NotFound {
            write!(f, "not found: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SeamError {}

/// The queues and store a deployment runs on.
#[derive(Clone)]
pub struct Seams {
    pub requests: Arc<dyn Queue>,
    pub responses: Arc<dyn Queue>,
    pub dead_letters: Arc<dyn Queue>,
    pub store: Arc<dyn BlobStore>,
}
