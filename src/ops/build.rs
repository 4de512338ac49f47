//! The AMI build pipeline: the steps that carry out a [`BuildPlan`].
//!
//! Modelled on Packer's multistep: every resource is named before it is created, tagged with
//! the build id at creation, and its removal registered (a sweep by name or tag) before the
//! create call and replaced by the removal by id the moment the answer arrives. Whatever fails
//! or is interrupted (or panics), what is registered is removed in reverse order before the
//! build returns. Interrupts are noticed at the next wait or between steps; a create call is
//! never cut off half-way. Adding a step is one call to an `ops` create function here.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use serde::Serialize;
use tokio::time::Instant;

use crate::build::BuildPlan;
use crate::config::PasswordDestination;
use crate::ec2::{Ec2, LaunchSpec};
use crate::interrupt::{Cancel, Interrupted};
use crate::model::{Image, InstanceStateName, tags};
use crate::ops::images::{ImageCopy, ImageMarks};
use crate::ops::teardown::{Removal, Step, Teardown};
use crate::ops::{access, images, instances};
use crate::password::{Secret, decrypt_password};
use crate::shell::Progress;
use crate::taskcluster::SecretsApi;
use crate::wait::{POLL_INTERVAL, TimedOut, poll_until};

/// The first-minute interval of the build instance's release while copies are pending: off the
/// critical path, so slower than a wait the build is blocked on; after that it grows like every
/// wait's ([`crate::wait::poll_interval`]: 2 % of the time waited, up to 15 s).
pub const RELEASE_PACE: Duration = Duration::from_secs(3);
/// Every this many polls of the password wait checks that the instance is still alive instead
/// of asking for the password (one call per poll either way).
pub const PASSWORD_POLLS_PER_STATE_CHECK: u32 = 10;

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

#[derive(Debug, thiserror::Error)]
#[error("build failed while {stage}: {cause:#}{}", leftover_text(.leftovers))]
pub struct BuildFailed {
    pub stage: Stage,
    pub cause: anyhow::Error,
    /// What teardown could not remove, to be removed by hand (or by `tc-ami cleanup`).
    pub leftovers: Vec<String>,
}

/// `; LEFT BEHIND, remove by hand: …`, or nothing when nothing was left.
pub fn leftover_text(leftovers: &[String]) -> String {
    if leftovers.is_empty() {
        String::new()
    } else {
        format!("; LEFT BEHIND, remove by hand: {}", leftovers.join(", "))
    }
}

impl BuildFailed {
    pub fn interrupted(&self) -> Option<Interrupted> {
        self.cause.downcast_ref::<Interrupted>().copied()
    }
}

/// What the pipeline made.
struct Built {
    images: BTreeMap<String, String>,
    /// The removal of the images and copies, to forget: they stay.
    image_steps: Vec<Step>,
    password: PasswordOutcome,
    printed: Option<Secret>,
}

struct Builder<'a> {
    ec2: &'a Ec2,
    secrets: Option<&'a SecretsApi>,
    plan: &'a BuildPlan,
    cancel: &'a Cancel,
    progress: &'a Progress,
    td: Teardown<'a>,
    stage: Mutex<Stage>,
    /// What removing the instance, group and key pair once the image existed did.
    released: Mutex<Option<Removal>>,
}

/// Runs the build. On failure, interrupt or panic, everything it created is removed before it
/// returns (or the panic goes on); the error names the stage.
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
        td: Teardown::new(),
        stage: Mutex::new(Stage::CreateKeyPair),
        released: Mutex::new(None),
    };
    let started = Instant::now();
    let result =
        b.td.undo_on_failure(POLL_INTERVAL, pipeline(&b), |cause| {
            let why = match cause.downcast_ref::<Interrupted>() {
                Some(i) => i.to_string(),
                None => "failed".to_string(),
            };
            progress.note(&format!(
                "{}: {why}; removing everything this build created",
                b.stage()
            ));
        })
        .await;
    let released = lock(&b.released).take().unwrap_or_default();
    match result {
        Ok(built) => b.finish(built, released, started).await,
        Err((cause, removal)) => {
            note_removed(progress, &removal);
            progress.finish();
            let mut leftovers = released.left;
            leftovers.extend(removal.left);
            Err(BuildFailed {
                stage: b.stage(),
                cause,
                leftovers,
            })
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn note_removed(progress: &Progress, removal: &Removal) {
    if !removal.removed.is_empty() {
        progress.note(&format!("removed {}", removal.removed.join(", ")));
    }
}

async fn pipeline(b: &Builder<'_>) -> Result<Built> {
    let (private_key, group_id, mut temporaries) = b.create_access().await?;
    let (instance_id, instance_step) = b.launch(&group_id).await?;
    temporaries.push(instance_step);
    let launched = Instant::now();
    b.wait_running(&instance_id, launched).await?;
    let password = b.wait_password(&instance_id, launched, private_key).await?;
    b.wait_stopped(&instance_id, launched).await?;
    let (image_id, image_step) = b.make_image(&instance_id).await?;
    let (images, mut image_steps) = b.copy_and_release(&image_id, &temporaries).await?;
    image_steps.push(image_step);
    b.share(&images).await?;
    let (password, printed) = b.store_password(&image_id, &images, password).await?;
    Ok(Built {
        images,
        image_steps,
        password,
        printed,
    })
}

impl<'a> Builder<'a> {
    fn stage(&self) -> Stage {
        *lock(&self.stage)
    }

    fn enter(&self, stage: Stage) -> Result<()> {
        *lock(&self.stage) = stage;
        self.cancel.check()?;
        self.progress.stage(&stage.to_string());
        Ok(())
    }

    fn region(&self) -> &'a str {
        &self.plan.region
    }

    /// The build's images: named and tagged for this build alone.
    fn marks(&self) -> ImageMarks {
        ImageMarks {
            name: self.plan.image_name.clone(),
            build_id: Some(self.plan.build_id.clone()),
        }
    }

    /// The key pair and the security group; returns the private key, the group id and the
    /// steps that remove them.
    async fn create_access(&self) -> Result<(Secret, String, Vec<Step>)> {
        let plan = self.plan;
        self.enter(Stage::CreateKeyPair)?;
        let (key, key_step) = access::create_key_pair(
            self.ec2,
            &self.td,
            self.region(),
            &plan.key_name,
            &plan.resource_tags,
        )
        .await?;
        self.enter(Stage::CreateSecurityGroup)?;
        let (group_id, group_step) = access::create_security_group(
            self.ec2,
            &self.td,
            self.region(),
            &plan.group_name,
            &format!("tc-ami build {}", plan.build_id),
            &plan.resource_tags,
        )
        .await?;
        Ok((key, group_id, vec![key_step, group_step]))
    }

    async fn launch(&self, group_id: &str) -> Result<(String, Step)> {
        let plan = self.plan;
        self.enter(Stage::Launch)?;
        let spec = LaunchSpec {
            image_id: &plan.base.id,
            instance_type: &plan.instance_type,
            key_name: &plan.key_name,
            security_group_id: group_id,
            user_data: &plan.user_data,
            root_device_name: plan.base.root_device_name.as_deref(),
            root_volume_gb: plan.root_volume_gb,
            tags: &plan.resource_tags,
            client_token: &plan.build_id,
        };
        let sweep = (tags::BUILD_ID, plan.build_id.as_str());
        let (id, step) = instances::launch(self.ec2, &self.td, self.region(), &spec, sweep).await?;
        self.progress.note(&format!(
            "instance {id} ({}) from {}",
            plan.instance_type, plan.base.id
        ));
        Ok((id, step))
    }

    async fn wait_running(&self, instance_id: &str, launched: Instant) -> Result<()> {
        self.enter(Stage::WaitRunning)?;
        let (ec2, region) = (self.ec2, self.region());
        poll_until(
            self.cancel,
            "the instance to start",
            launched,
            self.plan.build_timeout,
            POLL_INTERVAL,
            || async {
                match ec2.describe_instance(region, instance_id).await? {
                    // A quick guest may already be shutting down by the first poll: it ran.
                    Some(i)
                        if matches!(
                            i.state,
                            InstanceStateName::Running
                                | InstanceStateName::Stopping
                                | InstanceStateName::Stopped
                        ) =>
                    {
                        Ok(Some(()))
                    }
                    Some(i) if i.state == InstanceStateName::Pending => Ok(None),
                    None => Ok(None),
                    Some(i) => bail!(i.gone_text()),
                }
            },
        )
        .await
    }

    /// Waits for the password data and decrypts it; the private key is dropped after.
    async fn wait_password(
        &self,
        instance_id: &str,
        launched: Instant,
        private_key: Secret,
    ) -> Result<Secret> {
        self.enter(Stage::WaitPassword)?;
        let (ec2, region) = (self.ec2, self.region());
        let mut polls = 0u32;
        let password_data = poll_until(
            self.cancel,
            "Windows to make the administrator password",
            launched,
            self.plan.build_timeout,
            POLL_INTERVAL,
            || {
                polls += 1;
                let check_state = polls.is_multiple_of(PASSWORD_POLLS_PER_STATE_CHECK);
                async move {
                    if !check_state {
                        return ec2.get_password_data(region, instance_id).await;
                    }
                    if let Some(i) = ec2.describe_instance(region, instance_id).await?
                        && !matches!(
                            i.state,
                            InstanceStateName::Running | InstanceStateName::Stopping
                        )
                    {
                        // Stopped: the password data, if Windows made it, is still there.
                        if let Some(data) = ec2.get_password_data(region, instance_id).await? {
                            return Ok(Some(data));
                        }
                        bail!(
                            "{} before Windows made the administrator password",
                            i.gone_text()
                        );
                    }
                    Ok(None)
                }
            },
        )
        .await?;
        decrypt_password(&private_key, &password_data)
            .with_context(|| format!("GetPasswordData for {instance_id}"))
    }

    async fn wait_stopped(&self, instance_id: &str, launched: Instant) -> Result<()> {
        self.enter(Stage::WaitStopped)?;
        let (ec2, region) = (self.ec2, self.region());
        poll_until(
            self.cancel,
            "the instance to stop (first-boot.ps1 ends with a shutdown)",
            launched,
            self.plan.build_timeout,
            POLL_INTERVAL,
            || async {
                match ec2.describe_instance(region, instance_id).await? {
                    Some(i) if i.state == InstanceStateName::Stopped => {
                        match i.state_reason.as_deref() {
                            None | Some("Client.InstanceInitiatedShutdown") => Ok(Some(())),
                            Some(other) => bail!(
                                "the instance was stopped ({other}), not shut down by first-boot.ps1; the script may not have finished"
                            ),
                        }
                    }
                    Some(i)
                        if matches!(
                            i.state,
                            InstanceStateName::ShuttingDown | InstanceStateName::Terminated
                        ) =>
                    {
                        bail!(i.gone_text())
                    }
                    _ => Ok(None),
                }
            },
        )
        .await
        .map_err(|e| match e.downcast::<TimedOut>() {
            Ok(t) => anyhow!(
                "{t}: first-boot.ps1 did not finish; raise build_timeout or read the script's transcript on {instance_id}"
            ),
            Err(e) => e,
        })
    }

    /// Creates the image, waits until it is available and tags its snapshots.
    async fn make_image(&self, instance_id: &str) -> Result<(String, Step)> {
        let (plan, region) = (self.plan, self.region());
        self.enter(Stage::CreateImage)?;
        let (image_id, step) = images::create_image(
            self.ec2,
            &self.td,
            region,
            instance_id,
            &plan.description,
            &plan.image_tags,
            &self.marks(),
        )
        .await?;
        self.progress
            .note(&format!("image {image_id} ({})", plan.image_name));
        let started = Instant::now();
        self.enter(Stage::WaitImage)?;
        let image = images::wait_available(
            self.ec2,
            self.cancel,
            region,
            &image_id,
            started,
            plan.image_timeout,
        )
        .await?;
        self.ec2
            .create_tags(region, &image.snapshot_ids, &plan.image_tags)
            .await?;
        Ok((image_id, step))
    }

    /// Copies the image to the other regions while the instance, group and key pair (`steps`)
    /// are removed: they are not needed once the image exists, and termination takes a while,
    /// so it overlaps the copies instead of following them (polled less often, since nothing
    /// waits on it). Returns region → image and the copies' steps.
    async fn copy_and_release(
        &self,
        image_id: &str,
        steps: &[Step],
    ) -> Result<(BTreeMap<String, String>, Vec<Step>)> {
        let plan = self.plan;
        let pace = if plan.copy_regions.is_empty() {
            POLL_INTERVAL
        } else {
            RELEASE_PACE
        };
        let release = async {
            let removal = self.td.run_steps(steps, pace).await;
            note_removed(self.progress, &removal);
            *lock(&self.released) = Some(removal);
        };
        let mut images = BTreeMap::from([(plan.region.clone(), image_id.to_string())]);
        if plan.copy_regions.is_empty() {
            self.enter(Stage::Teardown)?;
            release.await;
            return Ok((images, vec![]));
        }
        self.enter(Stage::CopyImage)?;
        let copy = ImageCopy {
            source_region: &plan.region,
            image_id,
            marks: self.marks(),
            description: &plan.description,
            tags: &plan.image_tags,
            token_prefix: &plan.build_id,
            timeout: plan.image_timeout,
        };
        let copying = images::copy_image_to(
            self.ec2,
            &self.td,
            self.cancel,
            self.progress,
            &copy,
            &plan.copy_regions,
        );
        let (copies, ()) = futures::join!(copying, release);
        let (copies, steps) = copies?;
        images.extend(copies);
        Ok((images, steps))
    }

    async fn share(&self, images: &BTreeMap<String, String>) -> Result<()> {
        if self.plan.share_with_accounts.is_empty() {
            return Ok(());
        }
        self.enter(Stage::Share)?;
        for (region, id) in images {
            self.ec2
                .share_image(region, id, &self.plan.share_with_accounts)
                .await?;
        }
        Ok(())
    }

    async fn store_password(
        &self,
        image_id: &str,
        images: &BTreeMap<String, String>,
        password: Secret,
    ) -> Result<(PasswordOutcome, Option<Secret>)> {
        let plan = self.plan;
        self.enter(Stage::StorePassword)?;
        let expires_in = match (&plan.password, self.secrets) {
            (PasswordDestination::Print, _) => {
                return Ok((PasswordOutcome::Printed, Some(password)));
            }
            (PasswordDestination::Secret { .. }, None) => {
                bail!("no Taskcluster client to store the password with")
            }
            (PasswordDestination::Secret { expires_in, .. }, Some(_)) => *expires_in,
        };
        let name = plan
            .password
            .secret_name(image_id)
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
            + chrono::Duration::from_std(expires_in).unwrap_or(chrono::Duration::days(365));
        if let Some(secrets) = self.secrets {
            secrets.set(&name, value, expires).await?;
        }
        Ok((PasswordOutcome::Secret { secret: name }, None))
    }

    /// The images stay; anything else still registered is removed now.
    async fn finish(
        &self,
        built: Built,
        released: Removal,
        started: Instant,
    ) -> Result<BuildReport, BuildFailed> {
        self.td.keep(&built.image_steps);
        let mut leftovers = released.left;
        if !self.td.pending().is_empty() {
            self.progress.stage(&Stage::Teardown.to_string());
            let removal = self.td.run(POLL_INTERVAL).await;
            note_removed(self.progress, &removal);
            leftovers.extend(removal.left);
        }
        self.progress.finish();
        if !leftovers.is_empty() {
            return Err(BuildFailed {
                stage: Stage::Teardown,
                cause: anyhow!(
                    "the image was built ({}) but not everything could be removed",
                    built
                        .images
                        .values()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                leftovers,
            });
        }
        let plan = self.plan;
        Ok(BuildReport {
            worker_type: plan.worker_type.clone(),
            build_id: plan.build_id.clone(),
            region: plan.region.clone(),
            base_image: plan.base.clone(),
            image_name: plan.image_name.clone(),
            images: built.images,
            password: built.password,
            duration_seconds: (started.elapsed().as_millis() as f64 / 1000.0),
            printed_password: built.printed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
