//! Least-privilege IAM policy documents, one per role, naming exactly one deployment's
//! resources. Each statement lists what the role's code calls (the SDK calls in
//! `seams/src/aws.rs`, the edge and worker through it, `scaler/src/ec2.rs` and the
//! scaler's queue source), so a new call needs a line here too.
//!
//! Notes on the shape:
//! - `HeadObject` needs `s3:GetObject`; without `s3:ListBucket` S3 answers a missing key
//!   with 403 instead of 404, and the edge and workers read "no result yet" and "no
//!   gallery yet" from that 404. `HeadBucket` (the edge's readiness check) needs
//!   `s3:ListBucket` too.
//! - The batch SQS calls need the single-message actions (`SendMessageBatch` →
//!   `sqs:SendMessage`, ...).
//! - `ec2:DescribeInstances` has no resource-level permissions: its resource is `*`. The
//!   instance-changing EC2 actions are conditioned on the deployment's `facerec:id` tag.

use anyhow::{Context, Result};
use clap::ValueEnum;
use facerec_scaler::ec2::{TAG_ID, TAG_ROLE};
use facerec_seams::aws::Names;
use facerec_seams::gallery::GALLERY_KEY;
use serde_json::{Value, json};

/// The roles that run with AWS credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// `facerec edge`: uploads, requests, responses, the gallery.
    Edge,
    /// `facerec worker` on the GPU instances (the instance profile's role).
    Worker,
    /// `facerec scaler`: the request queue's depth and the worker instances.
    Scaler,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Edge, Role::Worker, Role::Scaler];

    pub fn name(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Worker => "worker",
            Role::Scaler => "scaler",
        }
    }
}

/// What the documents name: the deployment's resources and where they live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inputs {
    pub id: String,
    pub names: Names,
    /// `aws`, `aws-cn`, `aws-us-gov`: from the queue ARNs.
    pub partition: String,
    pub region: String,
    pub account: String,
    pub req_arn: String,
    pub resp_arn: String,
    pub dlq_arn: String,
    /// The workers' launch template id (`lt-...`), when it exists.
    pub template_id: Option<String>,
    /// The role of the worker instances, which the scaler passes to EC2.
    pub worker_role: String,
}

impl Inputs {
    /// Takes partition, region and account from the request queue's ARN
    /// (`arn:PARTITION:sqs:REGION:ACCOUNT:NAME`).
    pub fn new(
        id: &str,
        [req_arn, resp_arn, dlq_arn]: [String; 3],
        template_id: Option<String>,
        worker_role: String,
    ) -> Result<Self> {
        let parts: Vec<&str> = req_arn.split(':').collect();
        let [_, partition, _, region, account, _] = parts.as_slice() else {
            anyhow::bail!("unexpected queue ARN {req_arn}");
        };
        let (partition, region, account) = (
            partition.to_string(),
            region.to_string(),
            account.to_string(),
        );
        Ok(Self {
            id: id.to_string(),
            names: Names::for_id(id),
            partition,
            region,
            account,
            req_arn,
            resp_arn,
            dlq_arn,
            template_id,
            worker_role,
        })
    }

    fn bucket(&self, name: &str) -> String {
        format!("arn:{}:s3:::{name}", self.partition)
    }

    fn objects(&self, bucket: &str, prefix: &str) -> String {
        format!("arn:{}:s3:::{bucket}/{prefix}", self.partition)
    }

    fn ec2(&self, resource: &str) -> String {
        format!(
            "arn:{}:ec2:{}:{}:{resource}",
            self.partition, self.region, self.account
        )
    }
}

fn allow(sid: &str, actions: &[&str], resources: Vec<String>) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources})
}

fn allow_if(sid: &str, actions: &[&str], resources: Vec<String>, condition: Value) -> Value {
    let mut s = allow(sid, actions, resources);
    s["Condition"] = condition;
    s
}

/// The policy document of `role`.
pub fn document(role: Role, i: &Inputs) -> Value {
    let n = &i.names;
    let statements = match role {
        Role::Edge => vec![
            allow(
                "StoreUploads",
                &["s3:PutObject"],
                vec![i.objects(&n.in_bucket, "uploads/*")],
            ),
            allow(
                "ReadResultsJobsAndGallery",
                &["s3:GetObject"],
                vec![
                    i.objects(&n.out_bucket, "results/*"),
                    i.objects(&n.out_bucket, "batches/*"),
                    i.objects(&n.out_bucket, GALLERY_KEY),
                ],
            ),
            allow(
                "StoreBulkJobs",
                &["s3:PutObject"],
                vec![
                    // Manifests, and the results of files the edge rejects itself.
                    i.objects(&n.out_bucket, "batches/*"),
                    i.objects(&n.out_bucket, "results/*"),
                ],
            ),
            allow(
                "BucketsForNotFoundAndReadiness",
                &["s3:ListBucket"],
                vec![i.bucket(&n.in_bucket), i.bucket(&n.out_bucket)],
            ),
            allow(
                "SendRequests",
                &[
                    "sqs:SendMessage",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                ],
                vec![i.req_arn.clone()],
            ),
            allow(
                "ReceiveResponses",
                &["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl"],
                vec![i.resp_arn.clone()],
            ),
            allow(
                "LookUpDeadLetterQueue",
                &["sqs:GetQueueUrl"],
                vec![i.dlq_arn.clone()],
            ),
        ],
        Role::Worker => vec![
            allow(
                "ReadUploads",
                &["s3:GetObject"],
                vec![i.objects(&n.in_bucket, "uploads/*")],
            ),
            allow(
                "WriteResults",
                &["s3:GetObject", "s3:PutObject"],
                vec![i.objects(&n.out_bucket, "results/*")],
            ),
            allow(
                "ReadGallery",
                &["s3:GetObject"],
                vec![i.objects(&n.out_bucket, GALLERY_KEY)],
            ),
            allow(
                "BucketsForNotFound",
                &["s3:ListBucket"],
                vec![i.bucket(&n.in_bucket), i.bucket(&n.out_bucket)],
            ),
            allow(
                "ConsumeRequests",
                &[
                    "sqs:ReceiveMessage",
                    "sqs:DeleteMessage",
                    "sqs:ChangeMessageVisibility",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                ],
                vec![i.req_arn.clone()],
            ),
            allow(
                "SendResponsesAndDeadLetters",
                &["sqs:SendMessage", "sqs:GetQueueUrl"],
                vec![i.resp_arn.clone(), i.dlq_arn.clone()],
            ),
        ],
        Role::Scaler => {
            let tagged = json!({"StringEquals": {
                format!("aws:ResourceTag/{TAG_ID}"): i.id,
                format!("aws:ResourceTag/{TAG_ROLE}"): "worker",
            }});
            let launch_template = i.ec2(&format!(
                "launch-template/{}",
                i.template_id.as_deref().unwrap_or("*")
            ));
            vec![
                allow(
                    "ReadBacklog",
                    &["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                    vec![i.req_arn.clone()],
                ),
                allow("FindWorkers", &["ec2:DescribeInstances"], vec!["*".into()]),
                allow_if(
                    "LaunchTaggedWorkers",
                    &["ec2:RunInstances"],
                    vec![i.ec2("instance/*")],
                    json!({"StringEquals": {
                        format!("aws:RequestTag/{TAG_ID}"): i.id,
                        format!("aws:RequestTag/{TAG_ROLE}"): "worker",
                    }}),
                ),
                allow(
                    "LaunchFromTheTemplate",
                    &["ec2:RunInstances"],
                    vec![
                        launch_template,
                        format!("arn:{}:ec2:{}::image/*", i.partition, i.region),
                        i.ec2("volume/*"),
                        i.ec2("network-interface/*"),
                        i.ec2("security-group/*"),
                        i.ec2("subnet/*"),
                        i.ec2("key-pair/*"),
                    ],
                ),
                allow_if(
                    "TagAtLaunch",
                    &["ec2:CreateTags"],
                    vec![i.ec2("instance/*"), i.ec2("volume/*")],
                    json!({"StringEquals": {"ec2:CreateAction": "RunInstances"}}),
                ),
                allow_if(
                    "StartStopTerminateOwnWorkers",
                    &[
                        "ec2:StartInstances",
                        "ec2:StopInstances",
                        "ec2:TerminateInstances",
                    ],
                    vec![i.ec2("instance/*")],
                    tagged,
                ),
                allow_if(
                    "PassTheWorkerRole",
                    &["iam:PassRole"],
                    vec![format!(
                        "arn:{}:iam::{}:role/{}",
                        i.partition, i.account, i.worker_role
                    )],
                    json!({"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
                ),
            ]
        }
    };
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The document of `role` as pretty JSON, newline-terminated.
pub fn render(role: Role, i: &Inputs) -> Result<String> {
    let mut s = serde_json::to_string_pretty(&document(role, i))
        .with_context(|| format!("the {} policy", role.name()))?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn inputs() -> Inputs {
        let arn = |q: &str| format!("arn:aws:sqs:eu-west-1:123456789012:demo-{q}-queue");
        Inputs::new(
            "demo",
            [arn("req"), arn("resp"), arn("dlq")],
            Some("lt-0abc".into()),
            "demo-worker".into(),
        )
        .unwrap()
    }

    #[test]
    fn storage_and_queue_statements_name_only_this_deployment() {
        let i = inputs();
        for role in Role::ALL {
            let doc = document(role, &i);
            for s in doc["Statement"].as_array().unwrap() {
                let actions: Vec<&str> = s["Action"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                if !actions
                    .iter()
                    .any(|a| a.starts_with("s3:") || a.starts_with("sqs:"))
                {
                    continue;
                }
                for r in s["Resource"].as_array().unwrap() {
                    let r = r.as_str().unwrap();
                    assert!(r.contains("demo-"), "{role:?}: {r}");
                    assert!(
                        !r.ends_with(":*") && r != "*",
                        "{role:?}: wildcard resource {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_scaler_acts_only_on_its_tagged_instances_and_template() {
        let doc = document(Role::Scaler, &inputs()).to_string();
        assert!(
            doc.contains(r#""aws:ResourceTag/facerec:id":"demo""#),
            "{doc}"
        );
        assert!(
            doc.contains(r#""aws:RequestTag/facerec:id":"demo""#),
            "{doc}"
        );
        assert!(
            doc.contains("arn:aws:ec2:eu-west-1:123456789012:launch-template/lt-0abc"),
            "{doc}"
        );
        assert!(
            doc.contains("arn:aws:iam::123456789012:role/demo-worker"),
            "{doc}"
        );
    }
}
