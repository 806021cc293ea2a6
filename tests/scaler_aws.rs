//! The scaler against a real AWS wire-protocol server (moto, started per test): the EC2
//! fleet (RunInstances, DescribeInstances, Stop/Start/TerminateInstances, tags, states),
//! the SQS queue-depth source, the controller's circuit breaker on fleet failures, and the
//! `facerec scaler --once` command line.

// Helpers of a test panic on failure like the tests themselves.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use facerec_infra::provision::Resources;
use facerec_scaler::ec2::{Ec2Fleet, LaunchSpec, ScaleIn, TAG_ID, TAG_ROLE};
use facerec_scaler::{
    Action, Combined, Controller, ControllerConfig, Fleet, MemberState, Policy, QueueDepth, Scaler,
    ScalerMetrics,
};
use facerec_seams::Queue;
use facerec_seams::aws::{Aws, AwsSettings, sdk_config};
use facerec_testkit::{Moto, free_port};

const REGION: &str = "us-east-1";

async fn config(endpoint: &str) -> aws_config::SdkConfig {
    // SAFETY: set before any other thread of this test reads the environment.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
    }
    sdk_config(&AwsSettings {
        region: REGION.into(),
        endpoint: Some(endpoint.into()),
        max_retries: 1,
    })
    .await
}

async fn some_ami(client: &aws_sdk_ec2::Client) -> String {
    let images = client
        .describe_images()
        .send()
        .await
        .expect("DescribeImages");
    images.images()[0]
        .image_id()
        .expect("an image id")
        .to_string()
}

fn states(members: &[facerec_scaler::Member]) -> Vec<MemberState> {
    let mut s: Vec<_> = members.iter().map(|m| m.state).collect();
    s.sort_by_key(|s| format!("{s:?}"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_fleet_launches_finds_stops_starts_and_terminates_by_tag() {
    let moto = Moto::start();
    let cfg = config(&moto.url).await;
    let client = aws_sdk_ec2::Client::new(&cfg);
    let ami = some_ami(&client).await;
    let script = "#!/bin/sh\nfacerec worker\n";
    let fleet = Ec2Fleet::new(
        client.clone(),
        "fleet1".into(),
        LaunchSpec::Image {
            ami: ami.clone(),
            instance_type: "g4dn.xlarge".into(),
            user_data: Some(script.into()),
            instance_profile: None,
        },
        ScaleIn::Terminate,
    );
    // Instances of another deployment, or untagged ones, are not members.
    client
        .run_instances()
        .image_id(&ami)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .tags(Tag::builder().key(TAG_ID).value("other").build())
                .tags(Tag::builder().key(TAG_ROLE).value("worker").build())
                .build(),
        )
        .send()
        .await
        .expect("RunInstances");
    client
        .run_instances()
        .image_id(&ami)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("RunInstances");
    assert!(fleet.members().await.expect("members").is_empty());

    assert_eq!(fleet.launch(3).await.expect("launch"), 3);
    let members = fleet.members().await.expect("members");
    assert_eq!(members.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| matches!(m.state, MemberState::Pending | MemberState::Running))
    );
    assert!(
        members.iter().all(|m| m.launched_at > 1.6e9),
        "launch times are read"
    );
    // Tags and instance type as specified.
    let described = client
        .describe_instances()
        .instance_ids(&members[0].id)
        .send()
        .await
        .expect("describe");
    let instance = &described.reservations()[0].instances()[0];
    assert_eq!(
        instance.instance_type().map(|t| t.as_str()),
        Some("g4dn.xlarge")
    );
    let tag = |k: &str| {
        instance
            .tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
            .map(str::to_string)
    };
    assert_eq!(tag(TAG_ID).as_deref(), Some("fleet1"));
    assert_eq!(tag(TAG_ROLE).as_deref(), Some("worker"));
    let user_data = client
        .describe_instance_attribute()
        .instance_id(&members[0].id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .expect("DescribeInstanceAttribute");
    assert!(
        user_data
            .user_data()
            .and_then(|u| u.value())
            .is_some_and(|v| !v.is_empty()),
        "user-data is set"
    );

    fleet
        .terminate(&[members[0].id.clone()])
        .await
        .expect("terminate");
    let left = fleet.members().await.expect("members");
    assert_eq!(left.len(), 2, "terminated instances are no longer members");
    assert!(!left.iter().any(|m| m.id == members[0].id));

    // Stop-on-scale-in: stopped instances stay members (not capacity) and are started
    // again before anything new is launched.
    let stopping = Ec2Fleet::new(
        client.clone(),
        "fleet2".into(),
        LaunchSpec::Image {
            ami: ami.clone(),
            instance_type: "g5.xlarge".into(),
            user_data: None,
            instance_profile: None,
        },
        ScaleIn::Stop,
    );
    assert_eq!(stopping.launch(2).await.expect("launch"), 2);
    let two = stopping.members().await.expect("members");
    stopping
        .terminate(&[two[0].id.clone()])
        .await
        .expect("stop");
    assert_eq!(
        states(&stopping.members().await.expect("members")),
        vec![MemberState::Running, MemberState::Stopped]
    );
    assert_eq!(stopping.launch(1).await.expect("start"), 1);
    let after = stopping.members().await.expect("members");
    assert_eq!(
        after.len(),
        2,
        "the stopped instance was started, none launched"
    );
    assert!(
        after
            .iter()
            .all(|m| matches!(m.state, MemberState::Pending | MemberState::Running))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_follows_the_sqs_backlog_with_the_ec2_fleet() {
    let moto = Moto::start();
    let cfg = config(&moto.url).await;
    let aws = Aws::from_config("scale1", &cfg);
    Resources(&aws)
        .ensure(REGION, Duration::from_secs(30), 4)
        .await
        .expect("infra");
    let queue = Arc::new(aws.queue(&aws.names.req_queue).await.expect("queue"));
    let client = aws_sdk_ec2::Client::new(&cfg);
    let ami = some_ami(&client).await;
    client
        .create_launch_template()
        .launch_template_name("scale1-worker")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(&ami)
                .instance_type(aws_sdk_ec2::types::InstanceType::G4dnXlarge)
                .build(),
        )
        .send()
        .await
        .expect("CreateLaunchTemplate");
    let fleet = Arc::new(Ec2Fleet::new(
        client,
        "scale1".into(),
        LaunchSpec::Template {
            name: "scale1-worker".into(),
            version: None,
        },
        ScaleIn::Terminate,
    ));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ScalerMetrics::register(&mut registry);
    // 1 message/s per worker x 10 s acceptable wait: 10 messages per worker.
    let policy = Policy {
        max_workers: 4,
        default_rate: 1.0,
        target_latency: 10.0,
        scale_in_window: 0.0,
        ..Policy::default()
    };
    let mut controller = Controller::new(
        Scaler::new(policy),
        Combined {
            sources: vec![Arc::new(QueueDepth {
                queue: queue.clone(),
            })],
        },
        fleet.clone(),
        metrics,
        ControllerConfig::default(),
    );

    let idle = controller.tick().await;
    assert_eq!(idle.decision.action, Action::None);
    assert_eq!(
        fleet.members().await.expect("members").len(),
        0,
        "zero workers when idle"
    );

    queue
        .send((0..25).map(|i| format!("{{\"n\":{i}}}")).collect())
        .await
        .expect("send");
    let busy = controller.tick().await;
    assert_eq!(busy.sample.backlog.map(|b| b.visible), Some(25));
    assert_eq!(busy.decision.action, Action::Launch(3), "{busy:?}");
    assert_eq!(busy.outcome, "ok");
    assert_eq!(fleet.members().await.expect("members").len(), 3);
    // Launched instances count as capacity: no second launch for the same backlog.
    assert_eq!(controller.tick().await.decision.action, Action::None);

    // Drain the queue; with no window, idle workers go (4 per step).
    loop {
        let got = queue
            .receive(10, Duration::from_millis(100))
            .await
            .expect("receive");
        if got.is_empty() {
            break;
        }
        queue
            .ack(got.into_iter().map(|m| m.receipt).collect())
            .await
            .expect("ack");
    }
    let drained = controller.tick().await;
    assert!(
        matches!(drained.decision.action, Action::Terminate(ref ids) if ids.len() == 3),
        "{drained:?}"
    );
    assert_eq!(fleet.members().await.expect("members").len(), 0);
    let text = facerec_seams::metrics::render(&registry);
    assert!(
        text.contains("facerec_scaler_actions_total{kind=\"launch\",outcome=\"ok\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("facerec_scaler_actions_total{kind=\"terminate\",outcome=\"ok\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_failures_open_the_circuit_and_missing_depth_holds() {
    // An endpoint where nothing listens: every call fails.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let cfg = config(&dead).await;
    let fleet = Arc::new(Ec2Fleet::new(
        aws_sdk_ec2::Client::new(&cfg),
        "dead".into(),
        LaunchSpec::Template {
            name: "x".into(),
            version: None,
        },
        ScaleIn::Terminate,
    ));
    // The queue exists on a moto server that then goes away: its depth cannot be read.
    let queue: Arc<dyn Queue> = {
        let moto = Moto::start();
        let aws = Aws::from_config("dead", &config(&moto.url).await);
        Resources(&aws)
            .ensure(REGION, Duration::from_secs(30), 4)
            .await
            .expect("infra");
        Arc::new(aws.queue(&aws.names.req_queue).await.expect("queue"))
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ScalerMetrics::register(&mut registry);
    let mut controller = Controller::new(
        Scaler::new(Policy::default()),
        Combined {
            sources: vec![Arc::new(QueueDepth { queue })],
        },
        fleet,
        metrics,
        ControllerConfig {
            breaker_after: 2,
            ..ControllerConfig::default()
        },
    );
    for _ in 0..3 {
        let r = controller.tick().await;
        assert!(matches!(r.decision.action, Action::Hold(_)), "{r:?}");
        assert!(r.sample.backlog.is_none());
    }
    let text = facerec_seams::metrics::render(&registry);
    assert!(text.contains("facerec_scaler_circuit_open 1"), "{text}");
    assert!(
        text.contains("facerec_scaler_source_errors_total{source=\"queue\"} 3"),
        "{text}"
    );
}

#[test]
fn scaler_command_once_reports_a_dry_run_decision() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let cfg = config(&moto.url).await;
        let aws = Aws::from_config("once1", &cfg);
        Resources(&aws)
            .ensure(REGION, Duration::from_secs(30), 4)
            .await
            .expect("infra");
        let queue = aws.queue(&aws.names.req_queue).await.expect("queue");
        queue
            .send((0..7).map(|i| i.to_string()).collect())
            .await
            .expect("send");
    });
    let out = Command::new(env!("CARGO_BIN_EXE_facerec"))
        .args(["scaler", "--once", "--fleet", "none", "--source", "queue"])
        .env("ID", "once1")
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", &moto.url)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("FACEREC_WORKER_RATE", "1")
        .env("FACEREC_TARGET_LATENCY", "2")
        .output()
        .expect("facerec runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["visible"], 7);
    assert_eq!(line["desired"], 4, "7 messages at 2 per worker");
    assert_eq!(line["action"], "launch:4");
    assert_eq!(line["outcome"], "dry run");
}
