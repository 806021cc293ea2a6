//! Provisioning of a deployment's buckets and queues (`facerec infra up|down|status`):
//! created when missing, brought back to the specification when they drifted, left alone
//! when they match, and every step reported, so running `up` twice changes nothing.
//!
//! The specification: both buckets block all public access (the four settings) and encrypt
//! new objects by default (SSE-S3, AES256; a KMS default set by the operator is kept); the
//! request queue has `VISIBILITY_TIMEOUT` and a redrive policy to `${ID}-dlq-queue` after
//! `max_receive` deliveries; the DLQ keeps messages 14 days.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::types::{
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
};
use aws_sdk_sqs::types::QueueAttributeName;

use facerec_seams::SeamError;
use facerec_seams::aws::{Aws, classify};
use facerec_seams::queue::Queue;

/// How long the DLQ keeps a message: SQS's maximum, 14 days.
pub const DLQ_RETENTION_SECS: u64 = 14 * 24 * 3600;

/// What `up` or `down` did to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    /// It existed; these settings were brought back to the specification.
    Updated(Vec<String>),
    /// It existed as specified: nothing done.
    Exists,
    Removed,
    /// `down` found nothing to remove.
    Absent,
    /// Not handled, with the reason.
    Skipped(String),
}

/// One resource and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub resource: String,
    pub change: Change,
}

impl Step {
    pub fn new(resource: impl Into<String>, change: Change) -> Self {
        Self {
            resource: resource.into(),
            change,
        }
    }

    /// Whether the step changed anything.
    pub fn changed(&self) -> bool {
        matches!(
            self.change,
            Change::Created | Change::Updated(_) | Change::Removed
        )
    }
}

impl fmt::Display for Step {
    /// `created  NAME`, `exists   NAME`, `updated  NAME (what)`, ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, detail) = match &self.change {
            Change::Created => ("created", String::new()),
            Change::Updated(what) => ("updated", format!(" ({})", what.join(", "))),
            Change::Exists => ("exists", String::new()),
            Change::Removed => ("removed", String::new()),
            Change::Absent => ("absent", String::new()),
            Change::Skipped(why) => ("skipped", format!(" ({why})")),
        };
        write!(f, "{word:<8} {}{detail}", self.resource)
    }
}

/// The state `status` reports for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Exists as specified.
    Exists,
    /// Exists, but a setting differs from the specification (`up` repairs it).
    Drift,
    Missing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Exists => "exists",
            Health::Drift => "drift",
            Health::Missing => "missing",
        }
    }
}

/// One line of `status`: a resource, its health and what was read about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceState {
    pub resource: String,
    pub health: Health,
    pub detail: String,
}

impl fmt::Display for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<8} {}", self.health.as_str(), self.resource)?;
        if !self.detail.is_empty() {
            write!(f, "  {}", self.detail)?;
        }
        Ok(())
    }
}

/// The error code of a service error (`NoSuchPublicAccessBlockConfiguration`, ...).
fn code<E: ProvideErrorMetadata>(e: &E) -> Option<&str> {
    e.code()
}

/// The bucket's default encryption algorithm, `None` when it has none.
async fn bucket_encryption(s3: &aws_sdk_s3::Client, b: &str) -> Result<Option<String>, SeamError> {
    match s3.get_bucket_encryption().bucket(b).send().await {
        Ok(out) => Ok(out
            .server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| d.sse_algorithm().as_str().to_string())),
        Err(e) if code(&e) == Some("ServerSideEncryptionConfigurationNotFoundError") => Ok(None),
        Err(e) => Err(classify(&format!("encryption of {b}"), e)),
    }
}

/// Whether all four public-access-block settings of the bucket are on.
async fn public_access_blocked(s3: &aws_sdk_s3::Client, b: &str) -> Result<bool, SeamError> {
    match s3.get_public_access_block().bucket(b).send().await {
        Ok(out) => Ok(out.public_access_block_configuration().is_some_and(|c| {
            [
                c.block_public_acls(),
                c.ignore_public_acls(),
                c.block_public_policy(),
                c.restrict_public_buckets(),
            ]
            .iter()
            .all(|s| *s == Some(true))
        })),
        Err(e) if code(&e) == Some("NoSuchPublicAccessBlockConfiguration") => Ok(false),
        Err(e) => Err(classify(&format!("public access block of {b}"), e)),
    }
}

/// Default encryption the specification accepts: SSE-S3, or a KMS key the operator chose.
fn encrypted(algorithm: Option<&str>) -> bool {
    matches!(algorithm, Some("AES256" | "aws:kms" | "aws:kms:dsse"))
}

/// Whether two values of a queue attribute mean the same (a redrive policy's
/// `maxReceiveCount` comes back as a number or a string).
fn same_attribute(name: &QueueAttributeName, want: &str, got: Option<&String>) -> bool {
    let Some(got) = got else { return false };
    if *name != QueueAttributeName::RedrivePolicy {
        return want == got;
    }
    match (redrive(want), redrive(got)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A redrive policy's target ARN and maxReceiveCount.
pub fn redrive(policy: &str) -> Option<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(policy).ok()?;
    let arn = v.get("deadLetterTargetArn")?.as_str()?.to_string();
    let max = match v.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some((arn, max))
}

fn attribute_label(name: &QueueAttributeName) -> String {
    match name {
        QueueAttributeName::VisibilityTimeout => "visibility timeout".into(),
        QueueAttributeName::RedrivePolicy => "redrive policy".into(),
        QueueAttributeName::MessageRetentionPeriod => "retention".into(),
        other => other.as_str().to_string(),
    }
}

/// The buckets and queues of one deployment, managed through its clients:
/// `Resources(&aws).ensure(..)`, `.destroy()`, `.inspect()`.
pub struct Resources<'a>(pub &'a Aws);

impl std::ops::Deref for Resources<'_> {
    type Target = Aws;
    fn deref(&self) -> &Aws {
        self.0
    }
}

impl Resources<'_> {
    /// Creates or repairs the buckets and queues of `ID` (idempotent): see the module
    /// documentation for the specification. One step per resource, in the order in, out,
    /// dlq, req, resp (the DLQ must exist before the request queue names it).
    pub async fn ensure(
        &self,
        region: &str,
        visibility: Duration,
        max_receive: u32,
    ) -> Result<Vec<Step>, SeamError> {
        let mut steps = Vec::new();
        for b in [&self.names.in_bucket, &self.names.out_bucket] {
            steps.push(self.ensure_bucket(b, region).await?);
        }
        let retention = DLQ_RETENTION_SECS.to_string();
        let (step, dlq) = self
            .ensure_queue(
                &self.names.dlq_queue,
                &[(QueueAttributeName::MessageRetentionPeriod, retention)],
            )
            .await?;
        steps.push(step);
        let arn = self.queue_arn_at(&dlq).await?;
        let redrive =
            serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": max_receive})
                .to_string();
        let (step, _) = self
            .ensure_queue(
                &self.names.req_queue,
                &[
                    (
                        QueueAttributeName::VisibilityTimeout,
                        visibility.as_secs().to_string(),
                    ),
                    (QueueAttributeName::RedrivePolicy, redrive),
                ],
            )
            .await?;
        steps.push(step);
        let (step, _) = self.ensure_queue(&self.names.resp_queue, &[]).await?;
        steps.push(step);
        Ok(steps)
    }

    async fn ensure_bucket(&self, b: &str, region: &str) -> Result<Step, SeamError> {
        let created = match self.s3.head_bucket().bucket(b).send().await {
            Ok(_) => false,
            Err(e) => match classify(&format!("bucket {b}"), e) {
                e if e.is_not_found() => {
                    self.create_bucket(b, region).await?;
                    true
                }
                // 403: the name is taken by another account.
                other => return Err(other),
            },
        };
        let mut fixed = Vec::new();
        if !public_access_blocked(&self.s3, b).await? {
            self.s3
                .put_public_access_block()
                .bucket(b)
                .public_access_block_configuration(
                    PublicAccessBlockConfiguration::builder()
                        .block_public_acls(true)
                        .ignore_public_acls(true)
                        .block_public_policy(true)
                        .restrict_public_buckets(true)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| classify(&format!("public access block of {b}"), e))?;
            fixed.push("public access block".to_string());
        }
        if !encrypted(bucket_encryption(&self.s3, b).await?.as_deref()) {
            let by_default = ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::Aes256)
                .build()
                .map_err(|e| SeamError::permanent(format!("encryption of {b}: {e}")))?;
            let config = ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(by_default)
                        .build(),
                )
                .build()
                .map_err(|e| SeamError::permanent(format!("encryption of {b}: {e}")))?;
            self.s3
                .put_bucket_encryption()
                .bucket(b)
                .server_side_encryption_configuration(config)
                .send()
                .await
                .map_err(|e| classify(&format!("encryption of {b}"), e))?;
            fixed.push("encryption".to_string());
        }
        Ok(Step::new(
            b,
            match (created, fixed.is_empty()) {
                (true, _) => Change::Created,
                (false, true) => Change::Exists,
                (false, false) => Change::Updated(fixed),
            },
        ))
    }

    async fn create_bucket(&self, b: &str, region: &str) -> Result<(), SeamError> {
        let mut req = self.s3.create_bucket().bucket(b);
        if region != "us-east-1" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(region.into())
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            // Created concurrently by another `up` of ours.
            Err(e) if code(&e) == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(classify(&format!("create bucket {b}"), e)),
        }
    }

    /// Creates the queue with `attrs`, or sets those of its attributes that differ.
    /// Returns the step and the queue's URL.
    async fn ensure_queue(
        &self,
        name: &str,
        attrs: &[(QueueAttributeName, String)],
    ) -> Result<(Step, String), SeamError> {
        let url = match self.queue(name).await {
            Ok(q) => q.url().to_string(),
            Err(e) if e.is_not_found() => {
                let mut req = self.sqs.create_queue().queue_name(name);
                for (k, v) in attrs {
                    req = req.attributes(k.clone(), v);
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| classify(&format!("create queue {name}"), e))?;
                let url = out
                    .queue_url()
                    .ok_or_else(|| SeamError::permanent(format!("queue {name}: no URL")))?;
                return Ok((Step::new(name, Change::Created), url.to_string()));
            }
            Err(e) => return Err(e),
        };
        let current = self.queue_attributes(&url).await?;
        let stale: Vec<&(QueueAttributeName, String)> = attrs
            .iter()
            .filter(|(k, v)| !same_attribute(k, v, current.get(k)))
            .collect();
        if stale.is_empty() {
            return Ok((Step::new(name, Change::Exists), url));
        }
        let mut req = self.sqs.set_queue_attributes().queue_url(&url);
        for (k, v) in &stale {
            req = req.attributes(k.clone(), v);
        }
        req.send()
            .await
            .map_err(|e| classify(&format!("attributes of {name}"), e))?;
        let what = stale.iter().map(|(k, _)| attribute_label(k)).collect();
        Ok((Step::new(name, Change::Updated(what)), url))
    }

    async fn queue_attributes(
        &self,
        url: &str,
    ) -> Result<HashMap<QueueAttributeName, String>, SeamError> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| classify("queue attributes", e))?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    async fn queue_arn_at(&self, url: &str) -> Result<String, SeamError> {
        self.queue_attributes(url)
            .await?
            .remove(&QueueAttributeName::QueueArn)
            .ok_or_else(|| SeamError::permanent(format!("{url} has no ARN")))
    }

    /// The ARN of one of `ID`'s queues (for IAM policies): `arn:aws:sqs:REGION:ACCOUNT:NAME`.
    pub async fn queue_arn(&self, name: &str) -> Result<String, SeamError> {
        let queue = self.queue(name).await?;
        self.queue_arn_at(queue.url()).await
    }

    /// Deletes the buckets (with their objects) and queues of `ID`; absent ones are
    /// reported, not an error, so `down` can run twice.
    pub async fn destroy(&self) -> Result<Vec<Step>, SeamError> {
        let mut steps = Vec::new();
        for b in [&self.names.in_bucket, &self.names.out_bucket] {
            steps.push(self.remove_bucket(b).await?);
        }
        for q in [
            &self.names.req_queue,
            &self.names.resp_queue,
            &self.names.dlq_queue,
        ] {
            let step = match self.queue(q).await {
                Ok(queue) => {
                    self.sqs
                        .delete_queue()
                        .queue_url(queue.url())
                        .send()
                        .await
                        .map_err(|e| classify(&format!("delete queue {q}"), e))?;
                    Step::new(q, Change::Removed)
                }
                Err(e) if e.is_not_found() => Step::new(q, Change::Absent),
                Err(e) => return Err(e),
            };
            steps.push(step);
        }
        Ok(steps)
    }

    async fn remove_bucket(&self, b: &str) -> Result<Step, SeamError> {
        if let Err(e) = self.s3.head_bucket().bucket(b).send().await {
            return match classify(&format!("bucket {b}"), e) {
                e if e.is_not_found() => Ok(Step::new(b, Change::Absent)),
                other => Err(other),
            };
        }
        let mut pages = self.s3.list_objects_v2().bucket(b).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify(&format!("list {b}"), e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    self.s3
                        .delete_object()
                        .bucket(b)
                        .key(k)
                        .send()
                        .await
                        .map_err(|e| classify(&format!("delete {k}"), e))?;
                }
            }
        }
        match self.s3.delete_bucket().bucket(b).send().await {
            Ok(_) => Ok(Step::new(b, Change::Removed)),
            Err(e) => match classify(&format!("delete bucket {b}"), e) {
                e if e.is_not_found() => Ok(Step::new(b, Change::Absent)),
                other => Err(other),
            },
        }
    }

    /// The state of every bucket and queue of `ID`, in the order in, out, req, resp, dlq:
    /// encryption and public access of the buckets; visibility timeout, redrive target and
    /// depth of the queues. Reading only.
    pub async fn inspect(&self) -> Result<Vec<ResourceState>, SeamError> {
        let mut out = Vec::new();
        for b in [&self.names.in_bucket, &self.names.out_bucket] {
            out.push(self.inspect_bucket(b).await?);
        }
        let dlq_arn = match self.queue_arn(&self.names.dlq_queue).await {
            Ok(arn) => Some(arn),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        for q in [
            &self.names.req_queue,
            &self.names.resp_queue,
            &self.names.dlq_queue,
        ] {
            let want_redrive = (q == &self.names.req_queue).then_some(dlq_arn.as_deref());
            out.push(self.inspect_queue(q, want_redrive).await?);
        }
        Ok(out)
    }

    async fn inspect_bucket(&self, b: &str) -> Result<ResourceState, SeamError> {
        if let Err(e) = self.s3.head_bucket().bucket(b).send().await {
            return match classify(&format!("bucket {b}"), e) {
                e if e.is_not_found() => Ok(ResourceState {
                    resource: b.to_string(),
                    health: Health::Missing,
                    detail: "bucket".into(),
                }),
                other => Err(other),
            };
        }
        let encryption = bucket_encryption(&self.s3, b).await?;
        let blocked = public_access_blocked(&self.s3, b).await?;
        let ok = blocked && encrypted(encryption.as_deref());
        Ok(ResourceState {
            resource: b.to_string(),
            health: if ok { Health::Exists } else { Health::Drift },
            detail: format!(
                "bucket encryption={} public-access-block={}",
                encryption.as_deref().unwrap_or("none"),
                if blocked { "all" } else { "incomplete" }
            ),
        })
    }

    /// `want_redrive`: for the request queue, `Some(the DLQ's ARN, if the DLQ exists)`.
    async fn inspect_queue(
        &self,
        name: &str,
        want_redrive: Option<Option<&str>>,
    ) -> Result<ResourceState, SeamError> {
        let queue = match self.queue(name).await {
            Ok(q) => q,
            Err(e) if e.is_not_found() => {
                return Ok(ResourceState {
                    resource: name.to_string(),
                    health: Health::Missing,
                    detail: "queue".into(),
                });
            }
            Err(e) => return Err(e),
        };
        let attrs = self.queue_attributes(queue.url()).await?;
        let depth = queue.depth().await?;
        let visibility = attrs
            .get(&QueueAttributeName::VisibilityTimeout)
            .map_or("?", String::as_str);
        let mut detail = format!("queue visibility={visibility}s");
        let mut health = Health::Exists;
        if let Some(want) = want_redrive {
            match attrs
                .get(&QueueAttributeName::RedrivePolicy)
                .and_then(|p| redrive(p))
            {
                Some((arn, max)) => {
                    let target = arn.rsplit(':').next().unwrap_or(&arn);
                    detail.push_str(&format!(" redrive={target} maxReceiveCount={max}"));
                    if want != Some(arn.as_str()) {
                        health = Health::Drift;
                    }
                }
                None => {
                    detail.push_str(" redrive=none");
                    health = Health::Drift;
                }
            }
        }
        detail.push_str(&format!(
            " waiting={} in-flight={}",
            depth.visible, depth.in_flight
        ));
        Ok(ResourceState {
            resource: name.to_string(),
            health,
            detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_compare_by_meaning() {
        let arn = "arn:aws:sqs:us-east-1:123456789012:x-dlq-queue";
        let ours = format!(r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":4}}"#);
        let theirs = format!(r#"{{"maxReceiveCount":"4","deadLetterTargetArn":"{arn}"}}"#);
        let name = QueueAttributeName::RedrivePolicy;
        assert!(same_attribute(&name, &ours, Some(&theirs)));
        assert!(!same_attribute(
            &name,
            &ours,
            Some(&ours.replace(":4", ":5"))
        ));
        assert!(!same_attribute(&name, &ours, None));
        assert_eq!(redrive(&theirs), Some((arn.to_string(), 4)));
    }

    #[test]
    fn steps_print_one_word_then_the_resource() {
        assert_eq!(
            Step::new("x-in-bucket", Change::Created).to_string(),
            "created  x-in-bucket"
        );
        assert_eq!(
            Step::new(
                "x-req-queue",
                Change::Updated(vec!["redrive policy".into()])
            )
            .to_string(),
            "updated  x-req-queue (redrive policy)"
        );
        assert!(!Step::new("x", Change::Exists).changed());
        assert!(Step::new("x", Change::Removed).changed());
    }
}
