//! facerec's web tier.
//!
//! Every upload gets a request id (a UUID, also the `x-request-id` header), is stored in
//! the input bucket under a key derived from that id, and becomes one request message.
//! Answers come back on the response queue and are matched to the waiting HTTP request
//! by request id, never by file name, so two clients uploading `test_000.jpg` at once
//! each get their own answer. If a response message is missed (another edge took it),
//! the waiter finds the result in the output bucket, where every result is stored.

pub mod api;
pub mod archive;
pub mod batch;
mod batch_api;
mod collections;
mod config;
mod edge;
mod groups;
mod idempotency;
mod identities;
pub mod metrics;
mod multipart;
mod page;
mod recognize;
mod response;
mod routes;
mod search;
mod server;

pub use config::EdgeConfig;
pub use edge::Edge;
pub use metrics::EdgeMetrics;
pub use response::{ApiError, Kind};
pub use server::run;
