//! `facerec infra up|status|policy|down` against a real AWS wire-protocol server (moto,
//! started per test): every resource with the attributes the issue specifies, `up` twice
//! changes nothing, drift is repaired and a changed template gets one new version, the
//! scaler launches from the template by default, `down` removes everything (twice is
//! fine), and each role's policy names only this deployment's buckets and queues.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::{Command, Output};

use aws_sdk_sqs::types::QueueAttributeName;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use facerec_infra::provision::Resources;
use facerec_seams::aws::Aws;
use facerec_testkit::Moto;

const REGION: &str = "us-east-1";
const ID: &str = "infra1";

fn facerec(endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facerec"));
    cmd.args(args);
    for var in [
        "FACEREC_AMI",
        "FACEREC_LAUNCH_TEMPLATE",
        "FACEREC_INSTANCE_PROFILE",
        "FACEREC_INSTANCE_TYPE",
        "FACEREC_WORKER_ROLE",
        "FACEREC_SECURITY_GROUPS",
        "FACEREC_POLICIES_DIR",
        "VISIBILITY_TIMEOUT",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("ID", ID)
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("MAX_RETRIES", "2")
        .output()
        .expect("facerec runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The first word of the line naming `resource` (`created`, `exists`, ...).
fn word_for(text: &str, resource: &str) -> String {
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(resource))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no line for {resource} in:\n{text}"))
        .to_string()
}

fn resources() -> Vec<String> {
    [
        "in-bucket",
        "out-bucket",
        "req-queue",
        "resp-queue",
        "dlq-queue",
        "worker",
    ]
    .iter()
    .map(|s| format!("{ID}-{s}"))
    .collect()
}

async fn queue_attributes(aws: &Aws, name: &str) -> HashMap<QueueAttributeName, String> {
    let queue = aws.queue(name).await.unwrap();
    aws.sqs
        .get_queue_attributes()
        .queue_url(queue.url())
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap()
        .attributes()
        .cloned()
        .unwrap()
}

async fn latest_template(ec2: &aws_sdk_ec2::Client) -> aws_sdk_ec2::types::LaunchTemplateVersion {
    ec2.describe_launch_template_versions()
        .launch_template_name(format!("{ID}-worker"))
        .versions("$Latest")
        .send()
        .await
        .unwrap()
        .launch_template_versions()[0]
        .clone()
}

/// Every s3/sqs statement names only `ID`'s buckets (and their objects) and queues.
fn assert_least_privilege(role: &str, doc: &serde_json::Value, queue_arns: &[String]) {
    assert_eq!(doc["Version"], "2012-10-17", "{role}");
    let statements = doc["Statement"].as_array().unwrap();
    assert!(!statements.is_empty(), "{role}");
    let bucket_prefixes = [
        format!("arn:aws:s3:::{ID}-in-bucket"),
        format!("arn:aws:s3:::{ID}-out-bucket"),
    ];
    for s in statements {
        assert_eq!(s["Effect"], "Allow", "{role}: {s}");
        let actions: Vec<&str> = s["Action"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let resources: Vec<&str> = s["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(!resources.is_empty(), "{role}: {s}");
        for a in &actions {
            if a.starts_with("s3:") {
                for r in &resources {
                    assert!(
                        bucket_prefixes
                            .iter()
                            .any(|b| *r == b || r.starts_with(&format!("{b}/"))),
                        "{role}: {a} on {r}"
                    );
                }
            } else if a.starts_with("sqs:") {
                for r in &resources {
                    assert!(queue_arns.iter().any(|q| q == r), "{role}: {a} on {r}");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infra_up_status_policy_down_on_moto() {
    let moto = Moto::start();
    let url = moto.url.clone();
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(&url)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .http_client(facerec_seams::aws::https_client())
        .load()
        .await;
    let aws = Aws::from_config(ID, &config);
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let ami = ec2.describe_images().send().await.unwrap().images()[0]
        .image_id()
        .unwrap()
        .to_string();
    let policies = tempfile::tempdir().unwrap();
    let policies_dir = policies.path().to_str().unwrap().to_string();
    let up = |visibility: &str| {
        facerec(
            &url,
            &[
                "infra",
                "up",
                "--ami",
                &ami,
                "--visibility-timeout",
                visibility,
                "--instance-profile",
                "infra1-worker-profile",
                "--policies-dir",
                &policies_dir,
            ],
        )
    };

    // Without an AMI the launch template is skipped, and says so.
    let first = ok(facerec(
        &url,
        &["infra", "up", "--visibility-timeout", "120"],
    ));
    for r in &resources()[..5] {
        assert_eq!(word_for(&first, r), "created", "{first}");
    }
    assert_eq!(
        word_for(&first, &format!("{ID}-worker")),
        "skipped",
        "{first}"
    );
    assert!(first.contains("FACEREC_AMI"), "{first}");

    // With it, only the template is new.
    let with_ami = ok(up("120"));
    for r in &resources()[..5] {
        assert_eq!(word_for(&with_ami, r), "exists", "{with_ami}");
    }
    assert_eq!(word_for(&with_ami, &format!("{ID}-worker")), "created");
    assert!(with_ami.trim_end().ends_with("1 changed"), "{with_ami}");

    // A second identical `up` changes nothing and says so per resource.
    let again = ok(up("120"));
    for r in resources() {
        assert_eq!(word_for(&again, &r), "exists", "{again}");
    }
    assert!(
        !again.contains("created") && !again.contains("updated"),
        "{again}"
    );
    assert!(again.trim_end().ends_with("no changes"), "{again}");

    // Buckets: all four public-access-block settings, SSE-S3 by default.
    for b in [&aws.names.in_bucket, &aws.names.out_bucket] {
        let pab = aws
            .s3
            .get_public_access_block()
            .bucket(b)
            .send()
            .await
            .unwrap();
        let c = pab.public_access_block_configuration().unwrap();
        for setting in [
            c.block_public_acls(),
            c.ignore_public_acls(),
            c.block_public_policy(),
            c.restrict_public_buckets(),
        ] {
            assert_eq!(setting, Some(true), "{b}: {c:?}");
        }
        let enc = aws
            .s3
            .get_bucket_encryption()
            .bucket(b)
            .send()
            .await
            .unwrap();
        let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
        assert_eq!(
            rule.apply_server_side_encryption_by_default()
                .unwrap()
                .sse_algorithm()
                .as_str(),
            "AES256"
        );
    }
    // Queues: the request queue's visibility timeout and redrive to the DLQ after
    // MAX_RETRIES + 1 deliveries.
    let dlq = queue_attributes(&aws, &aws.names.dlq_queue).await;
    let dlq_arn = dlq[&QueueAttributeName::QueueArn].clone();
    let req = queue_attributes(&aws, &aws.names.req_queue).await;
    assert_eq!(req[&QueueAttributeName::VisibilityTimeout], "120");
    let redrive: serde_json::Value =
        serde_json::from_str(&req[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "3"
    );
    assert_eq!(dlq[&QueueAttributeName::MessageRetentionPeriod], "1209600");
    // The launch template: not re-versioned by the second `up`.
    let v = latest_template(&ec2).await;
    assert_eq!(v.version_number(), Some(1));
    let data = v.launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some(ami.as_str()));
    assert_eq!(
        data.instance_type().map(|t| t.as_str()),
        Some("g4dn.xlarge")
    );
    assert_eq!(
        data.iam_instance_profile().and_then(|p| p.name()),
        Some("infra1-worker-profile")
    );
    let script = String::from_utf8(STANDARD.decode(data.user_data().unwrap()).unwrap()).unwrap();
    for needle in [
        "ExecStart=/opt/facerec/bin/facerec worker",
        "\nID=infra1\n",
        "\nAWS_REGION=us-east-1\n",
        "\nVISIBILITY_TIMEOUT=120\n",
        "\nMAX_RETRIES=2\n",
        "\nFACEREC_MODELS=/opt/facerec/models\n",
    ] {
        assert!(script.contains(needle), "{needle:?} not in\n{script}");
    }

    // Drift is repaired: a changed visibility timeout updates the queue and adds exactly
    // one template version (its user-data carries the setting).
    let changed = ok(up("90"));
    assert!(
        changed.contains(&format!("updated  {ID}-req-queue (visibility timeout)")),
        "{changed}"
    );
    assert!(
        changed.contains(&format!("updated  {ID}-worker (user-data, now version 2)")),
        "{changed}"
    );
    assert_eq!(word_for(&changed, &aws.names.in_bucket), "exists");
    assert_eq!(latest_template(&ec2).await.version_number(), Some(2));
    aws.s3
        .delete_public_access_block()
        .bucket(&aws.names.out_bucket)
        .send()
        .await
        .unwrap();
    let drift = facerec(&url, &["infra", "status"]);
    assert_eq!(drift.status.code(), Some(1), "{}", stdout(&drift));
    assert_eq!(word_for(&stdout(&drift), &aws.names.out_bucket), "drift");
    let repaired = ok(up("90"));
    assert!(
        repaired.contains(&format!("updated  {ID}-out-bucket (public access block)")),
        "{repaired}"
    );
    assert_eq!(latest_template(&ec2).await.version_number(), Some(2));

    // The scaler launches from `${ID}-worker` when given no template or AMI.
    let req_queue = aws.queue(&aws.names.req_queue).await.unwrap();
    facerec_seams::Queue::send(&req_queue, vec!["{\"v\":1}".into()])
        .await
        .unwrap();
    aws.s3
        .put_object()
        .bucket(&aws.names.in_bucket)
        .key("uploads/r1")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"jpeg"))
        .send()
        .await
        .unwrap();
    let scaled = ok(facerec(&url, &["scaler", "--once", "--source", "queue"]));
    let line: serde_json::Value = serde_json::from_str(scaled.trim()).unwrap();
    assert_eq!(line["action"], "launch:1", "{scaled}");
    assert_eq!(line["outcome"], "ok", "{scaled}");

    // Status: every resource exists as specified, with its settings.
    let status = ok(facerec(&url, &["infra", "status"]));
    for r in resources() {
        assert_eq!(word_for(&status, &r), "exists", "{status}");
    }
    for needle in [
        "encryption=AES256 public-access-block=all",
        &format!("redrive={ID}-dlq-queue maxReceiveCount=3"),
        "visibility=90s",
        "waiting=1",
        &format!("version=2 ami={ami} type=g4dn.xlarge instance-profile=infra1-worker-profile"),
    ] {
        assert!(status.contains(needle), "{needle:?} not in\n{status}");
    }
    let workers = status.lines().find(|l| l.starts_with("workers")).unwrap();
    assert!(
        workers.contains("1 running, 0 pending") || workers.contains("0 running, 1 pending"),
        "{workers}"
    );

    // Policies: printed per role, also written by `up --policies-dir`; valid JSON naming
    // only this deployment's buckets and queues, never `*` for s3/sqs actions.
    let queue_arns: Vec<String> = {
        let mut v = Vec::new();
        for q in [
            &aws.names.req_queue,
            &aws.names.resp_queue,
            &aws.names.dlq_queue,
        ] {
            v.push(Resources(&aws).queue_arn(q).await.unwrap());
        }
        v
    };
    for role in ["edge", "worker", "scaler"] {
        let printed = ok(facerec(
            &url,
            &[
                "infra",
                "policy",
                "--role",
                role,
                "--instance-profile",
                "infra1-worker-profile",
            ],
        ));
        let doc: serde_json::Value = serde_json::from_str(&printed).unwrap();
        assert_least_privilege(role, &doc, &queue_arns);
        let written =
            std::fs::read_to_string(policies.path().join(format!("{role}-policy.json"))).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&written).unwrap(),
            doc,
            "{role}"
        );
        let actions = doc.to_string();
        match role {
            "edge" => {
                for a in ["s3:PutObject", "sqs:SendMessage", "sqs:ReceiveMessage"] {
                    assert!(actions.contains(a), "{role}: {a}");
                }
                assert!(!actions.contains("ec2:"), "{actions}");
            }
            "worker" => {
                for a in ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage"] {
                    assert!(actions.contains(a), "{role}: {a}");
                }
                assert!(
                    actions.contains(&queue_arns[2]),
                    "the worker sends to the DLQ"
                );
            }
            _ => {
                for a in [
                    "ec2:RunInstances",
                    "ec2:TerminateInstances",
                    "iam:PassRole",
                    "aws:ResourceTag/facerec:id",
                    "role/infra1-worker-profile",
                ] {
                    assert!(actions.contains(a), "{role}: {a}");
                }
                assert!(!actions.contains("s3:"), "{actions}");
            }
        }
    }

    // Down removes everything: the worker instance, the template, buckets with their
    // objects, queues.
    let down = ok(facerec(&url, &["infra", "down"]));
    for r in resources() {
        assert_eq!(word_for(&down, &r), "removed", "{down}");
    }
    assert!(
        down.contains(&format!("removed  {ID} worker instances i-")),
        "{down}"
    );
    assert!(
        aws.s3
            .head_bucket()
            .bucket(&aws.names.in_bucket)
            .send()
            .await
            .is_err()
    );
    assert!(aws.queue(&aws.names.req_queue).await.is_err());
    assert!(
        ec2.describe_launch_templates()
            .launch_template_names(format!("{ID}-worker"))
            .send()
            .await
            .is_err()
    );
    let gone = facerec(&url, &["infra", "status"]);
    assert_eq!(gone.status.code(), Some(1), "{}", stdout(&gone));
    for r in resources() {
        assert_eq!(word_for(&stdout(&gone), &r), "missing");
    }
    assert!(stdout(&gone).contains("workers  0 running"));

    // ... and a second `down` is fine.
    let twice = ok(facerec(&url, &["infra", "down"]));
    for r in resources() {
        assert_eq!(word_for(&twice, &r), "absent", "{twice}");
    }
    assert!(twice.trim_end().ends_with("no changes"), "{twice}");
}
