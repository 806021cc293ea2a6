//! The EC2 fleet: GPU worker instances found by their tags (`facerec:id`,
//! `facerec:role=worker`), launched from a launch template or from an AMI + instance type +
//! user-data, terminated or stopped; stopped instances are started first when configured.

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_ec2::types::{
    Filter, InstanceStateName, InstanceType, LaunchTemplateSpecification, ResourceType, Tag,
    TagSpecification,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::decide::{Member, MemberState};
use crate::fleet::{Fleet, FleetError};

/// Tag holding the deployment `ID`.
pub const TAG_ID: &str = "facerec:id";
/// Tag holding the role (`worker`).
pub const TAG_ROLE: &str = "facerec:role";

/// The name of the workers' launch template: what `facerec infra up` creates and what
/// `facerec scaler` launches from by default.
pub fn worker_template_name(id: &str) -> String {
    format!("{id}-worker")
}

/// How worker instances are launched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchSpec {
    /// A launch template (by name), e.g. the one `facerec infra up` creates.
    Template {
        name: String,
        version: Option<String>,
    },
    /// An AMI and instance type with user-data (the script that starts `facerec worker`).
    Image {
        ami: String,
        instance_type: String,
        user_data: Option<String>,
        instance_profile: Option<String>,
    },
}

/// What to do with workers no longer needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleIn {
    Terminate,
    /// Stop them (kept for a fast restart; start them again before launching new ones).
    Stop,
}

pub struct Ec2Fleet {
    client: Client,
    id: String,
    launch: LaunchSpec,
    scale_in: ScaleIn,
}

/// An EC2 call's failure, classified as the queue and store seams classify theirs (the
/// error code kept; throttling and 5xx retryable).
fn err<E>(op: &str, e: aws_sdk_ec2::error::SdkError<E, HttpResponse>) -> FleetError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    FleetError::Cloud {
        source: facerec_seams::aws::classify(op, e),
    }
}

impl Ec2Fleet {
    pub fn new(client: Client, id: String, launch: LaunchSpec, scale_in: ScaleIn) -> Self {
        Ec2Fleet {
            client,
            id,
            launch,
            scale_in,
        }
    }

    /// Every instance of this deployment's worker role, with its raw state.
    async fn instances(&self) -> Result<Vec<(String, InstanceStateName, f64)>, FleetError> {
        let mut out = Vec::new();
        let mut token = None;
        loop {
            let resp = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name(format!("tag:{TAG_ID}"))
                        .values(&self.id)
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name(format!("tag:{TAG_ROLE}"))
                        .values("worker")
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| err("DescribeInstances", e))?;
            for r in resp.reservations() {
                for i in r.instances() {
                    let (Some(id), Some(state)) =
                        (i.instance_id(), i.state().and_then(|s| s.name()))
                    else {
                        continue;
                    };
                    let at = i.launch_time().map_or(0.0, |t| t.as_secs_f64());
                    out.push((id.to_string(), state.clone(), at));
                }
            }
            token = resp.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    fn tags(&self) -> TagSpecification {
        TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(worker_tags(&self.id)))
            .build()
    }
}

#[async_trait]
impl Fleet for Ec2Fleet {
    fn name(&self) -> &'static str {
        "ec2"
    }

    async fn members(&self) -> Result<Vec<Member>, FleetError> {
        Ok(self
            .instances()
            .await?
            .into_iter()
            .filter_map(|(id, state, launched_at)| {
                let state = match state {
                    InstanceStateName::Pending => MemberState::Pending,
                    InstanceStateName::Running => MemberState::Running,
                    InstanceStateName::Stopping | InstanceStateName::ShuttingDown => {
                        MemberState::Stopping
                    }
                    InstanceStateName::Stopped => MemberState::Stopped,
                    _ => return None, // terminated
                };
                // Per-instance idleness is not visible through EC2; the decision falls back
                // to the fleet-wide in-flight count.
                Some(Member {
                    id,
                    state,
                    idle: None,
                    launched_at,
                })
            })
            .collect())
    }

    async fn launch(&self, n: u32) -> Result<u32, FleetError> {
        if n == 0 {
            return Ok(0);
        }
        let mut started = 0u32;
        if self.scale_in == ScaleIn::Stop {
            let stopped: Vec<String> = self
                .instances()
                .await?
                .into_iter()
                .filter(|(_, s, _)| *s == InstanceStateName::Stopped)
                .map(|(id, _, _)| id)
                .take(n as usize)
                .collect();
            if !stopped.is_empty() {
                self.client
                    .start_instances()
                    .set_instance_ids(Some(stopped.clone()))
                    .send()
                    .await
                    .map_err(|e| err("StartInstances", e))?;
                started = stopped.len() as u32;
            }
        }
        let more = n - started;
        if more == 0 {
            return Ok(started);
        }
        let count = i32::try_from(more).unwrap_or(i32::MAX);
        let mut req = self
            .client
            .run_instances()
            // All or nothing: EC2 then fails with InsufficientInstanceCapacity rather than
            // launching a part, and the next tick asks again.
            .min_count(count)
            .max_count(count)
            .tag_specifications(self.tags())
            .client_token(format!("{}-{}", self.id, uuid_like()));
        req = match &self.launch {
            LaunchSpec::Template { name, version } => req.launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_name(name)
                    .version(version.clone().unwrap_or_else(|| "$Latest".into()))
                    .build(),
            ),
            LaunchSpec::Image {
                ami,
                instance_type,
                user_data,
                instance_profile,
            } => {
                let mut r = req
                    .image_id(ami)
                    .instance_type(InstanceType::from(instance_type.as_str()));
                if let Some(script) = user_data {
                    r = r.user_data(STANDARD.encode(script));
                }
                if let Some(profile) = instance_profile {
                    r = r.iam_instance_profile(
                        aws_sdk_ec2::types::IamInstanceProfileSpecification::builder()
                            .name(profile)
                            .build(),
                    );
                }
                r
            }
        };
        let resp = req.send().await.map_err(|e| err("RunInstances", e))?;
        Ok(started + resp.instances().len() as u32)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), FleetError> {
        if ids.is_empty() {
            return Ok(());
        }
        match self.scale_in {
            ScaleIn::Terminate => self
                .client
                .terminate_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await
                .map(drop)
                .map_err(|e| err("TerminateInstances", e)),
            ScaleIn::Stop => self
                .client
                .stop_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await
                .map(drop)
                .map_err(|e| err("StopInstances", e)),
        }
    }
}

/// An idempotency token unique enough for one RunInstances call.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}

/// The tags every worker instance of deployment `id` carries (the fleet finds its
/// instances by them, and the IAM policies condition on them).
pub fn worker_tags(id: &str) -> Vec<Tag> {
    vec![
        Tag::builder().key(TAG_ID).value(id).build(),
        Tag::builder().key(TAG_ROLE).value("worker").build(),
        Tag::builder()
            .key("Name")
            .value(format!("{id}-worker"))
            .build(),
    ]
}
