//! `tc-ami deploy -w W [--image …] [--dry-run] [--yes] [--keep-on-failure[=TTL]] [--managed-ok]
//! [--update-file PATH …]`:
//! builds first when no image is given, shows the diff, asks, pushes, verifies, and updates the
//! files that declare the pool's image ids.

use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use crate::commands::Ctx;
use crate::commands::change::{
    Asked, Change, PushTo, RecordAs, Target, check_available, copy_missing,
    refuse_without_terminal, resolve_images, review_and_push_with_files,
};
use crate::commands::managed::{FilePlan, FilesAsked, check_managed, read_files};
use crate::history::Kind;
use crate::image_arg::parse_image_args;
use crate::taskcluster::{SecretsApi, WorkerManagerApi};

pub async fn run(
    ctx: &Ctx,
    worker_type: &str,
    images: &[String],
    dry_run: bool,
    yes: bool,
    keep_on_failure: Option<Duration>,
    files_asked: &FilesAsked,
) -> Result<u8> {
    let args = parse_image_args(images).map_err(|e| anyhow!(e))?;
    let t = Target::load(ctx, worker_type).await?;
    let (wt, regions) = (&t.wt, &t.regions);
    // Before anything is built: the files can be read, and a managed pool may be deployed to.
    let files = read_files(wt, files_asked)?;
    check_managed(&ctx.shell, wt, &t.live, &files, files_asked, !dry_run)?;

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
        let report = crate::commands::build::build_images(ctx, wt, keep_on_failure).await?;
        // The build took a while: compare against the pool as it is now.
        (report.images, t.wm.get_pool(&wt.worker_pool_id).await?)
    } else {
        let mut images = resolve_images(&t.ec2, wt, &wt.worker_pool_id, regions, &args).await?;
        let copied = copy_missing(ctx, &t.ec2, wt, &mut images, regions, dry_run).await?;
        if dry_run && !copied.is_empty() {
            ctx.shell.note(&format!(
                "dry run: the image would first be copied to {}; nothing copied or pushed",
                copied.join(", ")
            ));
            return Ok(0);
        }
        (images, t.live.clone())
    };
    check_available(&t.ec2, &images).await?;
    let change = Change::new(&wt.worker_pool_id, t.wm.root_url(), &live, images)?;
    let file_plan = FilePlan::new(&files, &change.before, &change.images)?;
    let record = RecordAs {
        kind: Kind::Deploy,
        worker_type: wt.name.clone(),
        undoes: None,
        undoes_outside_change: false,
        from: None,
    };
    let secrets = SecretsApi::new(&t.env)?;
    let to = PushTo {
        wm: &t.wm,
        secrets: &secrets,
        who: &t.who(),
    };
    let asked = Asked { dry_run, yes };
    let pushed =
        review_and_push_with_files(ctx, &to, &change, None, record, asked, &file_plan).await?;
    if pushed {
        rollout_note(ctx, &t.wm, &wt.worker_pool_id, &wt.name).await;
    }
    Ok(0)
}

/// The last line of a deploy: how far the rollout is, and the command that follows it. Not
/// being allowed to list the workers does not fail a deploy that was pushed.
async fn rollout_note(ctx: &Ctx, wm: &WorkerManagerApi, pool_id: &str, name: &str) {
    let look = crate::commands::rollout::look(wm, pool_id, None).await;
    let line = crate::commands::rollout::rollout_line(&look);
    let follow = format!("`tc-ami rollout -w {name} --watch`");
    ctx.shell.note(&match look {
        Ok(_) => format!("{line}; follow it with {follow}"),
        Err(_) => format!("{line}; deployed all the same"),
    });
}
