//! `infra up|down|status|policy`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use facerec_infra::policy::Role;

use super::serve::AwsArgs;
use super::shared::DatabaseArg;

/// Create, remove or inspect the AWS resources of `ID`; print their IAM policies.
#[derive(Debug, Args)]
pub struct InfraArgs {
    #[command(flatten)]
    pub aws: AwsArgs,
    /// With `status`: the face store is checked too (reachable, schema, counts).
    #[command(flatten)]
    pub database: DatabaseArg,
    #[command(subcommand)]
    pub action: InfraAction,
}

#[derive(Debug, Subcommand)]
pub enum InfraAction {
    /// Create what is missing and repair what drifted (idempotent): buckets (public access
    /// blocked, SSE-S3), queues (request queue: visibility timeout, redrive to the DLQ) and,
    /// with --ami, the workers' launch template `${ID}-worker`.
    Up(Box<InfraUpArgs>),
    /// Remove everything of ID: worker instances, launch template, buckets (with their
    /// objects), queues. Running it twice is fine.
    Down,
    /// Every resource with its state; exit status 1 when one is missing or not as specified.
    Status,
    /// Print the least-privilege IAM policy of one role as JSON, naming exactly this ID's
    /// resources (the queues must exist: `infra up` first).
    Policy {
        #[arg(long, value_enum)]
        role: Role,
        #[command(flatten)]
        roles: RoleArgs,
    },
}

/// The worker instances' identity.
#[derive(Debug, Clone, Args)]
pub struct RoleArgs {
    /// Instance profile of the worker instances (put into the launch template).
    #[arg(long, env = "FACEREC_INSTANCE_PROFILE")]
    pub instance_profile: Option<String>,
    /// IAM role in that instance profile, which the scaler passes to EC2 (iam:PassRole)
    /// [default: the instance profile's name, else ${ID}-worker].
    #[arg(long, env = "FACEREC_WORKER_ROLE")]
    pub worker_role: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct InfraUpArgs {
    /// Request visibility timeout, seconds.
    #[arg(long, env = "VISIBILITY_TIMEOUT", default_value_t = 300)]
    pub visibility_timeout: u64,
    /// Worker AMI: the release binary at /opt/facerec/bin/facerec, the models at
    /// /opt/facerec/models, an NVIDIA driver with Vulkan (infra/worker-user-data.sh).
    /// Without it the launch template is skipped.
    #[arg(long, env = "FACEREC_AMI")]
    pub ami: Option<String>,
    /// Worker instance type (a g-series GPU instance).
    #[arg(long, env = "FACEREC_INSTANCE_TYPE", default_value = "g4dn.xlarge")]
    pub instance_type: String,
    /// Security groups of the worker instances (comma-separated ids) [default: the VPC's].
    #[arg(
        long = "security-group",
        env = "FACEREC_SECURITY_GROUPS",
        value_delimiter = ','
    )]
    pub security_groups: Vec<String>,
    /// A setting of the workers' environment, KEY=VALUE (repeatable; replaces a default),
    /// e.g. FACEREC_BATCH=64.
    #[arg(long = "worker-env", value_name = "KEY=VALUE")]
    pub worker_env: Vec<String>,
    #[command(flatten)]
    pub roles: RoleArgs,
    /// Also write edge-policy.json, worker-policy.json and scaler-policy.json here.
    #[arg(long, env = "FACEREC_POLICIES_DIR")]
    pub policies_dir: Option<PathBuf>,
}
