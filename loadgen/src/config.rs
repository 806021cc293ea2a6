//! What a run does: the route, the edge's address, how many requests and clients.

use std::time::Duration;

use serde::Serialize;

/// Which route the requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// `POST /` with multipart `inputFile`; the answer is `<stem>:<name>`.
    Original,
    /// `POST /v1/recognize` with one `image`; the answer is JSON.
    Recognize,
    /// `GET /health` (no image): the web tier alone.
    Health,
    /// `POST /v1/batches` with many `images`, then `GET /v1/batches/{id}/results` (NDJSON):
    /// each image's latency runs from its upload's start to its result line's arrival.
    Batch,
}

/// A route name the harness does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown route {0:?} (original, recognize, health, batch)")]
pub struct UnknownRoute(pub String);

impl std::str::FromStr for Route {
    type Err = UnknownRoute;
    fn from_str(s: &str) -> Result<Self, UnknownRoute> {
        match s {
            "original" | "/" => Ok(Route::Original),
            "recognize" | "/v1/recognize" => Ok(Route::Recognize),
            "health" | "/health" => Ok(Route::Health),
            "batch" | "/v1/batches" => Ok(Route::Batch),
            other => Err(UnknownRoute(other.to_string())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `host:port` of the edge.
    pub addr: String,
    pub route: Route,
    /// Requests in all (the items are cycled).
    pub requests: usize,
    pub concurrency: usize,
    /// Per request, connect to last byte.
    pub timeout: Duration,
    /// Sent as `Authorization: Bearer` when set.
    pub api_key: Option<String>,
    /// Batch route: images per `POST /v1/batches` [default: the requests split evenly over
    /// the clients, so each client uploads one batch].
    pub batch_files: Option<usize>,
}

/// Images per uploaded batch: `--batch-files`, else the requests split evenly over the
/// clients.
pub fn files_per_batch(cfg: &Config) -> usize {
    cfg.batch_files
        .unwrap_or_else(|| cfg.requests.div_ceil(cfg.concurrency.max(1)))
        .max(1)
}
