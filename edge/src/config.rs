//! The edge's settings.

use std::time::Duration;

/// Edge settings; defaults are the original design's (`REQUEST_TIMEOUT` 60 s,
/// `MAX_FILE_SIZE` 10485760 bytes).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub request_timeout: Duration,
    pub max_file_size: usize,
    /// Most files in one multipart request.
    pub max_files: usize,
    /// Uploads being processed at once; beyond that, 503 with `Retry-After`.
    pub max_in_flight: usize,
    /// When set, gallery changes and batches need `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub threshold: facerec_contract::Threshold,
    /// How often a waiter also looks for its result in the output bucket.
    pub result_poll: Duration,
    /// Concurrent receivers on the response queue.
    pub response_pollers: usize,
    /// Long-poll wait on the response queue.
    pub response_wait: Duration,
    /// Most images in one bulk batch.
    pub max_batch_files: usize,
    /// Longest wait for a request's headers (an idle keep-alive connection included) and
    /// between two pieces of its body; past it, the connection closes (headers) or the
    /// request answers 408 (body).
    pub read_timeout: Duration,
    /// How long a finished bulk job stays listed (its results stay in the output bucket
    /// for the store's own retention).
    pub job_retention: Duration,
    /// On shutdown, how long open requests are still answered; then the ones still
    /// waiting answer 503.
    pub drain: Duration,
    /// Most open client connections; past it a new connection gets 503 and is closed.
    pub max_connections: usize,
}

impl EdgeConfig {
    /// The defaults, the one source of them (the CLI's flags take theirs from here).
    pub const DEFAULT: Self = Self {
        request_timeout: Duration::from_secs(60),
        max_file_size: 10_485_760,
        max_files: 100,
        max_in_flight: 512,
        api_key: None,
        threshold: facerec_contract::Threshold::DEFAULT,
        result_poll: Duration::from_secs(3),
        response_pollers: 2,
        response_wait: Duration::from_secs(20),
        max_batch_files: 10_000,
        read_timeout: Duration::from_secs(30),
        job_retention: Duration::from_secs(7 * 24 * 3600),
        drain: Duration::from_secs(10),
        max_connections: 10_000,
    };
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}
