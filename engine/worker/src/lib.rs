//! facerec's app tier: the recognition worker and the seams it runs on.
//!
//! A worker pulls request messages from a [`Queue`], reads each upload from a
//! [`BlobStore`], batches images across messages for the engine, and writes one result
//! per request id to the output bucket and the response queue. The seams have an AWS
//! implementation (SQS, S3: [`aws`]) and a local one ([`LocalQueue`], [`FsStore`]) so the
//! same loop serves a fleet and `facerec up`.

pub mod aws;
pub mod compute;
pub mod gallery;
pub mod http;
pub mod message;
pub mod metrics;
pub mod provision;
pub mod queue;
pub mod sqlite_queue;
pub mod store;
pub mod worker;

pub use compute::Compute;
pub use gallery::GalleryHandle;
pub use message::{DeadLetter, Request, ResultMessage};
pub use metrics::Metrics;
pub use queue::{Depth, LocalQueue, Queue, Received};
pub use store::{BlobStore, Bucket, FsStore, Listed};
pub use worker::{Seams, Worker, WorkerConfig, WorkerError};

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
