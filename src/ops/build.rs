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
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::time::Instant;

use crate::build::BuildPlan;
use crate::config::PasswordDestination;
use crate::ec2::{Ec2, LaunchSpec};
use crate::guest_console::{failed_text, merge_steps, parse_console, progress_text, step_line};
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
/// The wait for the guest's shutdown polls the instance every 1.8 s and, on every other poll,
/// also reads its console: 33 + 17 = 50 EC2 calls a minute, as many as one call every 1.2 s
/// (the benchmark's budget is 60 per minute of waiting, copies and all), a stop noticed 0.9 s
/// after it on average (reading the console instead of the state on every other 1.2 s poll
/// would make that 1.2 s), and a `TC-AMI-FAILED` line within two polls (3.6 s).
const SHUTDOWN_POLL: Duration = Duration::from_millis(1800);
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
#[error("build failed while {stage}: {cause:#}{}{}", kept_text(.kept.as_ref()), leftover_text(.leftovers))]
pub struct BuildFailed {
    pub stage: Stage,
    pub cause: anyhow::Error,
    /// What teardown could not remove, to be removed by hand (or by `tc-ami cleanup`).
    pub leftovers: Vec<String>,
    /// The build instance, key pair and security group left on purpose (`--keep-on-failure`).
    pub kept: Option<Kept>,
}

/// A failed build's instance, with its key pair and security group, left for someone to look
/// inside (`--keep-on-failure`), all three tagged `tc-ami:expires-at` so that `cleanup` removes
/// them after the TTL. Its images are removed as after any failure.
#[derive(Debug)]
pub struct Kept {
    pub instance_id: String,
    pub region: String,
    /// Its state once the build ended (`running` after the guest gave up), if it could be read.
    pub state: Option<InstanceStateName>,
    pub public_ip: Option<String>,
    pub key_name: String,
    pub group_id: String,
    pub expires_at: DateTime<Utc>,
    /// The key pair's private key, which decrypts the password data; never printed.
    pub private_key: Secret,
    /// What went wrong while keeping them (tagging, describing), to tell the user.
    pub problems: Vec<String>,
}

/// `; kept instance i-… with its key pair and security group in R until T (--keep-on-failure)`.
pub fn kept_text(kept: Option<&Kept>) -> String {
    match kept {
        Some(k) => format!(
            "; kept instance {} with its key pair and security group in {} until {} (--keep-on-failure)",
            k.instance_id,
            k.region,
            rfc3339(k.expires_at)
        ),
        None => String::new(),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
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
    /// `--keep-on-failure`'s TTL.
    keep_on_failure: Option<Duration>,
    /// The instance, once launched, and what removes it with its group and key pair.
    launched: Mutex<Option<Launched>>,
    /// The guest's steps read from its console so far.
    guest: Mutex<GuestWatch>,
}

/// The build instance and its access: what `--keep-on-failure` keeps.
struct Launched {
    instance_id: String,
    group_id: String,
    /// The removal of the key pair, the group and the instance.
    steps: Vec<Step>,
    /// A copy of the key pair's private key, held only with `--keep-on-failure`.
    private_key: Option<Secret>,
}

#[derive(Default)]
struct GuestWatch {
    /// `TC-AMI-STEP` texts, oldest first.
    steps: Vec<String>,
    /// GetConsoleOutput failed: the wait goes on without it.
    console_off: bool,
}

/// Runs the build. On failure, interrupt or panic, everything it created is removed before it
/// returns (or the panic goes on); the error names the stage. With `keep_on_failure` (a TTL),
/// a failure after the launch that is not an interrupt keeps the instance, its key pair and its
/// security group instead (see [`Kept`]).
pub async fn run_build(
    ec2: &Ec2,
    secrets: Option<&SecretsApi>,
    plan: &BuildPlan,
    cancel: &Cancel,
    progress: &Progress,
    keep_on_failure: Option<Duration>,
) -> Result<BuildReport, BuildFailed> {
    let b = Builder {
        ec2,
        secrets,
        plan,
        cancel,
        progress,
        td: Teardown::watched(
            cancel,
            format!(
                "`tc-ami cleanup -w {}` removes them (they carry the tag {}={}) once they are too old to belong to a build in progress",
                plan.worker_type,
                tags::BUILD_ID,
                plan.build_id
            ),
        ),
        stage: Mutex::new(Stage::CreateKeyPair),
        released: Mutex::new(None),
        keep_on_failure,
        launched: Mutex::new(None),
        guest: Mutex::new(GuestWatch::default()),
    };
    let started = Instant::now();
    let mut keeping = None;
    let result =
        b.td.undo_on_failure(POLL_INTERVAL, pipeline(&b), |cause| {
            keeping = b.choose_what_to_keep(cause);
        })
        .await;
    let released = lock(&b.released).take().unwrap_or_default();
    match result {
        Ok(built) => b.finish(built, released, started).await,
        Err((cause, removal)) => {
            note_removed(progress, &removal);
            let kept = match (keeping, keep_on_failure) {
                (Some(launched), Some(ttl)) => Some(b.keep_for_inspection(launched, ttl).await),
                _ => None,
            };
            progress.finish();
            let mut leftovers = released.left;
            leftovers.extend(removal.left);
            Err(BuildFailed {
                stage: b.stage(),
                cause,
                leftovers,
                kept,
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

/// Test only, in debug builds only (the tests' binary): `TC_AMI_TEST_PANIC_AT=<stage>` (a
/// [`Stage`] in kebab case, `store-password`) panics as the build enters that stage, so that a
/// test can check that a panic after launch still removes everything. Release builds have no
/// such variable.
#[cfg(debug_assertions)]
fn test_only_panic(stage: Stage) {
    let name = serde_json::to_value(stage).ok();
    if let (Some(name), Ok(wanted)) = (name, std::env::var("TC_AMI_TEST_PANIC_AT"))
        && name.as_str() == Some(wanted.as_str())
    {
        panic!("test-only fault TC_AMI_TEST_PANIC_AT={wanted}");
    }
}

#[cfg(not(debug_assertions))]
fn test_only_panic(_: Stage) {}

async fn pipeline(b: &Builder<'_>) -> Result<Built> {
    let (private_key, group_id, mut temporaries) = b.create_access().await?;
    let (instance_id, instance_step) = b.launch(&group_id).await?;
    temporaries.push(instance_step);
    *lock(&b.launched) = Some(Launched {
        instance_id: instance_id.clone(),
        group_id: group_id.clone(),
        steps: temporaries.clone(),
        private_key: b.keep_on_failure.map(|_| private_key.clone()),
    });
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

    fn guest(&self) -> std::sync::MutexGuard<'_, GuestWatch> {
        lock(&self.guest)
    }

    /// The build failed (`cause`): says so, and with `--keep-on-failure`, unless it was an
    /// interrupt, takes the instance, its group and key pair out of the teardown that follows
    /// and returns them. A signal means "stop and leave nothing" (a CI job cancelled, a person
    /// who changed their mind), so it always removes everything, as Packer's `-on-error=ask`
    /// does when interrupted.
    fn choose_what_to_keep(&self, cause: &anyhow::Error) -> Option<Launched> {
        let stage = self.stage();
        if let Some(i) = cause.downcast_ref::<Interrupted>() {
            let not_kept = if self.keep_on_failure.is_some() {
                " (--keep-on-failure keeps nothing after an interrupt)"
            } else {
                ""
            };
            self.progress.note(&format!(
                "{stage}: {i}; removing everything this build created{not_kept}"
            ));
            return None;
        }
        if self.keep_on_failure.is_none() {
            self.progress.note(&format!(
                "{stage}: failed; removing everything this build created"
            ));
            return None;
        }
        let launched = lock(&self.launched).take();
        match launched {
            Some(l) if l.steps.iter().all(|s| self.td.is_registered(*s)) => {
                self.td.keep(&l.steps);
                self.progress.note(&format!(
                    "{stage}: failed; keeping the build instance {}, its key pair and security group (--keep-on-failure), removing everything else this build created",
                    l.instance_id
                ));
                Some(l)
            }
            Some(_) => {
                self.progress.note(&format!(
                    "{stage}: failed; removing everything this build created (--keep-on-failure: the build instance was already removed once the image existed)"
                ));
                None
            }
            None => {
                self.progress.note(&format!(
                    "{stage}: failed; removing everything this build created (--keep-on-failure: no instance was launched)"
                ));
                None
            }
        }
    }

    /// Tags the kept instance, group and key pair with `tc-ami:expires-at` = now + `ttl`
    /// (CreateTags overwrites a value set at launch) and reads the instance's state and address.
    async fn keep_for_inspection(&self, launched: Launched, ttl: Duration) -> Kept {
        let (ec2, region, plan) = (self.ec2, self.region(), self.plan);
        let expires_at = chrono::Duration::from_std(ttl)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or_else(Utc::now);
        let mut problems = Vec::new();
        let mut ids = vec![launched.instance_id.clone(), launched.group_id.clone()];
        match ec2.key_pair_id(region, &plan.key_name).await {
            Ok(Some(id)) => ids.push(id),
            Ok(None) => problems.push(format!("the key pair {} was not found", plan.key_name)),
            Err(e) => problems.push(format!("{e:#}")),
        }
        let tags = vec![(tags::EXPIRES_AT.to_string(), rfc3339(expires_at))];
        if let Err(e) = ec2.create_tags(region, &ids, &tags).await {
            problems.push(format!(
                "cannot tag {} with {}, so cleanup may remove them before then: {e:#}",
                ids.join(", "),
                tags::EXPIRES_AT
            ));
        }
        let (state, public_ip) = match ec2.instance_address(region, &launched.instance_id).await {
            Ok(Some((instance, ip))) => (Some(instance.state), ip),
            Ok(None) => (None, None),
            Err(e) => {
                problems.push(format!("{e:#}"));
                (None, None)
            }
        };
        Kept {
            instance_id: launched.instance_id,
            region: region.to_string(),
            state,
            public_ip,
            key_name: plan.key_name.clone(),
            group_id: launched.group_id,
            expires_at,
            private_key: launched
                .private_key
                .unwrap_or_else(|| Secret::new(String::new())),
            problems,
        }
    }

    fn enter(&self, stage: Stage) -> Result<()> {
        *lock(&self.stage) = stage;
        test_only_panic(stage);
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
            terminate_on_shutdown: false,
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
                crate::budget::poll(region).await;
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
                    crate::budget::poll(region).await;
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
                        crate::budget::poll(region).await;
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

    /// Waits for the guest to shut the instance down, reading its console alongside the state
    /// on every other poll (the first one included, see [`SHUTDOWN_POLL`]): its steps become
    /// progress lines, and its `TC-AMI-FAILED` ends the build within two polls.
    async fn wait_stopped(&self, instance_id: &str, launched: Instant) -> Result<()> {
        self.enter(Stage::WaitStopped)?;
        let mut polls = 0u32;
        poll_until(
            self.cancel,
            "the instance to stop (first-boot.ps1 ends with a shutdown)",
            launched,
            self.plan.build_timeout,
            SHUTDOWN_POLL,
            || {
                polls += 1;
                let read_console = !polls.is_multiple_of(2) && !self.guest().console_off;
                async move {
                    if !read_console {
                        return self.check_stopped(instance_id).await;
                    }
                    let (console, state) = futures::join!(
                        self.read_console(instance_id),
                        self.check_stopped(instance_id)
                    );
                    // A guest that gave up is a failure, whatever the state says.
                    console?;
                    state
                }
            },
        )
        .await
        .map_err(|e| match e.downcast::<TimedOut>() {
            Ok(t) => anyhow!(
                "{t}: first-boot.ps1 did not finish ({}); raise build_timeout or read the script's transcript on {instance_id}",
                progress_text(&self.guest().steps)
            ),
            Err(e) => e,
        })
    }

    /// One look at the instance: Some once the guest has shut it down; an error if someone else
    /// stopped it, or it is terminating.
    async fn check_stopped(&self, instance_id: &str) -> Result<Option<()>> {
        crate::budget::poll(self.region()).await;
        match self
            .ec2
            .describe_instance(self.region(), instance_id)
            .await?
        {
            Some(i) if i.state == InstanceStateName::Stopped => match i.state_reason.as_deref() {
                None | Some("Client.InstanceInitiatedShutdown") => Ok(Some(())),
                Some(other) => bail!(
                    "the instance was stopped ({other}), not shut down by first-boot.ps1; the script may not have finished"
                ),
            },
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
    }

    /// One read of the guest's console: new steps are shown, a failure is the error. If EC2
    /// will not give the console (a missing `ec2:GetConsoleOutput` permission, an instance type
    /// without `Latest` support), the wait goes on without it.
    async fn read_console(&self, instance_id: &str) -> Result<()> {
        crate::budget::poll(self.region()).await;
        let output = match self.ec2.console_output(self.region(), instance_id).await {
            Ok(Some(output)) => output,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.guest().console_off = true;
                self.progress.note(&format!(
                    "cannot read the guest's console, so its steps are not shown and a failure of first-boot.ps1 is noticed only at build_timeout: {e:#}"
                ));
                return Ok(());
            }
        };
        let report = parse_console(&output);
        let new = merge_steps(&mut self.guest().steps, &report.steps);
        for step in &new {
            self.progress.step(&step_line(step));
        }
        if let Some(reason) = report.failed {
            let steps = self.guest().steps.clone();
            bail!(failed_text(&reason, &steps, &self.plan.worker_type));
        }
        Ok(())
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
        // Config validation caps expires_in; checked all the same: no panic after launch.
        let expires = chrono::Duration::from_std(expires_in)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .ok_or_else(|| {
                anyhow!(
                    "password_secret_expires_in ({}) puts the secret's expiry beyond any date; use at most {}",
                    crate::duration::format_duration(expires_in),
                    crate::config::MAX_SECRET_EXPIRES_IN.1
                )
            })?;
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
                kept: None,
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
            kept: None,
        };
        assert_eq!(
            e.to_string(),
            "build failed while waiting for first-boot.ps1 to shut the instance down: the instance i-1 is terminated; LEFT BEHIND, remove by hand: security group sg-1 in us-west-2 (boom)"
        );
    }

    #[test]
    fn failure_message_names_what_was_kept_but_not_the_key() {
        let e = BuildFailed {
            stage: Stage::WaitStopped,
            cause: anyhow!("the guest reported: boom"),
            leftovers: vec![],
            kept: Some(Kept {
                instance_id: "i-1".into(),
                region: "us-west-2".into(),
                state: Some(InstanceStateName::Running),
                public_ip: None,
                key_name: "tc-ami-w-b".into(),
                group_id: "sg-1".into(),
                expires_at: DateTime::parse_from_rfc3339("2026-11-24T22:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
                private_key: Secret::new("-----BEGIN RSA PRIVATE KEY-----"),
                problems: vec![],
            }),
        };
        assert_eq!(
            e.to_string(),
            "build failed while waiting for first-boot.ps1 to shut the instance down: the guest reported: boom; kept instance i-1 with its key pair and security group in us-west-2 until 2026-11-24T22:00:00Z (--keep-on-failure)"
        );
        assert!(!format!("{e:?}").contains("BEGIN"));
    }
}
