//! The AMI build: a plan (pure: names, tags, user data) and the pipeline that carries it out.
//!
//! Modelled on Packer's multistep: every resource is named before it is created and recorded
//! the moment its create call returns, everything is tagged with the build id at creation, and
//! whatever fails or is interrupted, [`teardown`] removes what exists, found both by the
//! recorded ids and by a sweep on the build's names and tags (so a create call that was in
//! flight when things went wrong is not missed). Interrupts are noticed at the next wait or
//! between stages; a create call is never cut off half-way.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{PasswordDestination, WorkerType};
use crate::ec2::{Ec2, LaunchSpec, Tags, has_code};
use crate::interrupt::Cancel;
use crate::model::Image;
use crate::password::{Secret, decrypt_password};
use crate::progress::Progress;
use crate::taskcluster::SecretsApi;
use crate::user_data::sha256_hex;
use crate::wait::{POLL_INTERVAL, poll_until};

pub const TAG_BUILD_ID: &str = "tc-ami:build-id";
pub const TAG_WORKER_TYPE: &str = "tc-ami:worker-type";
pub const TAG_CREATED_AT: &str = "tc-ami:created-at";
pub const TAG_BASE_IMAGE_ID: &str = "tc-ami:base-image-id";
pub const TAG_BASE_IMAGE_NAME: &str = "tc-ami:base-image-name";
pub const TAG_USER_DATA_SHA256: &str = "tc-ami:user-data-sha256";
pub const TAG_VERSION: &str = "tc-ami:version";
pub const TAG_SOURCE_REGION: &str = "tc-ami:source-region";
pub const TAG_SOURCE_IMAGE_ID: &str = "tc-ami:source-image-id";

/// How often the build instance's termination is polled while copies are pending (off the
/// critical path, so less often than a wait the build is blocked on).
const RELEASE_PACE: Duration = Duration::from_secs(3);
/// How long teardown waits for the instance to terminate before deleting its group.
pub const TERMINATE_WAIT: Duration = Duration::from_secs(300);
/// Every this many polls of the password wait checks that the instance is still alive instead
/// of asking for the password (one call per poll either way).
const PASSWORD_POLLS_PER_STATE_CHECK: u32 = 10;

/// Everything a build will create, named and tagged before anything is created.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub build_id: String,
    pub worker_type: String,
    pub region: String,
    /// Copy destinations, without `region`.
    pub copy_regions: Vec<String>,
    pub base: Image,
    pub key_name: String,
    pub group_name: String,
    pub image_name: String,
    pub description: String,
    pub instance_type: String,
    pub root_volume_gb: Option<i32>,
    pub user_data: String,
    pub user_data_sha256: String,
    /// On the key pair, group, instance and volume.
    pub resource_tags: Tags,
    /// On the image, its snapshots and its copies.
    pub image_tags: Tags,
    pub share_with_accounts: Vec<String>,
    pub password: PasswordDestination,
    pub build_timeout: Duration,
    pub image_timeout: Duration,
}

/// A build id that sorts by time and is unique: `20261124T214001Z-3f9a2c`.
pub fn new_build_id(now: DateTime<Utc>, random: u32) -> String {
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        random & 0xff_ffff
    )
}

pub fn plan_build(
    wt: &WorkerType,
    base: &Image,
    user_data: String,
    now: DateTime<Utc>,
    build_id: &str,
) -> BuildPlan {
    let stem = format!("tc-ami-{}-{}", wt.name, build_id);
    let created_at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let user_data_sha256 = sha256_hex(user_data.as_bytes());
    let common: Tags = vec![
        (TAG_BUILD_ID.into(), build_id.into()),
        (TAG_WORKER_TYPE.into(), wt.name.clone()),
        (TAG_CREATED_AT.into(), created_at),
    ];
    let mut resource_tags = common.clone();
    resource_tags.push((
        "Name".into(),
        format!("tc-ami build {} {}", wt.name, build_id),
    ));
    let mut image_tags = common;
    image_tags.extend([
        ("Name".to_string(), format!("{} {}", wt.name, build_id)),
        (TAG_BASE_IMAGE_ID.to_string(), base.id.clone()),
        (TAG_BASE_IMAGE_NAME.to_string(), base.name.clone()),
        (TAG_USER_DATA_SHA256.to_string(), user_data_sha256.clone()),
        (
            TAG_VERSION.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (TAG_SOURCE_REGION.to_string(), wt.build_region.clone()),
    ]);
    BuildPlan {
        build_id: build_id.to_string(),
        worker_type: wt.name.clone(),
        region: wt.build_region.clone(),
        copy_regions: wt.regions.clone(),
        base: base.clone(),
        key_name: stem.clone(),
        group_name: stem.clone(),
        image_name: stem,
        description: format!(
            "{} for Taskcluster pool {}, from {} ({}), built by tc-ami {}",
            wt.name,
            wt.worker_pool_id,
            base.name,
            base.id,
            env!("CARGO_PKG_VERSION")
        ),
        instance_type: wt.instance_type.clone(),
        root_volume_gb: wt.root_volume_gb,
        user_data,
        user_data_sha256,
        resource_tags,
        image_tags,
        share_with_accounts: wt.share_with_accounts.clone(),
        password: wt.password.clone(),
        build_timeout: wt.build_timeout,
        image_timeout: wt.image_timeout,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    CreateKeyPair,
    CreateSecurityGroup,
    Launch,
    WaitRunning,
    WaitPassword,
    WaitStopped,
    CreateImage,
    WaitImage,
    CopyImage,
    Share,
    StorePassword,
    Teardown,
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stage::CreateKeyPair => "creating the key pair",
            Stage::CreateSecurityGroup => "creating the security group",
            Stage::Launch => "launching the build instance",
            Stage::WaitRunning => "waiting for the instance to run",
            Stage::WaitPassword => "waiting for the Windows password",
            Stage::WaitStopped => "waiting for first-boot.ps1 to shut the instance down",
            Stage::CreateImage => "creating the image",
            Stage::WaitImage => "waiting for the image to be available",
            Stage::CopyImage => "copying the image to other regions",
            Stage::Share => "sharing the image",
            Stage::StorePassword => "storing the administrator password",
            Stage::Teardown => "removing the build instance, key pair and security group",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "stored_in", rename_all = "kebab-case")]
pub enum PasswordOutcome {
    /// In the Taskcluster secret of that name.
    Secret { secret: String },
    /// Printed on stderr at the end of the build.
    Printed,
}

#[derive(Debug, Serialize)]
pub struct BuildReport {
    pub worker_type: String,
    pub build_id: String,
    pub region: String,
    pub base_image: Image,
    pub image_name: String,
    /// Region → image id, the build region first.
    pub images: BTreeMap<String, String>,
    pub password: PasswordOutcome,
    pub duration_seconds: f64,
    #[serde(skip)]
    pub printed_password: Option<Secret>,
}

/// What exists, recorded as soon as it is known.
#[derive(Debug, Default)]
struct Created {
    key_pair: bool,
    group_id: Option<String>,
    group_named: bool,
    instance_id: Option<String>,
    launched: bool,
    /// (region, image id); `None` id: a create or copy was sent to that region.
    images: Vec<(String, Option<String>)>,
    /// The instance, group and key pair were removed once the image existed; what could not be.
    released: Option<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("build failed while {stage}: {cause:#}{}", leftover_text(.leftovers))]
pub struct BuildFailed {
    pub stage: Stage,
    pub cause: anyhow::Error,
    /// What teardown could not remove, to be removed by hand (or by `tc-ami cleanup`).
    pub leftovers: Vec<String>,
}

fn leftover_text(leftovers: &[String]) -> String {
    if leftovers.is_empty() {
        String::new()
    } else {
        format!("; LEFT BEHIND, remove by hand: {}", leftovers.join(", "))
    }
}

impl BuildFailed {
    pub fn interrupted(&self) -> Option<crate::interrupt::Interrupted> {
        self.cause
            .downcast_ref::<crate::interrupt::Interrupted>()
            .copied()
    }
}

struct Builder<'a> {
    ec2: &'a Ec2,
    secrets: Option<&'a SecretsApi>,
    plan: &'a BuildPlan,
    cancel: &'a Cancel,
    progress: &'a Progress,
    created: Mutex<Created>,
    stage: Mutex<Stage>,
}

impl Builder<'_> {
    fn record(&self, f: impl FnOnce(&mut Created)) {
        f(&mut self.created.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn enter(&self, stage: Stage) -> Result<()> {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = stage;
        self.cancel.check()?;
        self.progress.stage(&stage.to_string());
        Ok(())
    }
}

/// Runs the build. On failure or interrupt, everything it created is removed before it
/// returns; the error names the stage.
pub async fn run_build(
    ec2: &Ec2,
    secrets: Option<&SecretsApi>,
    plan: &BuildPlan,
    cancel: &Cancel,
    progress: &Progress,
) -> Result<BuildReport, BuildFailed> {
    let b = Builder {
        ec2,
        secrets,
        plan,
        cancel,
        progress,
        created: Mutex::new(Created::default()),
        stage: Mutex::new(Stage::CreateKeyPair),
    };
    let started = Instant::now();
    let result = pipeline(&b).await;
    let stage = *b.stage.lock().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok((images, password, printed)) => {
            let released = b
                .created
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .released
                .take();
            let leftovers = match released {
                Some(leftovers) => leftovers,
                None => {
                    progress.stage(&Stage::Teardown.to_string());
                    teardown(ec2, plan, &b.created, false, POLL_INTERVAL, progress).await
                }
            };
            progress.finish();
            if !leftovers.is_empty() {
                return Err(BuildFailed {
                    stage: Stage::Teardown,
                    cause: anyhow!(
                        "the image was built ({}) but not everything could be removed",
                        images.values().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    leftovers,
                });
            }
            Ok(BuildReport {
                worker_type: plan.worker_type.clone(),
                build_id: plan.build_id.clone(),
                region: plan.region.clone(),
                base_image: plan.base.clone(),
                image_name: plan.image_name.clone(),
                images,
                password,
                duration_seconds: (started.elapsed().as_millis() as f64 / 1000.0),
                printed_password: printed,
            })
        }
        Err(cause) => {
            let why = match cause.downcast_ref::<crate::interrupt::Interrupted>() {
                Some(i) => format!("{i}"),
                None => "failed".to_string(),
            };
            progress.note(&format!(
                "{stage}: {why}; removing everything this build created"
            ));
            let leftovers = teardown(ec2, plan, &b.created, true, POLL_INTERVAL, progress).await;
            progress.finish();
            Err(BuildFailed {
                stage,
                cause,
                leftovers,
            })
        }
    }
}

type PipelineOutput = (BTreeMap<String, String>, PasswordOutcome, Option<Secret>);

async fn pipeline(b: &Builder<'_>) -> Result<PipelineOutput> {
    let (ec2, plan, region) = (b.ec2, b.plan, b.plan.region.as_str());

    b.enter(Stage::CreateKeyPair)?;
    b.record(|c| c.key_pair = true);
    let private_key = ec2
        .create_key_pair(region, &plan.key_name, &plan.resource_tags)
        .await?;

    b.enter(Stage::CreateSecurityGroup)?;
    b.record(|c| c.group_named = true);
    let group_id = ec2
        .create_security_group(
            region,
            &plan.group_name,
            &format!("tc-ami build {}", plan.build_id),
            &plan.resource_tags,
        )
        .await?;
    b.record(|c| c.group_id = Some(group_id.clone()));

    b.enter(Stage::Launch)?;
    b.record(|c| c.launched = true);
    let instance_id = ec2
        .run_instance(
            region,
            &LaunchSpec {
                image_id: &plan.base.id,
                instance_type: &plan.instance_type,
                key_name: &plan.key_name,
                security_group_id: &group_id,
                user_data: &plan.user_data,
                root_device_name: plan.base.root_device_name.as_deref(),
                root_volume_gb: plan.root_volume_gb,
                tags: &plan.resource_tags,
                client_token: &plan.build_id,
            },
        )
        .await?;
    b.record(|c| c.instance_id = Some(instance_id.clone()));
    b.progress.note(&format!(
        "instance {instance_id} ({}) from {}",
        plan.instance_type, plan.base.id
    ));
    let launched = Instant::now();

    b.enter(Stage::WaitRunning)?;
    poll_until(
        b.cancel,
        "the instance to start",
        launched,
        plan.build_timeout,
        POLL_INTERVAL,
        || async {
            match ec2.describe_instance(region, &instance_id).await? {
                // A quick guest may already be shutting down by the first poll: it ran.
                Some(i) if matches!(i.state.as_str(), "running" | "stopping" | "stopped") => {
                    Ok(Some(()))
                }
                Some(i) if i.state == "pending" => Ok(None),
                None => Ok(None),
                Some(i) => bail!(instance_gone(&i)),
            }
        },
    )
    .await?;

    b.enter(Stage::WaitPassword)?;
    let mut polls = 0u32;
    let password_data = poll_until(
        b.cancel,
        "Windows to make the administrator password",
        launched,
        plan.build_timeout,
        POLL_INTERVAL,
        || {
            polls += 1;
            let check_state = polls.is_multiple_of(PASSWORD_POLLS_PER_STATE_CHECK);
            let instance_id = &instance_id;
            async move {
                if !check_state {
                    return ec2.get_password_data(region, instance_id).await;
                }
                if let Some(i) = ec2.describe_instance(region, instance_id).await?
                    && !matches!(i.state.as_str(), "running" | "stopping")
                {
                    // Stopped: the password data, if Windows made it, is still there.
                    if let Some(data) = ec2.get_password_data(region, instance_id).await? {
                        return Ok(Some(data));
                    }
                    bail!(
                        "{} before Windows made the administrator password",
                        instance_gone(&i)
                    );
                }
                Ok(None)
            }
        },
    )
    .await?;
    let password = decrypt_password(&private_key, &password_data)
        .with_context(|| format!("GetPasswordData for {instance_id}"))?;
    drop(private_key);

    b.enter(Stage::WaitStopped)?;
    poll_until(b.cancel, "the instance to stop (first-boot.ps1 ends with a shutdown)", launched, plan.build_timeout, POLL_INTERVAL, || async {
        match ec2.describe_instance(region, &instance_id).await? {
            Some(i) if i.state == "stopped" => match i.state_reason.as_deref() {
                None | Some("Client.InstanceInitiatedShutdown") => Ok(Some(())),
                Some(other) => bail!(
                    "the instance was stopped ({other}), not shut down by first-boot.ps1; the script may not have finished"
                ),
            },
            Some(i) if matches!(i.state.as_str(), "shutting-down" | "terminated") => bail!(instance_gone(&i)),
            _ => Ok(None),
        }
    })
    .await
    .map_err(|e| match e.downcast::<crate::wait::TimedOut>() {
        Ok(t) => anyhow!("{t}: first-boot.ps1 did not finish; raise build_timeout or read the script's transcript on {instance_id}"),
        Err(e) => e,
    })?;

    b.enter(Stage::CreateImage)?;
    b.record(|c| c.images.push((region.to_string(), None)));
    let image_id = ec2
        .create_image(
            region,
            &instance_id,
            &plan.image_name,
            &plan.description,
            &plan.image_tags,
        )
        .await?;
    b.record(|c| c.images = vec![(region.to_string(), Some(image_id.clone()))]);
    b.progress
        .note(&format!("image {image_id} ({})", plan.image_name));
    let image_started = Instant::now();

    b.enter(Stage::WaitImage)?;
    let image = wait_available(
        ec2,
        b.cancel,
        region,
        &image_id,
        image_started,
        plan.image_timeout,
    )
    .await?;
    ec2.create_tags(region, &image.snapshot_ids, &plan.image_tags)
        .await?;

    // The instance, group and key pair are not needed once the image exists: they are removed
    // while the copies are pending (termination takes a while on EC2), not after.
    // Off the critical path while copies are pending: its waiting polls less often.
    let pace = if plan.copy_regions.is_empty() {
        POLL_INTERVAL
    } else {
        RELEASE_PACE
    };
    let release = async {
        let leftovers = teardown(ec2, plan, &b.created, false, pace, b.progress).await;
        b.record(|c| c.released = Some(leftovers));
    };
    let mut images = BTreeMap::from([(region.to_string(), image_id.clone())]);
    if plan.copy_regions.is_empty() {
        b.enter(Stage::Teardown)?;
        release.await;
    } else {
        b.enter(Stage::CopyImage)?;
        let (copies, ()) = futures::join!(copy_everywhere(b, &image_id), release);
        images.extend(copies?);
    }

    if !plan.share_with_accounts.is_empty() {
        b.enter(Stage::Share)?;
        for (r, id) in &images {
            ec2.share_image(r, id, &plan.share_with_accounts).await?;
        }
    }

    b.enter(Stage::StorePassword)?;
    let (outcome, printed) = match (&plan.password, b.secrets) {
        (PasswordDestination::Secret { expires_in, .. }, Some(secrets)) => {
            let name = plan
                .password
                .secret_name(&image_id)
                .ok_or_else(|| anyhow!("no secret name"))?;
            let value = serde_json::json!({
                "username": "Administrator",
                "password": password.expose(),
                "worker_type": plan.worker_type,
                "build_id": plan.build_id,
                "images": images,
                "base_image_id": plan.base.id,
                "created": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            let expires = Utc::now()
                + chrono::Duration::from_std(*expires_in).unwrap_or(chrono::Duration::days(365));
            secrets.set(&name, value, expires).await?;
            (PasswordOutcome::Secret { secret: name }, None)
        }
        (PasswordDestination::Secret { .. }, None) => {
            bail!("no Taskcluster client to store the password with")
        }
        (PasswordDestination::Print, _) => (PasswordOutcome::Printed, Some(password)),
    };
    Ok((images, outcome, printed))
}

fn instance_gone(i: &crate::model::Instance) -> String {
    format!(
        "the instance {} is {}{}",
        i.id,
        i.state,
        i.state_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

/// Waits until the image is available (an error if it fails).
pub async fn wait_available(
    ec2: &Ec2,
    cancel: &Cancel,
    region: &str,
    image_id: &str,
    started: Instant,
    timeout: Duration,
) -> Result<Image> {
    let ids = vec![image_id.to_string()];
    poll_until(
        cancel,
        &format!("image {image_id} in {region} to be available"),
        started,
        timeout,
        POLL_INTERVAL,
        || async {
            let found = ec2.describe_images(region, &ids).await;
            let image = match found {
                Ok(images) => images.into_iter().next(),
                Err(e) if has_code(&e, &["InvalidAMIID.NotFound"]) => None,
                Err(e) => return Err(e),
            };
            match image {
                Some(i) if i.is_available() => Ok(Some(i)),
                Some(i)
                    if matches!(
                        i.state.as_str(),
                        "failed" | "error" | "deregistered" | "invalid"
                    ) =>
                {
                    bail!(
                        "image {image_id} in {region} is {}{}",
                        i.state,
                        i.state_reason
                            .as_deref()
                            .map(|r| format!(": {r}"))
                            .unwrap_or_default()
                    )
                }
                _ => Ok(None),
            }
        },
    )
    .await
}

/// Copies the image to every other region at once and waits for all of them: the wall time
/// is the slowest copy's, not the sum.
async fn copy_everywhere(b: &Builder<'_>, image_id: &str) -> Result<BTreeMap<String, String>> {
    let plan = b.plan;
    let copy = ImageCopy {
        source_region: &plan.region,
        image_id,
        name: &plan.image_name,
        description: &plan.description,
        tags: &plan.image_tags,
        token_prefix: &plan.build_id,
        timeout: plan.image_timeout,
    };
    copy_image_to(
        b.ec2,
        b.cancel,
        b.progress,
        &copy,
        &plan.copy_regions,
        &|dest, id| {
            b.record(|c| {
                c.images.retain(|(r, i)| !(r == dest && i.is_none()));
                c.images.push((dest.to_string(), id.map(str::to_string)));
            })
        },
    )
    .await
}

/// What [`copy_image_to`] copies.
pub struct ImageCopy<'a> {
    pub source_region: &'a str,
    pub image_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    /// The source's tags, given to each copy (CopyImage does not copy them), plus
    /// `tc-ami:source-image-id`.
    pub tags: &'a Tags,
    /// Idempotency tokens are `<token_prefix>-<region>`.
    pub token_prefix: &'a str,
    pub timeout: Duration,
}

/// Copies an image to `dests` at once, tags the copies and their snapshots, and waits for all
/// of them. `record(region, id)` hears of each copy before it is requested (id None) and as
/// soon as its id is known, so that a caller can remove them whatever happens.
pub async fn copy_image_to(
    ec2: &Ec2,
    cancel: &Cancel,
    progress: &Progress,
    copy: &ImageCopy<'_>,
    dests: &[String],
    record: &(dyn Fn(&str, Option<&str>) + Sync),
) -> Result<BTreeMap<String, String>> {
    let started = Instant::now();
    let mut tags = copy.tags.clone();
    tags.retain(|(k, _)| k != TAG_SOURCE_IMAGE_ID && !k.starts_with("aws:"));
    tags.push((TAG_SOURCE_IMAGE_ID.into(), copy.image_id.to_string()));
    let tags = &tags;
    let copies = join_all(dests.iter().map(|dest| async move {
        record(dest, None);
        let copy_id = ec2
            .copy_image(
                dest,
                copy.source_region,
                copy.image_id,
                copy.name,
                copy.description,
                &format!("{}-{dest}", copy.token_prefix),
            )
            .await?;
        record(dest, Some(&copy_id));
        ec2.create_tags(dest, std::slice::from_ref(&copy_id), tags)
            .await?;
        progress.note(&format!("copy {copy_id} in {dest}"));
        let image = wait_available(ec2, cancel, dest, &copy_id, started, copy.timeout).await?;
        ec2.create_tags(dest, &image.snapshot_ids, tags).await?;
        Ok::<_, anyhow::Error>((dest.clone(), copy_id))
    }))
    .await;
    copies.into_iter().collect()
}

/// Removes what the build created: the instance, group and key pair always; the images and
/// their snapshots too when `remove_images`. Never cancelled. Returns what it could not remove.
async fn teardown(
    ec2: &Ec2,
    plan: &BuildPlan,
    created: &Mutex<Created>,
    remove_images: bool,
    pace: Duration,
    progress: &Progress,
) -> Vec<String> {
    let snapshot = {
        let c = created.lock().unwrap_or_else(|e| e.into_inner());
        Created {
            key_pair: c.key_pair,
            group_id: c.group_id.clone(),
            group_named: c.group_named,
            instance_id: c.instance_id.clone(),
            launched: c.launched,
            images: c.images.clone(),
            released: None,
        }
    };
    let region = plan.region.as_str();
    let mut leftovers = Vec::new();
    let mut removed = Vec::new();

    // The instance: the recorded one, and any carrying this build's id (a launch whose answer
    // never arrived).
    let mut instances: Vec<String> = snapshot.instance_id.iter().cloned().collect();
    // The sweeps by tag and name are for a create whose answer never arrived; with the id
    // recorded (and RunInstances' idempotency token) there is nothing else to find.
    if snapshot.launched && snapshot.instance_id.is_none() {
        match ec2
            .find_instances_by_tag(region, TAG_BUILD_ID, &plan.build_id)
            .await
        {
            Ok(found) => instances.extend(found.into_iter().map(|i| i.id)),
            Err(e) => leftovers.push(format!(
                "instances tagged {TAG_BUILD_ID}={} in {region} (could not list them: {e})",
                plan.build_id
            )),
        }
    }
    instances.sort();
    instances.dedup();
    for id in &instances {
        match terminate_and_wait(ec2, region, id, pace).await {
            Ok(()) => removed.push(format!("instance {id}")),
            Err(e) => leftovers.push(format!("instance {id} in {region} ({e:#})")),
        }
    }

    if remove_images {
        let mut regions: Vec<String> = snapshot.images.iter().map(|(r, _)| r.clone()).collect();
        regions.sort();
        regions.dedup();
        for r in regions {
            let mut ids: Vec<String> = snapshot
                .images
                .iter()
                .filter(|(ir, _)| *ir == r)
                .filter_map(|(_, id)| id.clone())
                .collect();
            // Sweep: images of this build by tag and by name (a create whose answer was lost).
            if let Ok(found) = ec2
                .find_own_images_by_tag(&r, TAG_BUILD_ID, &plan.build_id)
                .await
            {
                ids.extend(found.into_iter().map(|i| i.id));
            }
            if let Ok(found) = ec2.find_own_images_by_name(&r, &plan.image_name).await {
                ids.extend(found.into_iter().map(|i| i.id));
            }
            ids.sort();
            ids.dedup();
            for id in ids {
                match remove_image(ec2, &r, &id, &plan.build_id).await {
                    Ok(n) => removed.push(format!("image {id} in {r} and {n} snapshot(s)")),
                    Err(e) => leftovers.push(format!("image {id} in {r} ({e:#})")),
                }
            }
        }
    }

    if snapshot.group_named {
        let mut groups: Vec<String> = snapshot.group_id.iter().cloned().collect();
        if snapshot.group_id.is_none() {
            match ec2
                .find_security_groups_by_name(region, &plan.group_name)
                .await
            {
                Ok(found) => groups.extend(found),
                Err(e) => leftovers.push(format!(
                    "security group {} in {region} (could not list: {e})",
                    plan.group_name
                )),
            }
        }
        groups.sort();
        groups.dedup();
        for id in groups {
            match delete_group_when_free(ec2, region, &id).await {
                Ok(()) => removed.push(format!("security group {id}")),
                Err(e) => leftovers.push(format!("security group {id} in {region} ({e:#})")),
            }
        }
    }

    if snapshot.key_pair {
        // By name: it works whether or not CreateKeyPair's answer arrived.
        match ec2.delete_key_pair(region, &plan.key_name).await {
            Ok(()) => removed.push(format!("key pair {}", plan.key_name)),
            Err(e) => leftovers.push(format!("key pair {} in {region} ({e:#})", plan.key_name)),
        }
    }

    if !removed.is_empty() {
        progress.note(&format!("removed {}", removed.join(", ")));
    }
    leftovers
}

/// Terminates the instance and waits, polling every `pace`, until it is terminated.
async fn terminate_and_wait(ec2: &Ec2, region: &str, id: &str, pace: Duration) -> Result<()> {
    match ec2.terminate_instance(region, id).await {
        Ok(()) => {}
        Err(e) if has_code(&e, &["InvalidInstanceID.NotFound"]) => return Ok(()),
        Err(e) => return Err(e),
    }
    let deadline = Instant::now() + TERMINATE_WAIT;
    loop {
        // Not terminated at once: the first look is one interval in.
        tokio::time::sleep(pace).await;
        match ec2.describe_instance(region, id).await? {
            None => return Ok(()),
            Some(i) if i.state == "terminated" => return Ok(()),
            Some(_) if Instant::now() >= deadline => {
                bail!("not terminated after {}s", TERMINATE_WAIT.as_secs())
            }
            Some(_) => {}
        }
    }
}

/// Deletes a security group, waiting while an instance that is terminating still holds it.
pub async fn delete_group_when_free(ec2: &Ec2, region: &str, id: &str) -> Result<()> {
    let deadline = Instant::now() + TERMINATE_WAIT;
    loop {
        match ec2.delete_security_group(region, id).await {
            Ok(()) => return Ok(()),
            Err(e) if has_code(&e, &["InvalidGroup.NotFound"]) => return Ok(()),
            // Still attached to an instance that is terminating.
            Err(e) if has_code(&e, &["DependencyViolation"]) && Instant::now() < deadline => {
                tokio::time::sleep(POLL_INTERVAL).await
            }
            Err(e) => return Err(e),
        }
    }
}

/// Deregisters an image (pending or available) and deletes every snapshot of it. Returns how
/// many snapshots were deleted.
pub async fn remove_image(ec2: &Ec2, region: &str, id: &str, build_id: &str) -> Result<usize> {
    let mut snapshots = match ec2.describe_images(region, &[id.to_string()]).await {
        Ok(images) => images.into_iter().flat_map(|i| i.snapshot_ids).collect(),
        Err(e) if has_code(&e, &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"]) => {
            Vec::new()
        }
        Err(e) => return Err(e),
    };
    match ec2.deregister_image(region, id).await {
        Ok(()) => {}
        Err(e) if has_code(&e, &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"]) => {}
        Err(e) => return Err(e),
    }
    snapshots.extend(
        ec2.find_snapshots(region, TAG_BUILD_ID, build_id, Some(id))
            .await?,
    );
    snapshots.sort();
    snapshots.dedup();
    let mut deleted = 0;
    for snap in &snapshots {
        let mut tries = 0;
        loop {
            match ec2.delete_snapshot(region, snap).await {
                Ok(()) => break,
                Err(e) if has_code(&e, &["InvalidSnapshot.NotFound"]) => break,
                // The deregistration has not reached the snapshot yet.
                Err(e) if has_code(&e, &["InvalidSnapshot.InUse"]) && tries < 30 => {
                    tries += 1;
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(e) => return Err(e),
            }
        }
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_worker_type;
    use std::path::Path;

    fn wt() -> WorkerType {
        parse_worker_type(
            "servo-win2016",
            Path::new("w.toml"),
            "worker_pool_id = \"proj-servo/win2016\"\nbuild_region = \"us-west-2\"\ninstance_type = \"c5.4xlarge\"\nregions = [\"us-east-1\"]\n",
            Some("Windows_Server-2016-English-Full-Base-*"),
            Path::new("."),
        )
        .unwrap()
    }

    fn base() -> Image {
        Image {
            id: "ami-0123".into(),
            name: "Windows_Server-2016-English-Full-Base-2026.11.12".into(),
            state: "available".into(),
            creation_date: None,
            owner_id: "801119661308".into(),
            root_device_name: Some("/dev/sda1".into()),
            snapshot_ids: vec![],
            tags: Default::default(),
            state_reason: None,
        }
    }

    #[test]
    fn build_ids_sort_by_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T21:40:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(new_build_id(t, 0x3f9a2c), "20261124T214001Z-3f9a2c");
        assert_eq!(new_build_id(t, 0xff3f9a2c), "20261124T214001Z-3f9a2c");
    }

    #[test]
    fn plan_names_and_tags_everything() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T21:40:01Z")
            .unwrap()
            .with_timezone(&Utc);
        let plan = plan_build(
            &wt(),
            &base(),
            "<powershell>\nx\n</powershell>".into(),
            t,
            "20261124T214001Z-3f9a2c",
        );
        assert_eq!(
            plan.key_name,
            "tc-ami-servo-win2016-20261124T214001Z-3f9a2c"
        );
        assert_eq!(plan.image_name, plan.key_name);
        assert_eq!(plan.copy_regions, vec!["us-east-1"]);
        let tag = |tags: &Tags, k: &str| {
            tags.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            tag(&plan.resource_tags, TAG_BUILD_ID).as_deref(),
            Some("20261124T214001Z-3f9a2c")
        );
        assert_eq!(
            tag(&plan.resource_tags, TAG_CREATED_AT).as_deref(),
            Some("2026-11-24T21:40:01Z")
        );
        assert_eq!(
            tag(&plan.image_tags, TAG_BASE_IMAGE_ID).as_deref(),
            Some("ami-0123")
        );
        assert_eq!(
            tag(&plan.image_tags, TAG_USER_DATA_SHA256),
            Some(sha256_hex(b"<powershell>\nx\n</powershell>"))
        );
        assert_eq!(
            tag(&plan.image_tags, TAG_WORKER_TYPE).as_deref(),
            Some("servo-win2016")
        );
        assert!(tag(&plan.image_tags, TAG_VERSION).is_some());
        // EC2 image names: 3-128 characters of letters, digits, ()[] ./-'@_
        assert!(plan.image_name.len() <= 128);
        assert!(
            plan.image_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c))
        );
    }

    #[test]
    fn failure_message_names_stage_and_leftovers() {
        let e = BuildFailed {
            stage: Stage::WaitStopped,
            cause: anyhow!("the instance i-1 is terminated"),
            leftovers: vec!["security group sg-1 in us-west-2 (boom)".into()],
        };
        assert_eq!(
            e.to_string(),
            "build failed while waiting for first-boot.ps1 to shut the instance down: the instance i-1 is terminated; LEFT BEHIND, remove by hand: security group sg-1 in us-west-2 (boom)"
        );
    }
}
