//! `tc-ami build -w W`: build an image, copy it to W's regions, store the password.

use anyhow::{Context, Result};
use rand::Rng;

use crate::build::{new_build_id, plan_build};
use crate::commands::Ctx;
use crate::commands::base_ami::find_base_image;
use crate::config::{PasswordDestination, WorkerType};
use crate::config_dir::load_worker_type;
use crate::ec2::Ec2;
use crate::ops::build::{BuildReport, PasswordOutcome, run_build};
use crate::pool::{definition, pool_regions};
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};
use crate::user_data::user_data_for;

pub async fn run(ctx: &Ctx, worker_type: &str) -> Result<u8> {
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let report = build_images(ctx, &wt).await?;
    let human: Vec<String> = report
        .images
        .iter()
        .map(|(region, id)| format!("{region}\t{id}"))
        .collect();
    let json = serde_json::to_value(&report)?;
    ctx.shell.result(&human.join("\n"), &json);
    Ok(0)
}

/// Builds an image for `wt` and its copies; on failure everything is removed and the error
/// is a [`crate::ops::build::BuildFailed`] naming the stage.
pub async fn build_images(ctx: &Ctx, wt: &WorkerType) -> Result<BuildReport> {
    let regions = copy_regions(ctx, wt).await?;
    let wt = &WorkerType {
        regions,
        ..wt.clone()
    };
    // Everything that can be checked before creating anything is checked first.
    let script_path = wt.first_boot_script.display().to_string();
    let script = std::fs::read_to_string(&wt.first_boot_script).with_context(|| {
        format!(
            "cannot read the first-boot script {script_path} (first_boot_script in {})",
            wt.file.display()
        )
    })?;
    let user_data = user_data_for(&script, &script_path)?;
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
    let ec2 = Ec2::load().await;
    let progress = ctx.shell.progress();
    progress.stage(&format!(
        "finding the base image `{}` in {}",
        wt.base_ami_pattern, wt.build_region
    ));
    let base = tokio::select! {
        r = find_base_image(&ec2, wt) => r?,
        i = ctx.cancel.cancelled() => return Err(i.into()),
    };
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

    let report = run_build(&ec2, secrets.as_ref(), &plan, &ctx.cancel, &progress).await?;
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
