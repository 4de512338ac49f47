//! `tc-ami build -w W`: build an image, copy it to W's regions, store the password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rand::Rng;

use crate::build::{new_build_id, plan_build};
use crate::commands::base_ami::find_base_image;
use crate::commands::{Ctx, each};
use crate::config::{PasswordDestination, WorkerType};
use crate::config_dir::load_worker_type;
use crate::duration::format_duration;
use crate::interrupt::ShieldKind;
use crate::model::InstanceStateName;
use crate::ops::build::{BuildFailed, BuildReport, Kept, PasswordOutcome, run_build};
use crate::password::Secret;
use crate::pool::{definition, pool_regions};
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};
use crate::user_data::user_data_for;

pub async fn run(ctx: &Ctx, worker_type: &str, keep_on_failure: Option<Duration>) -> Result<u8> {
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let report = build_images(ctx, &wt, keep_on_failure).await?;
    let human: Vec<String> = report
        .images
        .iter()
        .map(|(region, id)| format!("{region}\t{id}"))
        .collect();
    let json = serde_json::to_value(&report)?;
    ctx.shell.result(&human.join("\n"), &json);
    Ok(0)
}

/// `build -w A -w B …` (or `--all`, `given` empty): the builds of several worker types, at most
/// `jobs` at once ([`each::run_each`]). Each prints `W<TAB>region<TAB>image` lines. Shielded
/// as a whole: an interrupt starts no more builds, and each one running stops at its next step
/// and removes what it made, as a build alone does.
pub async fn run_several(
    ctx: &Ctx,
    given: &[String],
    jobs: usize,
    keep_on_failure: Option<Duration>,
) -> Result<u8> {
    let names = each::worker_types(ctx, given)?;
    let _builds = ctx.cancel.shield(ShieldKind::Own, "the builds");
    each::run_each(ctx, &names, jobs, |ctx, name| async move {
        let wt = load_worker_type(&ctx.config_dir, &name)?;
        let report = build_images(&ctx, &wt, keep_on_failure).await?;
        let human: Vec<String> = report
            .images
            .iter()
            .map(|(region, id)| format!("{name}\t{region}\t{id}"))
            .collect();
        Ok(each::Done::ok(
            human.join("\n"),
            serde_json::to_value(&report)?,
        ))
    })
    .await
}

/// Builds an image for `wt` and its copies; on failure everything is removed (with
/// `keep_on_failure`, but for the instance, its key pair and group, for that long) and the
/// error is a [`BuildFailed`] naming the stage.
/// The first-boot script as user data, checked (readable, within EC2's limit), with a warning
/// when its downloads are not all pinned.
fn checked_user_data(ctx: &Ctx, wt: &WorkerType) -> Result<String> {
    let (script, user_data) = script_user_data(wt)?;
    let script_path = wt.first_boot_script.display().to_string();
    if let Some(warning) = crate::pins::build_warning(&wt.name, &script_path, &script) {
        ctx.shell
            .warn(warning.strip_prefix("warning: ").unwrap_or(&warning));
    }
    Ok(user_data)
}

/// W's first-boot script and the user data a build of W launches with now (readable, within
/// EC2's limit): `auto` compares its SHA-256 with the live image's tag.
pub fn script_user_data(wt: &WorkerType) -> Result<(String, String)> {
    let script_path = wt.first_boot_script.display().to_string();
    let script = std::fs::read_to_string(&wt.first_boot_script).with_context(|| {
        format!(
            "cannot read the first-boot script {script_path} (first_boot_script in {})",
            wt.file.display()
        )
    })?;
    let user_data = user_data_for(&script, &script_path)?;
    Ok((script, user_data))
}

/// A failed build's error, after saying what `--keep-on-failure` kept.
fn failure(ctx: &Ctx, worker_type: &str, mut failed: BuildFailed) -> anyhow::Error {
    if let Some(kept) = &failed.kept {
        tell_kept(ctx, worker_type, kept);
    }
    // The private key is written out; it goes no further.
    if let Some(kept) = failed.kept.as_mut() {
        kept.private_key = Secret::new(String::new());
    }
    anyhow::Error::new::<BuildFailed>(failed)
}

/// Where the administrator password went (or the password itself, once, when no secret is
/// configured).
fn tell_password(ctx: &Ctx, report: &BuildReport) {
    match &report.password {
        PasswordOutcome::Secret { secret } => ctx.shell.note(&format!(
            "administrator password stored in the Taskcluster secret {secret}"
        )),
        PasswordOutcome::Printed => {
            if let Some(p) = &report.printed_password {
                // Asked for: the worker type names no secret. Shown once, on stderr.
                ctx.shell.note(&format!(
                    "administrator password of {} (shown once; set password_secret_prefix to store it instead): {}",
                    report
                        .images
                        .get(&report.region)
                        .map(String::as_str)
                        .unwrap_or("the image"),
                    p.expose()
                ));
            }
        }
    }
}

pub async fn build_images(
    ctx: &Ctx,
    wt: &WorkerType,
    keep_on_failure: Option<Duration>,
) -> Result<BuildReport> {
    let regions = copy_regions(ctx, wt).await?;
    let wt = &WorkerType {
        regions,
        ..wt.clone()
    };
    // Everything that can be checked before creating anything is checked first.
    let user_data = checked_user_data(ctx, wt)?;
    let now = chrono::Utc::now();
    let build_id = new_build_id(now, rand::thread_rng().r#gen());
    let secrets = match &wt.password {
        PasswordDestination::Secret { prefix, .. } => {
            let env = TcEnv::from_env(true)?;
            let secrets = SecretsApi::new(&env)?;
            prove_password_secret(&env, &secrets, prefix, &build_id).await?;
            Some(secrets)
        }
        PasswordDestination::Print => None,
    };
    let ec2 = crate::ops::aws_credentials::ec2_for(wt).await?;
    let progress = ctx.shell.progress();
    progress.stage(&format!(
        "finding the base image `{}` in {}",
        wt.base_ami_pattern, wt.build_region
    ));
    // Until the build starts, an interrupt drops the command where it waits
    // (commands::changing): nothing was created.
    let base = find_base_image(&ec2, wt).await?;
    progress.note(&format!("base image {} ({})", base.id, base.name));

    let plan = plan_build(wt, &base, user_data, now, &build_id);
    ctx.shell.verbose(|| {
        format!(
            "build plan: key pair, security group and image {}; {} bytes of user data (sha256 {}); timeouts {} for the guest, {} per image",
            plan.image_name,
            plan.user_data.len(),
            plan.user_data_sha256,
            crate::duration::format_duration(plan.build_timeout),
            crate::duration::format_duration(plan.image_timeout)
        )
    });
    progress.note(&format!(
        "build {build_id} of {} in {}",
        wt.name,
        wt.all_regions().join(", ")
    ));

    let report = {
        // The build stops itself when interrupted, and removes what it made.
        let _building = ctx.cancel.shield(ShieldKind::Own, "the build");
        run_build(
            &ec2,
            secrets.as_ref(),
            &plan,
            &ctx.cancel,
            &progress,
            keep_on_failure,
        )
        .await
        .map_err(|failed| failure(ctx, &wt.name, failed))?
    };
    ctx.cancel.stays(format!(
        "the images built stay ({})",
        report
            .images
            .iter()
            .map(|(r, i)| format!("{r} {i}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    tell_password(ctx, &report);
    Ok(report)
}

/// Proves, before anything is launched, that the password can be stored: sets and removes a
/// probe secret `<prefix>/tc-ami-probe-<build id>` beside where the password goes, which needs
/// the scope the build needs anyway (`secrets:set:<prefix>/*`; removing needs the same). The
/// probe lives an hour should its removal fail.
async fn prove_password_secret(
    env: &TcEnv,
    secrets: &SecretsApi,
    prefix: &str,
    build_id: &str,
) -> Result<()> {
    let name = format!("{prefix}/tc-ami-probe-{build_id}");
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let value = serde_json::json!({
        "probe": "tc-ami checks that it may store a build's administrator password here before launching it; removed at once"
    });
    secrets.set(&name, value, expires).await.map_err(|e| {
        env.refusal(
            e,
            Some(&[format!("secrets:set:{prefix}/*")]),
            &format!("store the administrator password in the secret {prefix}/<image id>"),
            "nothing was launched",
        )
    })?;
    if let Err(e) = secrets.remove(&name).await {
        tracing::warn!("the probe secret {name} stays until it expires within the hour: {e:#}");
    }
    Ok(())
}

/// The regions to copy the image to: the worker type's `regions`, else the regions of its live
/// pool (when Taskcluster is configured and the pool exists), else none.
async fn copy_regions(ctx: &Ctx, wt: &WorkerType) -> Result<Vec<String>> {
    if !wt.regions.is_empty() {
        return Ok(wt.regions.clone());
    }
    let Ok(env) = TcEnv::from_env(true) else {
        return Ok(vec![]);
    };
    let wm = WorkerManagerApi::new(&env)?;
    match wm.get_pool(&wt.worker_pool_id).await {
        Ok(live) => {
            let regions = pool_regions(&wt.worker_pool_id, &definition(&live)).unwrap_or_default();
            let extra: Vec<String> = regions
                .into_iter()
                .filter(|r| *r != wt.build_region)
                .collect();
            if !extra.is_empty() {
                ctx.shell.note(&format!(
                    "{} sets no regions: copying to the regions of worker pool {}: {}",
                    wt.name,
                    wt.worker_pool_id,
                    extra.join(", ")
                ));
            }
            Ok(extra)
        }
        Err(e) => {
            tracing::warn!(
                "not copying: the regions of worker pool {} are unknown: {e:#}",
                wt.worker_pool_id
            );
            Ok(vec![])
        }
    }
}

/// Says what `--keep-on-failure` kept and how to get in: the instance, its address, the private
/// key (written to a file only the user can read: it never leaves memory otherwise, and with it
/// `aws ec2 get-password-data` decrypts the administrator password), and when `cleanup` will
/// remove them. Never the password or the key itself.
fn tell_kept(ctx: &Ctx, worker_type: &str, kept: &Kept) {
    let (id, region) = (&kept.instance_id, &kept.region);
    let until = kept
        .expires_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let ttl = (kept.expires_at - chrono::Utc::now())
        .to_std()
        .map(|d| format_duration(Duration::from_secs(d.as_secs().div_ceil(60) * 60)))
        .unwrap_or_else(|_| "0s".into());
    let state = kept
        .state
        .as_ref()
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "state unknown".into());
    let address = match &kept.public_ip {
        Some(ip) => format!("public address {ip}"),
        None => "no public address".to_string(),
    };
    let shell = &ctx.shell;
    shell.note(&format!(
        "kept for inspection until {until} (about {ttl}): instance {id} in {region} ({state}, {address}), key pair {}, security group {}",
        kept.key_name, kept.group_id
    ));
    match save_private_key(&kept.key_name, &kept.private_key) {
        Ok(path) => shell.note(&format!(
            "  the key pair's private key: {} (mode 0600; delete it once the instance is gone); the administrator password, once Windows has made it: aws ec2 get-password-data --region {region} --instance-id {id} --priv-launch-key {}",
            path.display(),
            path.display()
        )),
        Err(e) => shell.warn(&format!(
            "cannot save the key pair's private key, so the administrator password cannot be decrypted: {e:#}"
        )),
    }
    shell.note(&format!(
        "  to connect (RDP, port 3389), its security group first needs an inbound rule: aws ec2 authorize-security-group-ingress --region {region} --group-id {} --protocol tcp --port 3389 --cidr <your address>/32",
        kept.group_id
    ));
    if kept.state == Some(InstanceStateName::Stopped) {
        shell.note(&format!(
            "  it is stopped: aws ec2 start-instances --region {region} --instance-ids {id}"
        ));
    }
    shell.note(&format!(
        "  `tc-ami cleanup -w {worker_type}` removes the instance, key pair and group once {until} has passed; to end it sooner: aws ec2 terminate-instances --region {region} --instance-ids {id}"
    ));
    for problem in &kept.problems {
        shell.warn(&format!("while keeping {id}: {problem}"));
    }
}

/// Writes the private key to `<data dir>/tc-ami/kept/<key name>.pem`, readable by the user only;
/// the data dir is `$XDG_DATA_HOME`, else `~/.local/share`.
fn save_private_key(key_name: &str, key: &Secret) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if key.expose().is_empty() {
        return Err(anyhow!("tc-ami did not hold it"));
    }
    let dir = kept_keys_dir()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{key_name}.pem"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(key.expose().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn kept_keys_dir() -> Result<PathBuf> {
    Ok(data_dir()?.join("kept"))
}

/// tc-ami's data directory, `$XDG_DATA_HOME/tc-ami` (default `~/.local/share/tc-ami`): kept
/// build keys, debug instances' files.
pub fn data_dir() -> Result<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    let data = std::env::var_os("XDG_DATA_HOME")
        .and_then(absolute)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(absolute)
                .map(|h| h.join(".local/share"))
        })
        .ok_or_else(|| anyhow!("neither XDG_DATA_HOME nor HOME is set to an absolute path"))?;
    Ok(Path::new(&data).join("tc-ami"))
}
