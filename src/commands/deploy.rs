//! `tc-ami deploy -w W [--image …] [--dry-run] [--yes]`: builds first when no image is given,
//! shows the diff, asks, pushes, verifies.

use anyhow::{Result, anyhow, bail};

use crate::commands::Ctx;
use crate::commands::change::{
    Change, check_available, confirm, push, refuse_without_terminal, resolve_images,
};
use crate::config::load_worker_type;
use crate::diff::DEFAULT_CONTEXT;
use crate::ec2::Ec2;
use crate::image_arg::parse_image_args;
use crate::pool::{definition, pool_regions};
use crate::taskcluster::{TcEnv, WorkerManagerApi};

pub async fn run(
    ctx: &Ctx,
    worker_type: &str,
    images: &[String],
    dry_run: bool,
    yes: bool,
) -> Result<u8> {
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let args = parse_image_args(images).map_err(|e| anyhow!(e))?;
    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    // Fetched first, so that a missing pool or bad credentials stop us before a build.
    let live = wm.get_pool(&wt.worker_pool_id).await?;
    let regions = pool_regions(&wt.worker_pool_id, &definition(&live))?;
    let ec2 = Ec2::load().await;

    let (images, live) = if args.is_empty() {
        let built_for = wt.all_regions();
        if let Some(r) = regions.iter().find(|r| !built_for.contains(r)) {
            bail!(
                "worker pool {} has launch configs in {r}, but {} builds for {} only; add {r} to regions in {}",
                wt.worker_pool_id,
                wt.name,
                built_for.join(", "),
                wt.file.display()
            );
        }
        if !dry_run {
            refuse_without_terminal(
                yes,
                &format!("build and deploy to worker pool {}", wt.worker_pool_id),
            )?;
        }
        let report = crate::commands::build::build_images(ctx, &wt).await?;
        // The build took a while: compare against the pool as it is now.
        let live = wm.get_pool(&wt.worker_pool_id).await?;
        (report.images, live)
    } else {
        (
            resolve_images(&ec2, &wt, &wt.worker_pool_id, &regions, &args).await?,
            live,
        )
    };
    check_available(&ec2, &images).await?;
    let change = Change::new(&wt.worker_pool_id, wm.root_url(), &live, images)?;
    change.show(ctx, DEFAULT_CONTEXT);

    let mut report = change.to_json();
    let pushed = if !change.patched.changed {
        eprintln!(
            "worker pool {} is up to date: {}; nothing to push",
            change.pool_id,
            change.images_text()
        );
        false
    } else if dry_run {
        eprintln!("dry run: nothing pushed to worker pool {}", change.pool_id);
        false
    } else {
        confirm(
            yes,
            &format!(
                "Push this change to worker pool {} at {}",
                change.pool_id, change.root_url
            ),
        )?;
        push(&wm, &change).await?;
        eprintln!(
            "deployed to worker pool {}: {}{}",
            change.pool_id,
            change.images_text(),
            change
                .patched
                .deployment_id
                .as_deref()
                .map(|d| format!(" (deploymentId {d})"))
                .unwrap_or_default()
        );
        true
    };
    report["pushed"] = serde_json::Value::Bool(pushed);
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(0)
}
