//! `facerec infra up|down|status|policy`: the AWS resources of one deployment `ID`.
//!
//! - `up` creates what is missing and repairs what drifted, one line per resource
//!   (`created`, `updated (what)`, `exists`, `skipped (why)`), then `no changes` or how many
//!   changed: the buckets and queues ([`facerec_infra::provision`]) and, given an AMI, the
//!   workers' launch template ([`template`]). `--policies-dir` also writes the IAM policies.
//! - `down` terminates the deployment's worker instances, deletes the launch template, the
//!   buckets (with their objects) and the queues; absent ones are reported, so it can run
//!   twice.
//! - `status` prints every resource with its state and settings; exit status 1 when one is
//!   missing or differs from the specification.
//! - `policy --role edge|worker|scaler` prints a least-privilege IAM policy ([`policy`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use facerec_infra::provision::{Change, Health, ResourceState, Resources, Step};
use facerec_infra::{policy, template};
use facerec_scaler::Fleet;
use facerec_scaler::ec2::{Ec2Fleet, LaunchSpec, ScaleIn, worker_template_name};
use facerec_seams::aws::{Aws, sdk_config};

use crate::cli::infra::{InfraAction, InfraArgs, InfraUpArgs, RoleArgs};
use crate::cli::serve::AwsArgs;
use facerec_infra::policy::Role;

/// Where the worker AMI holds the models (see `infra/worker-user-data.sh`).
const AMI_MODELS: &str = "/opt/facerec/models";

pub fn run(args: &InfraArgs) -> Result<ExitCode> {
    let (aws_args, action) = (&args.aws, &args.action);
    crate::support::runtime::runtime()?.block_on(async {
        let config = sdk_config(&aws_args.settings()).await;
        let aws = Aws::from_config(&aws_args.id, &config);
        let ec2 = aws_sdk_ec2::Client::new(&config);
        match action {
            InfraAction::Up(args) => up(&aws, &ec2, aws_args, args).await,
            InfraAction::Down => down(&aws, &ec2, &aws_args.id).await,
            InfraAction::Status => {
                status(&aws, &ec2, &aws_args.id, args.database.url.as_deref()).await
            }
            InfraAction::Policy { role, roles } => {
                let inputs = policy_inputs(&aws, &ec2, &aws_args.id, roles).await?;
                print!("{}", policy::render(*role, &inputs)?);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// The settings `facerec worker` reads, as the launch template's user-data writes them.
fn worker_env(aws: &AwsArgs, args: &InfraUpArgs) -> Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = [
        ("ID", aws.id.clone()),
        ("AWS_REGION", aws.client.region.clone()),
        ("MAX_RETRIES", aws.client.retries.max_retries.to_string()),
        ("VISIBILITY_TIMEOUT", args.visibility_timeout.to_string()),
        ("FACEREC_MODELS", AMI_MODELS.to_string()),
        ("FACEREC_CACHE_DIR", "/var/cache/facerec".to_string()),
        ("FACEREC_METRICS_LISTEN", "0.0.0.0:9101".to_string()),
        ("FACEREC_LOG", "info".to_string()),
        ("FACEREC_LOG_JSON", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for kv in &args.worker_env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--worker-env {kv:?}: expected KEY=VALUE"))?;
        match env.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    }
    Ok(env)
}

async fn up(
    aws: &Aws,
    ec2: &aws_sdk_ec2::Client,
    aws_args: &AwsArgs,
    args: &InfraUpArgs,
) -> Result<ExitCode> {
    let mut steps = Resources(aws)
        .ensure(
            &aws_args.client.region,
            Duration::from_secs(args.visibility_timeout),
            aws_args.client.retries.max_retries.max(1) + 1,
        )
        .await?;
    let name = worker_template_name(&aws_args.id);
    match args.ami.as_deref().filter(|a| !a.is_empty()) {
        Some(ami) => {
            if !args.instance_type.starts_with('g') && !args.instance_type.starts_with('p') {
                eprintln!(
                    "warning: {} is not a GPU instance type; workers will run on the CPU",
                    args.instance_type
                );
            }
            let t = template::WorkerTemplate {
                id: aws_args.id.clone(),
                ami: ami.to_string(),
                instance_type: args.instance_type.clone(),
                instance_profile: args.roles.instance_profile.clone(),
                security_groups: args.security_groups.clone(),
                user_data: template::user_data(&worker_env(aws_args, args)?)?,
            };
            steps.push(template::ensure(ec2, &t).await?);
        }
        None => steps.push(Step::new(
            name,
            Change::Skipped("launch template: no --ami / FACEREC_AMI given".into()),
        )),
    }
    for s in &steps {
        println!("{s}");
    }
    if let Some(dir) = &args.policies_dir {
        let inputs = policy_inputs(aws, ec2, &aws_args.id, &args.roles).await?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for role in Role::ALL {
            let path = dir.join(format!("{}-policy.json", role.name()));
            std::fs::write(&path, policy::render(role, &inputs)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("wrote    {}", path.display());
        }
    }
    print_total(&steps);
    Ok(ExitCode::SUCCESS)
}

fn print_total(steps: &[Step]) {
    match steps.iter().filter(|s| s.changed()).count() {
        0 => println!("no changes"),
        n => println!("{n} changed"),
    }
}

fn fleet(ec2: &aws_sdk_ec2::Client, id: &str) -> Ec2Fleet {
    Ec2Fleet::new(
        ec2.clone(),
        id.to_string(),
        LaunchSpec::Template {
            name: worker_template_name(id),
            version: None,
        },
        ScaleIn::Terminate,
    )
}

async fn down(aws: &Aws, ec2: &aws_sdk_ec2::Client, id: &str) -> Result<ExitCode> {
    // Workers first: they would otherwise retry against deleted queues.
    let workers = fleet(ec2, id);
    let ids: Vec<String> = workers
        .members()
        .await
        .context("finding worker instances")?
        .into_iter()
        .map(|m| m.id)
        .collect();
    let mut steps = Vec::new();
    if ids.is_empty() {
        steps.push(Step::new(format!("{id} worker instances"), Change::Absent));
    } else {
        workers
            .terminate(&ids)
            .await
            .context("terminating worker instances")?;
        steps.push(Step::new(
            format!("{id} worker instances {}", ids.join(" ")),
            Change::Removed,
        ));
    }
    steps.push(template::remove(ec2, &worker_template_name(id)).await?);
    steps.extend(Resources(aws).destroy().await?);
    for s in &steps {
        println!("{s}");
    }
    print_total(&steps);
    Ok(ExitCode::SUCCESS)
}

async fn status(
    aws: &Aws,
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    database_url: Option<&str>,
) -> Result<ExitCode> {
    let mut states: Vec<ResourceState> = Resources(aws).inspect().await?;
    states.push(template::inspect(ec2, &worker_template_name(id)).await?);
    if let Some(url) = database_url.filter(|u| !u.trim().is_empty()) {
        states.push(face_store_state(url).await);
    }
    let width = states.iter().map(|s| s.resource.len()).max().unwrap_or(0);
    for s in &states {
        println!(
            "{:<8} {:<width$}  {}",
            s.health.as_str(),
            s.resource,
            s.detail
        );
    }
    let members = fleet(ec2, id)
        .members()
        .await
        .context("finding worker instances")?;
    let count = |st: facerec_scaler::MemberState| members.iter().filter(|m| m.state == st).count();
    use facerec_scaler::MemberState as S;
    println!(
        "workers  {} running, {} pending, {} stopping, {} stopped (tag facerec:id={id})",
        count(S::Running),
        count(S::Pending),
        count(S::Stopping),
        count(S::Stopped)
    );
    let bad = states.iter().filter(|s| s.health != Health::Exists).count();
    if bad == 0 {
        println!("all resources of {id} as specified");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{bad} of {} resources missing or not as specified",
            states.len()
        );
        Ok(ExitCode::from(1))
    }
}

/// The face store `DATABASE_URL` names, as one line of `status`: reachable with its
/// schema and counts, reachable and empty (`missing`: the first edge or worker creates
/// it), or why it cannot be reached (`drift`, so the status fails).
async fn face_store_state(url: &str) -> ResourceState {
    use facerec_seams::faces;
    let resource = format!("face-store {}", faces::redact(url));
    let (health, detail) = match faces::probe(url).await {
        Ok(Some(s)) => (
            Health::Exists,
            format!(
                "schema {}, {} identities, {} faces, change {}",
                s.schema, s.identities, s.faces, s.seq
            ),
        ),
        Ok(None) => (
            Health::Missing,
            "reachable, no face store yet (the first edge or worker creates it)".to_string(),
        ),
        Err(e) => (Health::Drift, e.to_string()),
    };
    ResourceState {
        resource,
        health,
        detail,
    }
}

async fn policy_inputs(
    aws: &Aws,
    ec2: &aws_sdk_ec2::Client,
    id: &str,
    roles: &RoleArgs,
) -> Result<policy::Inputs> {
    let n = &aws.names;
    let mut arns = Vec::with_capacity(3);
    for q in [&n.req_queue, &n.resp_queue, &n.dlq_queue] {
        match Resources(aws).queue_arn(q).await {
            Ok(arn) => arns.push(arn),
            Err(e) if e.is_not_found() => {
                anyhow::bail!("queue {q} does not exist: run `facerec infra up` first")
            }
            Err(e) => return Err(e).with_context(|| format!("queue {q}")),
        }
    }
    let arns: [String; 3] = arns
        .try_into()
        .map_err(|_| anyhow::anyhow!("three queue ARNs"))?;
    let template_id = template::find(ec2, &worker_template_name(id))
        .await?
        .and_then(|t| t.launch_template_id().map(str::to_string));
    let worker_role = roles
        .worker_role
        .clone()
        .or_else(|| roles.instance_profile.clone())
        .unwrap_or_else(|| worker_template_name(id));
    policy::Inputs::new(id, arns, template_id, worker_role)
}
