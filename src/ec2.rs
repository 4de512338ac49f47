//! The thin EC2 adapter: one method per EC2 call tc-ami makes, SDK types in, model types out.
//! No decisions here; errors become [`Ec2Error`] with EC2's code and message.
//!
//! Throttling (`RequestLimitExceeded`) and 5xx answers are retried by the SDK's standard
//! retry strategy (exponential backoff with full jitter), configured in [`Ec2::load`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, InstanceType, KeyFormat, KeyType, LaunchPermission,
    LaunchPermissionModifications, ResourceType, ShutdownBehavior, Tag, TagSpecification,
    VolumeType,
};
use base64::Engine;

use crate::model::{Image, Instance, parse_ec2_time};
use crate::password::Secret;

/// An error EC2 answered (with its code) or a failure to reach it.
#[derive(Debug, thiserror::Error)]
#[error("{operation} in {region}: {message}")]
pub struct Ec2Error {
    pub operation: &'static str,
    pub region: String,
    /// EC2's error code (`InvalidAMIID.NotFound`), when EC2 answered.
    pub code: Option<String>,
    pub message: String,
}

impl Ec2Error {
    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Whether `err` is an [`Ec2Error`] with one of these codes.
pub fn has_code(err: &anyhow::Error, codes: &[&str]) -> bool {
    err.downcast_ref::<Ec2Error>()
        .is_some_and(|e| codes.iter().any(|c| e.code_is(c)))
}

pub(crate) fn sdk_error<E, R>(
    operation: &'static str,
    region: &str,
    err: SdkError<E, R>,
) -> anyhow::Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().map(str::to_string);
            let message = match (e.code(), e.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_string(),
                _ => DisplayErrorContext(&err).to_string(),
            };
            (code, message)
        }
        _ => {
            let text = DisplayErrorContext(&err).to_string();
            let message = if text.contains("credentials") || text.contains("Credentials") {
                "no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (see the README's Configuration)".to_string()
            } else if matches!(
                err,
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
            ) {
                let endpoint = std::env::var("AWS_ENDPOINT_URL")
                    .map(|e| format!(" at {e} (AWS_ENDPOINT_URL)"))
                    .unwrap_or_default();
                format!("cannot reach EC2{endpoint}: {}", root_cause(&err))
            } else {
                one_line(&text)
            };
            (None, message)
        }
    };
    anyhow::Error::new(Ec2Error {
        operation,
        region: region.to_string(),
        code,
        message,
    })
}

/// The innermost error: "Connection refused (os error 111)" rather than the SDK's nesting.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    one_line(&e.to_string())
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub type Tags = Vec<(String, String)>;

pub(crate) fn tag_spec(resource: ResourceType, tags: &Tags) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(to_sdk_tags(tags)))
        .build()
}

pub(crate) fn to_sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

pub(crate) fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

pub(crate) fn tags_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

pub(crate) fn image_from_sdk(i: &aws_sdk_ec2::types::Image) -> Image {
    Image {
        id: i.image_id().unwrap_or_default().to_string(),
        name: i.name().unwrap_or_default().to_string(),
        state: i
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        creation_date: i.creation_date().and_then(parse_ec2_time),
        owner_id: i.owner_id().unwrap_or_default().to_string(),
        root_device_name: i.root_device_name().map(str::to_string),
        snapshot_ids: i
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(str::to_string))
            .collect(),
        tags: tags_map(i.tags()),
        state_reason: i
            .state_reason()
            .and_then(|r| r.message().or(r.code()))
            .map(str::to_string),
    }
}

/// What RunInstances needs.
pub struct LaunchSpec<'a> {
    pub image_id: &'a str,
    pub instance_type: &'a str,
    pub key_name: &'a str,
    pub security_group_id: &'a str,
    pub user_data: &'a str,
    pub root_device_name: Option<&'a str>,
    pub root_volume_gb: Option<i32>,
    pub tags: &'a Tags,
    /// Idempotency token: a retried RunInstances never launches a second instance.
    pub client_token: &'a str,
}

pub struct Ec2 {
    config: aws_config::SdkConfig,
    clients: Mutex<HashMap<String, Client>>,
}

impl Ec2 {
    /// Loads AWS configuration from the standard places (profile, environment, endpoint URL).
    pub async fn load() -> Ec2 {
        let retry = RetryConfig::standard()
            .with_max_attempts(10)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(20));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let config = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts)
            .load()
            .await;
        Ec2 {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn client(&self, region: &str) -> Client {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(region.to_string())
            .or_insert_with(|| {
                let conf = aws_sdk_ec2::config::Builder::from(&self.config)
                    .region(Region::new(region.to_string()))
                    .build();
                Client::from_conf(conf)
            })
            .clone()
    }

    /// DescribeImages: by owner, ids and filters (name, values).
    async fn query_images(
        &self,
        region: &str,
        owner: Option<&str>,
        ids: &[String],
        filters: &[(&str, &str)],
    ) -> Result<Vec<Image>> {
        let mut req = self
            .client(region)
            .describe_images()
            .set_owners(owner.map(|o| vec![o.to_string()]))
            .set_image_ids((!ids.is_empty()).then(|| ids.to_vec()));
        for (name, value) in filters {
            req = req.filters(filter(name, &[value]));
        }
        let out = req
            .send()
            .await
            .map_err(|e| sdk_error("DescribeImages", region, e))?;
        Ok(out.images().iter().map(image_from_sdk).collect())
    }

    /// Images owned by `owner` whose name matches `pattern` (EC2 glob), Windows only.
    pub async fn find_base_images(
        &self,
        region: &str,
        owner: &str,
        pattern: &str,
    ) -> Result<Vec<Image>> {
        self.query_images(
            region,
            Some(owner),
            &[],
            &[("name", pattern), ("platform", "windows")],
        )
        .await
    }

    pub async fn describe_images(&self, region: &str, ids: &[String]) -> Result<Vec<Image>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.query_images(region, None, ids, &[]).await
    }

    /// Our own images carrying the tag `key` = `value`.
    pub async fn find_own_images_by_tag(
        &self,
        region: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<Image>> {
        self.query_images(region, Some("self"), &[], &[(&format!("tag:{key}"), value)])
            .await
    }

    /// Our own images with exactly this name.
    pub async fn find_own_images_by_name(&self, region: &str, name: &str) -> Result<Vec<Image>> {
        self.query_images(region, Some("self"), &[], &[("name", name)])
            .await
    }

    /// Creates an RSA key pair; returns its private key (PEM), which exists nowhere else.
    pub async fn create_key_pair(&self, region: &str, name: &str, tags: &Tags) -> Result<Secret> {
        let out = self
            .client(region)
            .create_key_pair()
            .key_name(name)
            .key_type(KeyType::Rsa)
            .key_format(KeyFormat::Pem)
            .tag_specifications(tag_spec(ResourceType::KeyPair, tags))
            .send()
            .await
            .map_err(|e| sdk_error("CreateKeyPair", region, e))?;
        let material = out.key_material().unwrap_or_default();
        if material.is_empty() {
            anyhow::bail!("CreateKeyPair in {region} returned no private key for {name}");
        }
        Ok(Secret::new(material))
    }

    pub async fn delete_key_pair(&self, region: &str, name: &str) -> Result<()> {
        self.client(region)
            .delete_key_pair()
            .key_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteKeyPair", region, e))?;
        Ok(())
    }

    /// A security group in the default VPC with no inbound rule: the build needs no
    /// connection to the instance, the guest only talks out.
    pub async fn create_security_group(
        &self,
        region: &str,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> Result<String> {
        let out = self
            .client(region)
            .create_security_group()
            .group_name(name)
            .description(description)
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
            .send()
            .await
            .map_err(|e| sdk_error("CreateSecurityGroup", region, e))?;
        out.group_id()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("CreateSecurityGroup in {region} returned no group id"))
    }

    pub async fn find_security_groups_by_name(
        &self,
        region: &str,
        name: &str,
    ) -> Result<Vec<String>> {
        let out = self
            .client(region)
            .describe_security_groups()
            .filters(filter("group-name", &[name]))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeSecurityGroups", region, e))?;
        Ok(out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect())
    }

    pub async fn delete_security_group(&self, region: &str, id: &str) -> Result<()> {
        self.client(region)
            .delete_security_group()
            .group_id(id)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteSecurityGroup", region, e))?;
        Ok(())
    }

    pub async fn run_instance(&self, region: &str, spec: &LaunchSpec<'_>) -> Result<String> {
        let mut req = self
            .client(region)
            .run_instances()
            .image_id(spec.image_id)
            .instance_type(InstanceType::from(spec.instance_type))
            .min_count(1)
            .max_count(1)
            .key_name(spec.key_name)
            .security_group_ids(spec.security_group_id)
            .user_data(base64::engine::general_purpose::STANDARD.encode(spec.user_data))
            .instance_initiated_shutdown_behavior(ShutdownBehavior::Stop)
            .client_token(spec.client_token)
            .tag_specifications(tag_spec(ResourceType::Instance, spec.tags))
            .tag_specifications(tag_spec(ResourceType::Volume, spec.tags));
        if let (Some(device), Some(size)) = (spec.root_device_name, spec.root_volume_gb) {
            req = req.block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(device)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(size)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = req
            .send()
            .await
            .map_err(|e| sdk_error("RunInstances", region, e))?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("RunInstances in {region} returned no instance"))
    }

    /// The instance, or None while EC2 does not know it yet (eventual consistency).
    pub async fn describe_instance(&self, region: &str, id: &str) -> Result<Option<Instance>> {
        let res = self
            .client(region)
            .describe_instances()
            .instance_ids(id)
            .send()
            .await;
        let out = match res {
            Ok(out) => out,
            Err(e) => {
                let err = sdk_error("DescribeInstances", region, e);
                if has_code(&err, &["InvalidInstanceID.NotFound"]) {
                    return Ok(None);
                }
                return Err(err);
            }
        };
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .map(|i| Instance {
                id: id.to_string(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                state_reason: i.state_reason().and_then(|r| r.code()).map(str::to_string),
            }))
    }

    /// Instances (not terminated) carrying the tag `key` = `value`.
    pub async fn find_instances_by_tag(
        &self,
        region: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<Instance>> {
        let out = self
            .client(region)
            .describe_instances()
            .filters(filter(&format!("tag:{key}"), &[value]))
            .filters(filter(
                "instance-state-name",
                &["pending", "running", "stopping", "stopped", "shutting-down"],
            ))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstances", region, e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| Instance {
                id: i.instance_id().unwrap_or_default().to_string(),
                state: i
                    .state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                state_reason: i.state_reason().and_then(|r| r.code()).map(str::to_string),
            })
            .collect())
    }

    /// The encrypted password data, or None while Windows has not made it yet.
    pub async fn get_password_data(
        &self,
        region: &str,
        instance_id: &str,
    ) -> Result<Option<String>> {
        let out = self
            .client(region)
            .get_password_data()
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| sdk_error("GetPasswordData", region, e))?;
        Ok(out
            .password_data()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string))
    }

    pub async fn terminate_instance(&self, region: &str, id: &str) -> Result<()> {
        self.client(region)
            .terminate_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| sdk_error("TerminateInstances", region, e))?;
        Ok(())
    }

    pub async fn create_image(
        &self,
        region: &str,
        instance_id: &str,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> Result<String> {
        let out = self
            .client(region)
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .description(description)
            .no_reboot(true)
            .tag_specifications(tag_spec(ResourceType::Image, tags))
            .send()
            .await
            .map_err(|e| sdk_error("CreateImage", region, e))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("CreateImage in {region} returned no image id"))
    }

    pub async fn copy_image(
        &self,
        dest_region: &str,
        source_region: &str,
        source_id: &str,
        name: &str,
        description: &str,
        client_token: &str,
    ) -> Result<String> {
        let out = self
            .client(dest_region)
            .copy_image()
            .source_region(source_region)
            .source_image_id(source_id)
            .name(name)
            .description(description)
            .client_token(client_token)
            .send()
            .await
            .map_err(|e| sdk_error("CopyImage", dest_region, e))?;
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("CopyImage to {dest_region} returned no image id"))
    }

    pub async fn create_tags(
        &self,
        region: &str,
        resource_ids: &[String],
        tags: &Tags,
    ) -> Result<()> {
        if resource_ids.is_empty() {
            return Ok(());
        }
        self.client(region)
            .create_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(to_sdk_tags(tags)))
            .send()
            .await
            .map_err(|e| sdk_error("CreateTags", region, e))?;
        Ok(())
    }

    pub async fn share_image(
        &self,
        region: &str,
        image_id: &str,
        accounts: &[String],
    ) -> Result<()> {
        let perms = accounts
            .iter()
            .map(|a| LaunchPermission::builder().user_id(a).build())
            .collect();
        self.client(region)
            .modify_image_attribute()
            .image_id(image_id)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .set_add(Some(perms))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("ModifyImageAttribute", region, e))?;
        Ok(())
    }

    pub async fn deregister_image(&self, region: &str, id: &str) -> Result<()> {
        self.client(region)
            .deregister_image()
            .image_id(id)
            .send()
            .await
            .map_err(|e| sdk_error("DeregisterImage", region, e))?;
        Ok(())
    }

    /// Snapshot ids tagged `key` = `value`, or whose description names `image_id` (EC2
    /// describes a CreateImage snapshot as "Created by CreateImage(i-…) for ami-…").
    pub async fn find_snapshots(
        &self,
        region: &str,
        key: &str,
        value: &str,
        image_id: Option<&str>,
    ) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let tagged = self
            .client(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter(&format!("tag:{key}"), &[value]))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeSnapshots", region, e))?;
        ids.extend(
            tagged
                .snapshots()
                .iter()
                .filter_map(|s| s.snapshot_id().map(str::to_string)),
        );
        if let Some(image_id) = image_id {
            let described = self
                .client(region)
                .describe_snapshots()
                .owner_ids("self")
                .filters(filter("description", &[&format!("*{image_id}*")]))
                .send()
                .await
                .map_err(|e| sdk_error("DescribeSnapshots", region, e))?;
            ids.extend(
                described
                    .snapshots()
                    .iter()
                    .filter_map(|s| s.snapshot_id().map(str::to_string)),
            );
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    pub async fn delete_snapshot(&self, region: &str, id: &str) -> Result<()> {
        self.client(region)
            .delete_snapshot()
            .snapshot_id(id)
            .send()
            .await
            .map_err(|e| sdk_error("DeleteSnapshot", region, e))?;
        Ok(())
    }
}
