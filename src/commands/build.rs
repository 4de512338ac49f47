//! `tc-ami build -w W`: build an image, copy it to W's regions, store the password.

use anyhow::{Context, Result};
use rand::Rng;

use crate::build::{new_build_id, plan_build};
use crate::commands::Ctx;
use crate::commands::base_ami::find_base_image;
use crate::config::{PasswordDestination, WorkerType};
use crate::config_dir::load_worker_type;
use crate::ec2::Ec2;
use crate::interrupt::ShieldKind;
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
    let secrets = match wt.password {
        PasswordDestination::Secret { .. } => Some(SecretsApi::new(&TcEnv::from_env(true)?)?),
        PasswordDestination::Print => None,
    };
    let ec2 = Ec2::load().await;
    let progress = ctx.shell.progress();
    progress.stage(&format!(
        "finding the base image `{}` in {}",
        wt.base_ami_pattern, wt.build_region
    ));
    // Until the build starts, an interrupt drops the command where it waits
    // (commands::changing): nothing was created.
    let base = find_base_image(&ec2, wt).await?;
    progress.note(&format!("base image {} ({})", base.id, base.name));

    let now = chrono::Utc::now();
    let build_id = new_build_id(now, rand::thread_rng().r#gen());
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
        run_build(&ec2, secrets.as_ref(), &plan, &ctx.cancel, &progress).await?
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
