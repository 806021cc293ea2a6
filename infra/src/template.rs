//! The workers' launch template, `${ID}-worker`: a g-series instance type, the worker AMI,
//! an optional instance profile and security groups, IMDSv2 required, the deployment's
//! tags on instances and volumes, and `infra/worker-user-data.sh` as user-data (the
//! worker's settings written to `/etc/facerec/worker.env`, a systemd unit running
//! `facerec worker`).
//!
//! `up` creates it, or adds a version (made the default) only when the latest version's
//! AMI, instance type, user-data, instance profile or security groups differ.

use anyhow::{Context, Result, anyhow, ensure};
use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ec2::types::{
    InstanceType, LaunchTemplate, LaunchTemplateHttpTokensState,
    LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataEndpointState, LaunchTemplateInstanceMetadataOptionsRequest,
    LaunchTemplateTagSpecificationRequest, LaunchTemplateVersion, RequestLaunchTemplateData,
    ResourceType, ResponseLaunchTemplateData, Tag, TagSpecification,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use facerec_scaler::ec2::{TAG_ID, worker_tags, worker_template_name};

use crate::provision::{Change, Health, ResourceState, Step};

/// The boot script, with [`ENV_PLACEHOLDER`] where the settings go.
pub const USER_DATA_TEMPLATE: &str = include_str!("../worker-user-data.sh");
const ENV_PLACEHOLDER: &str = "@FACEREC_WORKER_ENV@";

/// The boot script with the worker's settings (`KEY=VALUE` lines of a systemd
/// `EnvironmentFile`). Names are `A-Z`, `0-9`, `_`; values have no whitespace, quotes or
/// backslashes (nothing there would be read the same by systemd).
pub fn user_data(env: &[(String, String)]) -> Result<String> {
    let mut lines = Vec::with_capacity(env.len());
    for (k, v) in env {
        ensure!(
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "worker setting {k:?}: names are A-Z, 0-9 and _"
        );
        ensure!(
            !v.chars()
                .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\')),
            "worker setting {k}: {v:?} has whitespace, quotes or a backslash"
        );
        lines.push(format!("{k}={v}"));
    }
    Ok(USER_DATA_TEMPLATE.replace(ENV_PLACEHOLDER, &lines.join("\n")))
}

/// What the launch template holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTemplate {
    pub id: String,
    pub ami: String,
    pub instance_type: String,
    pub instance_profile: Option<String>,
    pub security_groups: Vec<String>,
    /// The rendered boot script (base64-encoded into the template).
    pub user_data: String,
}

impl WorkerTemplate {
    pub fn name(&self) -> String {
        worker_template_name(&self.id)
    }

    fn tags(&self, resource: ResourceType) -> LaunchTemplateTagSpecificationRequest {
        LaunchTemplateTagSpecificationRequest::builder()
            .resource_type(resource)
            .set_tags(Some(worker_tags(&self.id)))
            .build()
    }

    fn data(&self) -> RequestLaunchTemplateData {
        let mut data = RequestLaunchTemplateData::builder()
            .image_id(&self.ami)
            .instance_type(InstanceType::from(self.instance_type.as_str()))
            .user_data(STANDARD.encode(&self.user_data))
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_endpoint(LaunchTemplateInstanceMetadataEndpointState::Enabled)
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    .build(),
            )
            .tag_specifications(self.tags(ResourceType::Instance))
            .tag_specifications(self.tags(ResourceType::Volume));
        if let Some(profile) = &self.instance_profile {
            data = data.iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(profile)
                    .build(),
            );
        }
        if !self.security_groups.is_empty() {
            data = data.set_security_group_ids(Some(self.security_groups.clone()));
        }
        data.build()
    }

    /// The settings in which a version's data differs from this template.
    fn differences(&self, current: &ResponseLaunchTemplateData) -> Vec<String> {
        let mut diff = Vec::new();
        if current.image_id() != Some(self.ami.as_str()) {
            diff.push("ami");
        }
        if current.instance_type().map(InstanceType::as_str) != Some(self.instance_type.as_str()) {
            diff.push("instance type");
        }
        if current.user_data() != Some(STANDARD.encode(&self.user_data).as_str()) {
            diff.push("user-data");
        }
        if current.iam_instance_profile().and_then(|p| p.name()) != self.instance_profile.as_deref()
        {
            diff.push("instance profile");
        }
        let mut have = current.security_group_ids().to_vec();
        let mut want = self.security_groups.clone();
        have.sort();
        want.sort();
        if have != want {
            diff.push("security groups");
        }
        diff.into_iter().map(str::to_string).collect()
    }
}

fn ec2_error(what: &str, e: impl std::error::Error) -> anyhow::Error {
    anyhow!("{what}: {}", DisplayErrorContext(e))
}

/// The launch template called `name`, if it exists.
pub async fn find(client: &Client, name: &str) -> Result<Option<LaunchTemplate>> {
    match client
        .describe_launch_templates()
        .launch_template_names(name)
        .send()
        .await
    {
        Ok(out) => Ok(out.launch_templates().first().cloned()),
        Err(e) if e.code() == Some("InvalidLaunchTemplateName.NotFoundException") => Ok(None),
        Err(e) => Err(ec2_error(&format!("describing launch template {name}"), e)),
    }
}

async fn latest(client: &Client, name: &str) -> Result<LaunchTemplateVersion> {
    let out = client
        .describe_launch_template_versions()
        .launch_template_name(name)
        .versions("$Latest")
        .send()
        .await
        .map_err(|e| ec2_error(&format!("versions of launch template {name}"), e))?;
    out.launch_template_versions()
        .first()
        .cloned()
        .with_context(|| format!("launch template {name} has no version"))
}

/// Creates the template, or a new default version of it when its content changed.
pub async fn ensure(client: &Client, t: &WorkerTemplate) -> Result<Step> {
    let name = t.name();
    if find(client, &name).await?.is_none() {
        client
            .create_launch_template()
            .launch_template_name(&name)
            .version_description("facerec infra up")
            .launch_template_data(t.data())
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .tags(Tag::builder().key(TAG_ID).value(&t.id).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| ec2_error(&format!("creating launch template {name}"), e))?;
        return Ok(Step::new(name, Change::Created));
    }
    let current = latest(client, &name).await?;
    let mut diff = current
        .launch_template_data()
        .map_or_else(|| vec!["data".to_string()], |d| t.differences(d));
    if diff.is_empty() {
        return Ok(Step::new(name, Change::Exists));
    }
    let out = client
        .create_launch_template_version()
        .launch_template_name(&name)
        .version_description("facerec infra up")
        .launch_template_data(t.data())
        .send()
        .await
        .map_err(|e| ec2_error(&format!("new version of launch template {name}"), e))?;
    let version = out
        .launch_template_version()
        .and_then(LaunchTemplateVersion::version_number)
        .with_context(|| format!("launch template {name}: no version number"))?;
    client
        .modify_launch_template()
        .launch_template_name(&name)
        .default_version(version.to_string())
        .send()
        .await
        .map_err(|e| ec2_error(&format!("default version of launch template {name}"), e))?;
    diff.push(format!("now version {version}"));
    Ok(Step::new(name, Change::Updated(diff)))
}

/// Deletes the template (all its versions); absent is fine.
pub async fn remove(client: &Client, name: &str) -> Result<Step> {
    if find(client, name).await?.is_none() {
        return Ok(Step::new(name, Change::Absent));
    }
    client
        .delete_launch_template()
        .launch_template_name(name)
        .send()
        .await
        .map_err(|e| ec2_error(&format!("deleting launch template {name}"), e))?;
    Ok(Step::new(name, Change::Removed))
}

/// The template's latest version, AMI, instance type and instance profile.
pub async fn inspect(client: &Client, name: &str) -> Result<ResourceState> {
    if find(client, name).await?.is_none() {
        return Ok(ResourceState {
            resource: name.to_string(),
            health: Health::Missing,
            detail: "launch template (`facerec infra up --ami AMI` creates it)".into(),
        });
    }
    let v = latest(client, name).await?;
    let data = v.launch_template_data();
    let profile = data
        .and_then(|d| d.iam_instance_profile())
        .and_then(|p| p.name().or(p.arn()));
    Ok(ResourceState {
        resource: name.to_string(),
        health: Health::Exists,
        detail: format!(
            "launch template version={} ami={} type={} instance-profile={}",
            v.version_number().unwrap_or_default(),
            data.and_then(|d| d.image_id()).unwrap_or("none"),
            data.and_then(|d| d.instance_type())
                .map_or("none", InstanceType::as_str),
            profile.unwrap_or("none"),
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn user_data_writes_the_settings_and_starts_the_worker() {
        let env = [("ID", "demo"), ("AWS_REGION", "eu-west-1")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(USER_DATA_TEMPLATE.matches(ENV_PLACEHOLDER).count(), 1);
        let script = user_data(&env).unwrap();
        assert!(script.starts_with("#!/bin/bash\n"));
        assert!(script.contains("\nID=demo\nAWS_REGION=eu-west-1\nFACEREC_ENV\n"));
        assert!(!script.contains(ENV_PLACEHOLDER));
        assert!(script.contains("ExecStart=/opt/facerec/bin/facerec worker"));
        assert!(script.contains("systemctl enable --now facerec-worker.service"));
    }

    #[test]
    fn user_data_refuses_values_systemd_would_misread() {
        for (k, v) in [
            ("ID", "a b"),
            ("ID", "a\"b"),
            ("lower", "x"),
            ("ID", "a\nb"),
        ] {
            assert!(
                user_data(&[(k.to_string(), v.to_string())]).is_err(),
                "{k}={v}"
            );
        }
    }
}
