//! `tc-ami deploy -w W [--image …] [--try FILE | --no-try] [--dry-run] [--yes]`: builds first
//! when no image is given, tries the images when asked to (or when W sets `try_task`), shows
//! the diff, asks, pushes, verifies.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

use crate::commands::Ctx;
use crate::commands::change::{
    Asked, Before, Change, PushTo, RecordAs, Target, check_available, copy_missing, load_history,
    prove_access, prove_before_try, refuse_without_terminal, resolve_images,
    review_and_push_with_files,
};
use crate::commands::managed::{FilePlan, FilesAsked, check_managed, read_files};
use crate::commands::try_cmd::{
    TryFirst, TryOn, check_task_file, task_to_try, try_before_push_reporting,
};
use crate::history::Kind;
use crate::image_arg::{ImageArgs, parse_image_args};
use crate::ops::deployments::HistorySecret;
use crate::pool::definition;
use crate::taskcluster::WorkerManagerApi;

/// What `deploy` was asked besides the worker type.
pub struct DeployAsked<'a> {
    /// `--image` arguments; none: build first.
    pub images: &'a [String],
    pub asked: Asked,
    pub keep_on_failure: Option<Duration>,
    pub try_first: &'a TryFirst,
    /// `--update-file` and `--managed-ok`.
    pub files: &'a FilesAsked,
}

/// What a deploy did, for `auto`'s report.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    /// The images pushed (or that would have been), region → id; empty when a dry run stopped
    /// before copying.
    pub images: BTreeMap<String, String>,
    pub pushed: bool,
    /// The pool's new deploymentId (None when nothing changed).
    pub deployment_id: Option<String>,
    /// The try's JSON document, when the images were tried.
    pub tried: Option<Value>,
}

pub async fn run(ctx: &Ctx, worker_type: &str, d: &DeployAsked<'_>) -> Result<u8> {
    deploy(ctx, worker_type, d).await.map(|_| 0)
}

/// `deploy`, returning what it did.
pub async fn deploy(ctx: &Ctx, worker_type: &str, d: &DeployAsked<'_>) -> Result<Deployed> {
    let (images, asked) = (d.images, d.asked);
    let (dry_run, keep_on_failure, try_first) = (asked.dry_run, d.keep_on_failure, d.try_first);
    let args = parse_image_args(images).map_err(|e| anyhow!(e))?;
    let t = Target::load(ctx, worker_type).await?;
    let wt = &t.wt;
    // Before anything is built: the files can be read, and a managed pool may be deployed to.
    let files = read_files(wt, d.files)?;
    check_managed(&ctx.shell, wt, &t.live, &files, d.files, !dry_run)?;
    let try_task = task_to_try(ctx, wt, try_first);
    if let Some(file) = &try_task {
        check_task_file(wt, file)?;
    }
    let store = t.history();
    let loaded = load_history(ctx, &t.env, &store).await?;
    let got = if args.is_empty() {
        build_for(ctx, &t, &store, asked, keep_on_failure).await?
    } else {
        match copy_for(ctx, &t, &store, &args, dry_run).await? {
            Some(got) => got,
            None => return Ok(Deployed::default()),
        }
    };
    let (images, live, proven) = (got.images, got.live, got.proven);
    check_available(&t.ec2, &images).await?;
    let change = Change::new(
        &wt.worker_pool_id,
        t.wm.root_url(),
        &live,
        images,
        &loaded.history,
    )?;
    let who = t.who();
    let mut to = PushTo {
        env: &t.env,
        wm: &t.wm,
        store: &store,
        loaded: &loaded,
        who: &who,
        proven,
    };
    to.proven = prove_before_try(&to, &change, try_task.is_some(), dry_run).await?;
    let on = TryOn {
        wt,
        env: &t.env,
        wm: &t.wm,
        live: &live,
        history: &loaded.history,
    };
    let (change, tried) =
        try_before_push_reporting(ctx, &on, change, try_task.as_deref(), asked).await?;
    let file_plan = FilePlan::new(&files, &change.before, &change.images)?;
    let record = RecordAs {
        kind: Kind::Deploy,
        worker_type: wt.name.clone(),
        undoes: None,
        undoes_outside_change: false,
        from: None,
    };
    let verified = review_and_push_with_files(ctx, &to, &change, record, asked, &file_plan).await?;
    if let Some(pool) = &verified {
        rollout_note(ctx, &t.wm, &wt.worker_pool_id, pool, &wt.name).await;
    }
    let pushed = verified.is_some();
    Ok(Deployed {
        deployment_id: change.patched.deployment_id.clone().filter(|_| pushed),
        images: change.images,
        pushed,
        tried,
    })
}

/// The images to push, the pool as they are compared against, and whether the scopes of the
/// push were already proven.
struct Got {
    images: BTreeMap<String, String>,
    live: Value,
    proven: bool,
}

/// Before a build or a copy, proves the scopes of the push (a dry run pushes nothing).
async fn prove(t: &Target, store: &HistorySecret<'_>, dry_run: bool) -> Result<bool> {
    if dry_run {
        return Ok(false);
    }
    let live = definition(&t.live);
    prove_access(&t.env, &t.wm, store, &live, Before::BuildOrCopy).await?;
    Ok(true)
}

/// Without `--image`: builds the images, for the pool's regions.
async fn build_for(
    ctx: &Ctx,
    t: &Target,
    store: &HistorySecret<'_>,
    asked: Asked,
    keep_on_failure: Option<Duration>,
) -> Result<Got> {
    let (wt, regions) = (&t.wt, &t.regions);
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
    if !asked.dry_run {
        refuse_without_terminal(
            asked.yes,
            &format!("build and deploy to worker pool {}", wt.worker_pool_id),
        )?;
    }
    let proven = prove(t, store, asked.dry_run).await?;
    let report = crate::commands::build::build_images(ctx, wt, keep_on_failure).await?;
    // The build took a while: compare against the pool as it is now.
    Ok(Got {
        images: report.images,
        live: t.wm.get_pool(&wt.worker_pool_id).await?,
        proven,
    })
}

/// With `--image`: the images named, copied to the pool's regions that have none. None: a dry
/// run that would copy (said so).
async fn copy_for(
    ctx: &Ctx,
    t: &Target,
    store: &HistorySecret<'_>,
    args: &ImageArgs,
    dry_run: bool,
) -> Result<Option<Got>> {
    let (wt, regions) = (&t.wt, &t.regions);
    let mut images = resolve_images(&t.ec2, wt, &wt.worker_pool_id, regions, args).await?;
    let copying = regions.iter().any(|r| !images.contains_key(r));
    let proven = if copying {
        prove(t, store, dry_run).await?
    } else {
        false
    };
    let copied = copy_missing(ctx, &t.ec2, wt, &mut images, regions, dry_run).await?;
    if dry_run && !copied.is_empty() {
        ctx.shell.note(&format!(
            "dry run: the image would first be copied to {}; nothing copied or pushed",
            copied.join(", ")
        ));
        return Ok(None);
    }
    Ok(Some(Got {
        images,
        live: t.live.clone(),
        proven,
    }))
}

/// The last line of a deploy: how far the rollout is, and the command that follows it, from the
/// pool as read back after the push (`pool`). Not being allowed to list the workers does not
/// fail a deploy that was pushed.
async fn rollout_note(ctx: &Ctx, wm: &WorkerManagerApi, pool_id: &str, pool: &Value, name: &str) {
    let look = crate::commands::rollout::look(wm, pool_id, Some(pool)).await;
    let line = crate::commands::rollout::rollout_line(&look);
    let follow = format!("`tc-ami rollout -w {name} --watch`");
    ctx.shell.note(&match look {
        Ok(_) => format!("{line}; follow it with {follow}"),
        Err(_) => format!("{line}; deployed all the same"),
    });
}
