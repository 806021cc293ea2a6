//! The AWS implementations of the seams (SQS queues, S3 buckets) and the resource layout
//! of docs/interfaces.md: `${ID}-in-bucket`, `${ID}-out-bucket`, `${ID}-req-queue`,
//! `${ID}-resp-queue`, `${ID}-dlq-queue` (created, checked and removed by the
//! `facerec-infra` crate).
//!
//! Clients use the SDK's standard retry mode with `MAX_RETRIES` retries, explicit
//! connect/attempt/operation timeouts, honour `AWS_ENDPOINT_URL` (or an explicit endpoint)
//! and address buckets path-style when an endpoint is given, as emulators need.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use bytes::Bytes;

use crate::queue::{Depth, MAX_BATCH, Queue, Received};
use crate::store::{BlobStore, Bucket, Listed};
use crate::{SeamError, SeamErrorKind};

/// Connection settings shared by every AWS client.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: String,
    /// `AWS_ENDPOINT_URL`: an AWS-compatible endpoint (an emulator), else AWS itself.
    pub endpoint: Option<String>,
    /// `MAX_RETRIES`: retries after the first attempt (standard retry mode).
    pub max_retries: u32,
}

/// The resource names derived from `ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub in_bucket: String,
    pub out_bucket: String,
    pub req_queue: String,
    pub resp_queue: String,
    pub dlq_queue: String,
}

impl Names {
    pub fn for_id(id: &str) -> Self {
        Self {
            in_bucket: format!("{id}-in-bucket"),
            out_bucket: format!("{id}-out-bucket"),
            req_queue: format!("{id}-req-queue"),
            resp_queue: format!("{id}-resp-queue"),
            dlq_queue: format!("{id}-dlq-queue"),
        }
    }
}

/// Long polls wait up to 20 s: the attempt timeout must be longer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn sdk_config(s: &AwsSettings) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(s.region.clone()))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(s.max_retries.saturating_add(1))
                .with_initial_backoff(Duration::from_millis(200)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(ATTEMPT_TIMEOUT * (s.max_retries + 1).min(4))
                .build(),
        );
    if let Some(ep) = &s.endpoint {
        loader = loader.endpoint_url(ep);
    }
    loader.http_client(https_client()).load().await
}

/// The HTTP(S) client of every SDK client and credential provider: hyper with rustls on
/// ring (the SDKs' default features, off in this workspace, would build two TLS stacks and
/// aws-lc's C library).
pub fn https_client() -> aws_sdk_sqs::config::SharedHttpClient {
    use aws_smithy_http_client::tls;
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// The raw HTTP response type of both SDKs.
type HttpResponse = aws_sdk_sqs::config::http::HttpResponse;

pub(crate) fn status<E>(e: &aws_sdk_sqs::error::SdkError<E, HttpResponse>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

/// Error codes that mean the bucket, object or queue does not exist.
const NOT_FOUND_CODES: &[&str] = &[
    "NoSuchKey",
    "NoSuchBucket",
    "NotFound",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
];

/// Maps an SDK error by the service's error code, then by HTTP status: a missing
/// resource is `NotFound`; the codes the SDK itself retries (throttling, request
/// timeouts, `InternalError`, `ServiceUnavailable`), 5xx answers, 408, 429 and failures
/// with no answer (network, timeouts) are transient; other 4xx answers and requests that
/// could not be built are permanent. The code is kept on the error.
pub fn classify<E>(what: &str, e: aws_sdk_sqs::error::SdkError<E, HttpResponse>) -> SeamError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
    use aws_sdk_sqs::error::SdkError;
    let code = e.code().map(str::to_owned);
    let kind = match (code.as_deref(), status(&e)) {
        (Some(c), _) if NOT_FOUND_CODES.contains(&c) => SeamErrorKind::NotFound,
        (Some(c), _)
            if THROTTLING_ERRORS.contains(&c)
                || TRANSIENT_ERRORS.contains(&c)
                || matches!(c, "InternalError" | "ServiceUnavailable") =>
        {
            SeamErrorKind::Transient
        }
        (_, Some(404)) => SeamErrorKind::NotFound,
        (_, Some(408 | 429)) => SeamErrorKind::Transient,
        (_, Some(400..=499)) => SeamErrorKind::Permanent,
        _ if matches!(e, SdkError::ConstructionFailure(_)) => SeamErrorKind::Permanent,
        _ => SeamErrorKind::Transient,
    };
    SeamError {
        kind,
        message: format!("{what}: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)),
        code,
    }
}

/// An SQS queue.
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// Looks up the queue's URL by name.
    pub async fn open(client: aws_sdk_sqs::Client, name: &str) -> Result<Self, SeamError> {
        let out = client
            .get_queue_url()
            .queue_name(name)
            .send()
            .await
            .map_err(|e| classify(&format!("queue {name}"), e))?;
        let url = out
            .queue_url()
            .ok_or_else(|| SeamError::permanent(format!("queue {name}: no URL")))?
            .to_string();
        Ok(Self { client, url })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

fn batch_failures(
    what: &str,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
) -> Result<(), SeamError> {
    if failed.is_empty() {
        return Ok(());
    }
    let detail: Vec<String> = failed
        .iter()
        .map(|f| format!("{} {}", f.code(), f.message().unwrap_or("")))
        .collect();
    let msg = format!("{what}: {} failed: {}", failed.len(), detail.join("; "));
    let kind = if failed.iter().all(|f| f.sender_fault()) {
        SeamErrorKind::Permanent
    } else {
        SeamErrorKind::Transient
    };
    // One code for the whole batch is kept; mixed codes stay in the message.
    let first = failed[0].code();
    let code = failed
        .iter()
        .all(|f| f.code() == first)
        .then(|| first.to_string());
    Err(SeamError {
        kind,
        code,
        message: msg,
    })
}

#[async_trait]
impl Queue for SqsQueue {
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Received>, SeamError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| classify("receive", e))?;
        Ok(out
            .messages()
            .iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    message_id: m.message_id()?.to_string(),
                    receipt: m.receipt_handle()?.to_string(),
                    body: m.body().unwrap_or_default().to_string(),
                    receive_count,
                })
            })
            .collect())
    }

    async fn send(&self, bodies: Vec<String>) -> Result<(), SeamError> {
        for chunk in bodies.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(b)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify("send", e))?;
            batch_failures("send", out.failed())?;
        }
        Ok(())
    }

    async fn ack(&self, receipts: Vec<String>) -> Result<(), SeamError> {
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .expect("id and receipt are set")
                })
                .collect();
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify("ack", e))?;
            // A receipt that is no longer valid (the message was delivered again) is
            // not worth retrying: the newer delivery is answered idempotently.
            let real: Vec<_> = out
                .failed()
                .iter()
                .filter(|f| f.code() != "ReceiptHandleIsInvalid")
                .cloned()
                .collect();
            batch_failures("ack", &real)?;
        }
        Ok(())
    }

    async fn set_visibility(
        &self,
        receipts: Vec<String>,
        timeout: Duration,
    ) -> Result<(), SeamError> {
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(timeout.as_secs().min(43_200) as i32)
                        .build()
                        .expect("id and receipt are set")
                })
                .collect();
            self.client
                .change_message_visibility_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| classify("visibility", e))?;
        }
        Ok(())
    }

    async fn depth(&self) -> Result<Depth, SeamError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| classify("depth", e))?;
        let get = |k: QueueAttributeName| {
            out.attributes()
                .and_then(|a| a.get(&k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Depth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

/// The two S3 buckets.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    in_bucket: String,
    out_bucket: String,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, names: &Names) -> Self {
        Self {
            client,
            in_bucket: names.in_bucket.clone(),
            out_bucket: names.out_bucket.clone(),
        }
    }

    fn bucket(&self, b: Bucket) -> &str {
        match b {
            Bucket::In => &self.in_bucket,
            Bucket::Out => &self.out_bucket,
        }
    }
}

/// An S3 client; path-style addressing whenever an explicit endpoint is in use.
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = config.endpoint_url().is_some();
    let conf = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[async_trait]
impl BlobStore for S3Store {
    async fn get(&self, bucket: Bucket, key: &str) -> Result<Bytes, SeamError> {
        let out = self
            .client
            .get_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&format!("get {key}"), e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| SeamError::transient(format!("get {key}: reading body: {e}")))?;
        Ok(body.into_bytes())
    }

    async fn put(&self, bucket: Bucket, key: &str, body: Bytes) -> Result<(), SeamError> {
        self.client
            .put_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify(&format!("put {key}"), e))?;
        Ok(())
    }

    async fn put_if_absent(
        &self,
        bucket: Bucket,
        key: &str,
        body: Bytes,
    ) -> Result<bool, SeamError> {
        let r = self
            .client
            .put_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .if_none_match("*")
            .body(ByteStream::from(body))
            .send()
            .await;
        match r {
            Ok(_) => Ok(true),
            Err(e) if status(&e) == Some(412) => Ok(false),
            Err(e) => Err(classify(&format!("put {key}"), e)),
        }
    }

    async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), SeamError> {
        self.client
            .delete_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .send()
            .await
            .map_err(|e| classify(&format!("delete {key}"), e))?;
        Ok(())
    }

    async fn version(&self, bucket: Bucket, key: &str) -> Result<Option<String>, SeamError> {
        match self
            .client
            .head_object()
            .bucket(self.bucket(bucket))
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(format!(
                "{}-{}",
                out.e_tag().unwrap_or_default(),
                out.content_length().unwrap_or_default()
            ))),
            Err(e) => match classify(&format!("head {key}"), e) {
                e if e.is_not_found() => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, bucket: Bucket, prefix: &str) -> Result<Vec<Listed>, SeamError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(self.bucket(bucket))
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify(&format!("list {prefix}"), e))?;
            for o in page.contents() {
                let modified = o
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .unwrap_or(std::time::UNIX_EPOCH);
                if let Some(key) = o.key() {
                    out.push(Listed {
                        key: key.to_string(),
                        modified,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn ping(&self) -> Result<(), SeamError> {
        for b in [&self.in_bucket, &self.out_bucket] {
            self.client
                .head_bucket()
                .bucket(b)
                .send()
                .await
                .map_err(|e| classify(&format!("bucket {b}"), e))?;
        }
        Ok(())
    }
}

/// Clients and seams for one deployment `ID`.
pub struct Aws {
    pub names: Names,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
}

impl Aws {
    pub async fn connect(id: &str, settings: &AwsSettings) -> Self {
        Self::from_config(id, &sdk_config(settings).await)
    }

    pub fn from_config(id: &str, config: &aws_config::SdkConfig) -> Self {
        Self {
            names: Names::for_id(id),
            sqs: aws_sdk_sqs::Client::new(config),
            s3: s3_client(config),
        }
    }

    pub fn store(&self) -> S3Store {
        S3Store::new(self.s3.clone(), &self.names)
    }

    pub async fn queue(&self, name: &str) -> Result<SqsQueue, SeamError> {
        SqsQueue::open(self.sqs.clone(), name).await
    }

    /// The seams of a worker or an edge: the three queues of `ID` and its buckets.
    pub async fn seams(&self) -> Result<crate::Seams, SeamError> {
        Ok(crate::Seams {
            requests: std::sync::Arc::new(self.queue(&self.names.req_queue).await?),
            responses: std::sync::Arc::new(self.queue(&self.names.resp_queue).await?),
            dead_letters: std::sync::Arc::new(self.queue(&self.names.dlq_queue).await?),
            store: std::sync::Arc::new(self.store()),
        })
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::error::{ErrorMetadata, SdkError};
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
    use aws_smithy_runtime_api::http::StatusCode;
    use aws_smithy_types::body::SdkBody;

    use super::*;

    /// A service's answer as the SDK hands it over: an error code and an HTTP status.
    fn answered(code: &str, status: u16) -> SeamError {
        let raw = HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::empty());
        let meta = ErrorMetadata::builder().code(code).message("m").build();
        classify(
            "receive",
            SdkError::service_error(ReceiveMessageError::generic(meta), raw),
        )
    }

    #[test]
    fn classifies_by_error_code_then_status_and_keeps_the_code() {
        for (code, status, kind) in [
            ("NoSuchKey", 404, SeamErrorKind::NotFound),
            // SQS answers a missing queue with 400.
            (
                "AWS.SimpleQueueService.NonExistentQueue",
                400,
                SeamErrorKind::NotFound,
            ),
            ("QueueDoesNotExist", 400, SeamErrorKind::NotFound),
            // Throttling is retryable whatever its 4xx status.
            ("ThrottlingException", 400, SeamErrorKind::Transient),
            ("RequestThrottled", 403, SeamErrorKind::Transient),
            ("SlowDown", 503, SeamErrorKind::Transient),
            ("RequestTimeout", 400, SeamErrorKind::Transient),
            ("InternalError", 500, SeamErrorKind::Transient),
            ("AccessDenied", 403, SeamErrorKind::Permanent),
            ("InvalidParameterValue", 400, SeamErrorKind::Permanent),
            ("Unknown", 502, SeamErrorKind::Transient),
            ("Unknown", 429, SeamErrorKind::Transient),
        ] {
            let e = answered(code, status);
            assert_eq!(e.kind(), kind, "{code} {status}: {e}");
            assert_eq!(e.code(), Some(code));
            assert_eq!(e.is_retryable(), kind == SeamErrorKind::Transient);
            assert!(e.message().starts_with("receive: "), "{e}");
        }
    }

    #[test]
    fn failures_without_an_answer_are_retryable_unless_the_request_was_never_built() {
        let timeout: SdkError<ReceiveMessageError, HttpResponse> =
            SdkError::timeout_error("operation timed out");
        let e = classify("receive", timeout);
        assert!(e.is_retryable() && e.code().is_none(), "{e}");
        let unbuilt: SdkError<ReceiveMessageError, HttpResponse> =
            SdkError::construction_failure("missing queue url");
        let e = classify("receive", unbuilt);
        assert_eq!(e.kind(), SeamErrorKind::Permanent, "{e}");
    }
}
