//! facerec's app tier: the recognition worker.
//!
//! A worker pulls request messages from a [`Queue`](facerec_seams::Queue), reads each
//! upload from a [`BlobStore`](facerec_seams::BlobStore), batches images across messages
//! for the engine, and writes one result per request id to the output bucket and the
//! response queue. The seams (`facerec-seams`) have an AWS implementation and local ones, so
//! the same loop serves a fleet and `facerec up`.

pub mod compute;
pub mod metrics;
pub mod service;

pub use compute::Compute;
pub use metrics::Metrics;
pub use service::{Worker, WorkerConfig, WorkerError};
