//! The thin EC2 adapter: one method per EC2 call tc-ami makes, SDK types in, model types out.
//! No decisions here; errors become [`Ec2Error`] with EC2's code and message.
//!
//! Throttling (`RequestLimitExceeded`) and 5xx answers are retried by the SDK's standard
//! retry strategy (exponential backoff with full jitter), configured in [`Ec2::load`]. Every
//! call is logged (debug, `-v`) with its operation, region, target and duration; never with
//! user data, password data or key material.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

use crate::model::codes::ErrorCode;
use crate::model::{
    Image, ImageState, Instance, InstanceStateName, LIVE_INSTANCE_STATES, Tags, parse_ec2_time,
};
use crate::password::Secret;
use crate::text::one_line;

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
    pub fn code_is(&self, code: ErrorCode) -> bool {
        self.code.as_deref() == Some(code.as_str())
    }
}

/// Whether `err` is an [`Ec2Error`] with one of these codes.
pub fn has_code(err: &anyhow::Error, codes: &[ErrorCode]) -> bool {
    err.downcast_ref::<Ec2Error>()
        .is_some_and(|e| codes.iter().any(|c| e.code_is(*c)))
}

/// Sends one EC2 request: logs it with its duration, and turns its error into an
/// [`Ec2Error`]. `target` says what it is about (ids, names), for the log only.
pub(crate) async fn call<T, E, R>(
    operation: &'static str,
    region: &str,
    target: &str,
    request: impl Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<T>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let started = Instant::now();
    let result = request.await;
    let ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(out) => {
            tracing::debug!("EC2 {operation} in {region} ({target}): {ms} ms");
            Ok(out)
        }
        Err(e) => {
            let err = sdk_error(operation, region, e);
            tracing::debug!("EC2 {operation} in {region} ({target}): {ms} ms: {err}");
            Err(err)
        }
    }
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
        state: i.state().cloned().unwrap_or_else(|| ImageState::from("")),
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
    /// A shutdown from inside the guest terminates the instance (a debug instance's TTL)
    /// instead of stopping it (a build's, which is then imaged).
    pub terminate_on_shutdown: bool,
}

/// The largest page DescribeImages serves (`MaxResults` 5 to 1000).
pub const IMAGES_PAGE: i32 = 1000;

pub struct Ec2 {
    config: aws_config::SdkConfig,
    clients: Mutex<HashMap<String, Client>>,
}

impl Ec2 {
    /// Loads AWS configuration from the standard places (profile, environment, endpoint URL).
    pub async fn load() -> Ec2 {
        Self::load_with(None).await
    }

    /// As [`Ec2::load`], but with `credentials` (static keys) instead of the standard
    /// credential chain when given; the endpoint and the rest still come from the standard
    /// places.
    pub async fn load_with(credentials: Option<aws_sdk_ec2::config::Credentials>) -> Ec2 {
        let retry = RetryConfig::standard()
            .with_max_attempts(10)
            .with_initial_backoff(Duration::from_millis(200))
            .with_max_backoff(Duration::from_secs(20));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(10))
            .operation_attempt_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let config = loader.load().await;
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
        let target = ids
            .iter()
            .cloned()
            .chain(
                filters
                    .iter()
                    .map(|(name, value)| format!("{name}={value}")),
            )
            .collect::<Vec<_>>()
            .join(" ");
        let out = call("DescribeImages", region, &target, req.send()).await?;
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

    /// The Windows images owned by `owner` in `region`, those whose name matches `pattern`
    /// (EC2 glob) when given: every page of [`IMAGES_PAGE`], through the SDK's paginator (EC2
    /// lists about 14,000 Amazon Windows images; each page is one logged call).
    pub async fn list_windows_images(
        &self,
        region: &str,
        owner: &str,
        pattern: Option<&str>,
    ) -> Result<Vec<Image>> {
        let mut req = self
            .client(region)
            .describe_images()
            .owners(owner)
            .filters(filter("platform", &["windows"]));
        if let Some(pattern) = pattern {
            req = req.filters(filter("name", &[pattern]));
        }
        let mut pages = req.max_results(IMAGES_PAGE).into_paginator().send();
        let what = format!(
            "owner {owner} platform=windows{}",
            pattern.map(|p| format!(" name={p}")).unwrap_or_default()
        );
        let mut images = Vec::new();
        for n in 1.. {
            let target = format!("{what}, page {n}");
            let page = call("DescribeImages", region, &target, async {
                pages.next().await.transpose()
            })
            .await?;
            let Some(page) = page else { break };
            images.extend(page.images().iter().map(image_from_sdk));
        }
        Ok(images)
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
        let req = self
            .client(region)
            .create_key_pair()
            .key_name(name)
            .key_type(KeyType::Rsa)
            .key_format(KeyFormat::Pem)
            .tag_specifications(tag_spec(ResourceType::KeyPair, tags));
        let out = call("CreateKeyPair", region, name, req.send()).await?;
        let material = out.key_material().unwrap_or_default();
        if material.is_empty() {
            anyhow::bail!("CreateKeyPair in {region} returned no private key for {name}");
        }
        Ok(Secret::new(material))
    }

    pub async fn delete_key_pair(&self, region: &str, name: &str) -> Result<()> {
        let req = self.client(region).delete_key_pair().key_name(name);
        call("DeleteKeyPair", region, name, req.send()).await?;
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
        let req = self
            .client(region)
            .create_security_group()
            .group_name(name)
            .description(description)
            .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags));
        let out = call("CreateSecurityGroup", region, name, req.send()).await?;
        out.group_id()
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("CreateSecurityGroup in {region} returned no group id"))
    }

    pub async fn find_security_groups_by_name(
        &self,
        region: &str,
        name: &str,
    ) -> Result<Vec<String>> {
        let req = self
            .client(region)
            .describe_security_groups()
            .filters(filter("group-name", &[name]));
        let out = call("DescribeSecurityGroups", region, name, req.send()).await?;
        Ok(out
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect())
    }

    pub async fn delete_security_group(&self, region: &str, id: &str) -> Result<()> {
        let req = self.client(region).delete_security_group().group_id(id);
        call("DeleteSecurityGroup", region, id, req.send()).await?;
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
            .instance_initiated_shutdown_behavior(if spec.terminate_on_shutdown {
                ShutdownBehavior::Terminate
            } else {
                ShutdownBehavior::Stop
            })
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
        let target = format!("{} from {}", spec.instance_type, spec.image_id);
        let out = call("RunInstances", region, &target, req.send()).await?;
        out.instances()
            .first()
            .and_then(|i| i.instance_id())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("RunInstances in {region} returned no instance"))
    }

    /// The instance, or None while EC2 does not know it yet (eventual consistency).
    pub async fn describe_instance(&self, region: &str, id: &str) -> Result<Option<Instance>> {
        Ok(self
            .describe_sdk_instance(region, id)
            .await?
            .as_ref()
            .map(instance_from_sdk))
    }

    /// The instance as the SDK describes it, or None when EC2 does not know it in `region`.
    pub(crate) async fn describe_sdk_instance(
        &self,
        region: &str,
        id: &str,
    ) -> Result<Option<aws_sdk_ec2::types::Instance>> {
        let req = self.client(region).describe_instances().instance_ids(id);
        let out = match call("DescribeInstances", region, id, req.send()).await {
            Ok(out) => out,
            Err(e) if has_code(&e, &[ErrorCode::InstanceNotFound]) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .cloned())
    }

    /// The instance and its public IPv4 address, if it has one.
    pub async fn instance_address(
        &self,
        region: &str,
        id: &str,
    ) -> Result<Option<(Instance, Option<String>)>> {
        let req = self.client(region).describe_instances().instance_ids(id);
        let out = call("DescribeInstances", region, id, req.send()).await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .map(|i| {
                (
                    instance_from_sdk(i),
                    i.public_ip_address().map(str::to_string),
                )
            }))
    }

    /// The instance's serial console output as it is now (GetConsoleOutput, `Latest=true`:
    /// at most the latest 64 KB; EC2 supports it on Nitro instance types), decoded; None while
    /// nothing has been written.
    pub async fn console_output(&self, region: &str, id: &str) -> Result<Option<String>> {
        let req = self
            .client(region)
            .get_console_output()
            .instance_id(id)
            .latest(true);
        let out = call("GetConsoleOutput", region, id, req.send()).await?;
        let Some(encoded) = out.output().filter(|o| !o.is_empty()) else {
            return Ok(None);
        };
        let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| {
                anyhow::anyhow!(
                    "GetConsoleOutput in {region} for {id}: the output is not base64: {e}"
                )
            })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// The id (`key-…`) of the key pair `name`, which CreateTags needs; None if there is none.
    pub async fn key_pair_id(&self, region: &str, name: &str) -> Result<Option<String>> {
        let req = self
            .client(region)
            .describe_key_pairs()
            .filters(filter("key-name", &[name]));
        let out = call("DescribeKeyPairs", region, name, req.send()).await?;
        Ok(out
            .key_pairs()
            .iter()
            .find(|k| k.key_name() == Some(name))
            .and_then(|k| k.key_pair_id())
            .map(str::to_string))
    }

    /// Instances (not terminated) carrying the tag `key` = `value`.
    pub async fn find_instances_by_tag(
        &self,
        region: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<Instance>> {
        let req = self
            .client(region)
            .describe_instances()
            .filters(filter(&format!("tag:{key}"), &[value]))
            .filters(live_instances());
        let out = call("DescribeInstances", region, value, req.send()).await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(instance_from_sdk)
            .collect())
    }

    /// The encrypted password data, or None while Windows has not made it yet.
    pub async fn get_password_data(
        &self,
        region: &str,
        instance_id: &str,
    ) -> Result<Option<String>> {
        let req = self
            .client(region)
            .get_password_data()
            .instance_id(instance_id);
        let out = call("GetPasswordData", region, instance_id, req.send()).await?;
        Ok(out
            .password_data()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_string))
    }

    /// Terminates these instances in one call.
    pub async fn terminate_instances(&self, region: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let req = self
            .client(region)
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()));
        call("TerminateInstances", region, &ids.join(" "), req.send()).await?;
        Ok(())
    }

    /// The state of each of these instances that EC2 still knows, in one call.
    pub async fn instance_states(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, InstanceStateName>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let req = self.client(region).describe_instances().filters(filter(
            "instance-id",
            &ids.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        let out = call("DescribeInstances", region, &ids.join(" "), req.send()).await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| Some((i.instance_id()?.to_string(), i.state()?.name()?.clone())))
            .collect())
    }

    pub async fn create_image(
        &self,
        region: &str,
        instance_id: &str,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> Result<String> {
        let req = self
            .client(region)
            .create_image()
            .instance_id(instance_id)
            .name(name)
            .description(description)
            .no_reboot(true)
            .tag_specifications(tag_spec(ResourceType::Image, tags));
        let out = call("CreateImage", region, name, req.send()).await?;
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
        let req = self
            .client(dest_region)
            .copy_image()
            .source_region(source_region)
            .source_image_id(source_id)
            .name(name)
            .description(description)
            .client_token(client_token);
        let target = format!("{source_id} from {source_region}");
        let out = call("CopyImage", dest_region, &target, req.send()).await?;
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
        let req = self
            .client(region)
            .create_tags()
            .set_resources(Some(resource_ids.to_vec()))
            .set_tags(Some(to_sdk_tags(tags)));
        call("CreateTags", region, &resource_ids.join(" "), req.send()).await?;
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
        let req = self
            .client(region)
            .modify_image_attribute()
            .image_id(image_id)
            .launch_permission(
                LaunchPermissionModifications::builder()
                    .set_add(Some(perms))
                    .build(),
            );
        call("ModifyImageAttribute", region, image_id, req.send()).await?;
        Ok(())
    }

    pub async fn deregister_image(&self, region: &str, id: &str) -> Result<()> {
        let req = self.client(region).deregister_image().image_id(id);
        call("DeregisterImage", region, id, req.send()).await?;
        Ok(())
    }

    /// Our own snapshot ids matching the filter `name` = `value`.
    async fn snapshot_ids(&self, region: &str, name: &str, value: &str) -> Result<Vec<String>> {
        let req = self
            .client(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter(name, &[value]));
        let out = call("DescribeSnapshots", region, value, req.send()).await?;
        Ok(out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(str::to_string))
            .collect())
    }

    /// Our own snapshots tagged `key` = `value`.
    pub async fn find_snapshots_by_tag(
        &self,
        region: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<String>> {
        self.snapshot_ids(region, &format!("tag:{key}"), value)
            .await
    }

    /// Our own snapshots whose description names `image_id` (EC2 describes a CreateImage
    /// snapshot as "Created by CreateImage(i-…) for ami-…", a copy's as "Copied for
    /// DestinationAmi ami-…").
    pub async fn find_snapshots_naming(&self, region: &str, image_id: &str) -> Result<Vec<String>> {
        self.snapshot_ids(region, "description", &format!("*{image_id}*"))
            .await
    }

    pub async fn delete_snapshot(&self, region: &str, id: &str) -> Result<()> {
        let req = self.client(region).delete_snapshot().snapshot_id(id);
        call("DeleteSnapshot", region, id, req.send()).await?;
        Ok(())
    }
}

pub(crate) fn instance_from_sdk(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .cloned()
            .unwrap_or_else(|| InstanceStateName::from("")),
        state_reason: i.state_reason().and_then(|r| r.code()).map(str::to_string),
    }
}

/// The filter for instances that are not terminated.
pub(crate) fn live_instances() -> Filter {
    filter(
        "instance-state-name",
        &LIVE_INSTANCE_STATES
            .iter()
            .map(InstanceStateName::as_str)
            .collect::<Vec<_>>(),
    )
}
