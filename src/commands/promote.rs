//! `tc-ami promote --from W1 --to W2 [--try FILE | --no-try] [--dry-run] [--yes]`: deploys W1's
//! live images to W2 (staging to production), copying first to any region W2 has and W1 lacks,
//! and trying them on a temporary copy of W2's pool first when asked to (or when W2 sets
//! `try_task`).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde_json::Value;

use crate::commands::Ctx;
use crate::commands::change::{
    Asked, Before, Change, PushTo, RecordAs, check_available, copy_missing, load_history,
    prove_access, prove_before_try, review_and_push,
};
use crate::commands::try_cmd::{TryFirst, TryOn, check_task_file, task_to_try, try_before_push};
use crate::config::WorkerType;
use crate::config_dir::load_worker_type;
use crate::history::Kind;
use crate::ops::deployments::HistorySecret;
use crate::pool::{definition, live_images, pool_regions};
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};

/// The source's images in the target's `regions` (the others are copied there); with no region
/// in common, the source's build-region image, to be copied.
fn source_images(
    source: &WorkerType,
    source_live: &Value,
    regions: &[String],
) -> BTreeMap<String, String> {
    let mut images = live_images(source_live);
    images.retain(|r, _| regions.contains(r));
    if images.is_empty() {
        let all = live_images(source_live);
        if let Some((r, i)) = all
            .get_key_value(&source.build_region)
            .or_else(|| all.iter().next())
        {
            images.insert(r.clone(), i.clone());
        }
    }
    images
}

/// The source and target worker types, which must deploy to different pools.
fn worker_types(ctx: &Ctx, from: &str, to: &str) -> Result<(WorkerType, WorkerType)> {
    let source = load_worker_type(&ctx.config_dir, from)?;
    let target = load_worker_type(&ctx.config_dir, to)?;
    if source.worker_pool_id == target.worker_pool_id {
        bail!(
            "--from {from} and --to {to} are the same worker pool {}; promote goes from one pool to another",
            source.worker_pool_id
        );
    }
    Ok((source, target))
}

pub async fn run(
    ctx: &Ctx,
    from: &str,
    to: &str,
    dry_run: bool,
    yes: bool,
    try_first: &TryFirst,
) -> Result<u8> {
    let (source, target) = worker_types(ctx, from, to)?;
    let try_task = task_to_try(ctx, &target, try_first);
    if let Some(file) = &try_task {
        check_task_file(&target, file)?;
    }
    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    let secrets = SecretsApi::new(&env)?;
    let source_live = definition(&wm.get_pool(&source.worker_pool_id).await?);
    pool_regions(&source.worker_pool_id, &source_live)?;
    let live = wm.get_pool(&target.worker_pool_id).await?;
    let regions = pool_regions(&target.worker_pool_id, &definition(&live))?;
    let store = HistorySecret::new(&secrets, &target.worker_pool_id, &target.history_secret);
    let loaded = load_history(ctx, &env, &store).await?;

    let mut images = source_images(&source, &source_live, &regions);
    // The images go into the target's pool and regions: its AWS credentials.
    let ec2 = crate::ops::aws_credentials::ec2_for(&target).await?;
    check_available(&ec2, &images).await?;
    // Before copying, prove the scopes of the push (a dry run pushes nothing).
    let proven = !dry_run && regions.iter().any(|r| !images.contains_key(r));
    if proven {
        prove_access(&env, &wm, &store, &definition(&live), Before::BuildOrCopy).await?;
    }
    let copied = copy_missing(ctx, &ec2, &target, &mut images, &regions, dry_run).await?;
    if dry_run && !copied.is_empty() {
        ctx.shell.note(&format!(
            "dry run: {}'s images would first be copied to {}; nothing copied or pushed",
            source.name,
            copied.join(", ")
        ));
        return Ok(0);
    }
    images.retain(|r, _| regions.contains(r));
    let change = Change::new(
        &target.worker_pool_id,
        wm.root_url(),
        &live,
        images,
        &loaded.history,
    )?;
    let who = env.identity();
    let mut to = PushTo {
        env: &env,
        wm: &wm,
        store: &store,
        loaded: &loaded,
        who: &who,
        proven,
    };
    to.proven = prove_before_try(&to, &change, try_task.is_some(), dry_run).await?;
    let on = TryOn {
        wt: &target,
        env: &env,
        wm: &wm,
        live: &live,
        history: &loaded.history,
    };
    let asked = Asked { dry_run, yes };
    let change = try_before_push(ctx, &on, change, try_task.as_deref(), asked).await?;
    let record = RecordAs {
        kind: Kind::Promote,
        worker_type: target.name.clone(),
        undoes: None,
        undoes_outside_change: false,
        from: Some(source.name.clone()),
    };
    review_and_push(ctx, &to, &change, record, asked).await?;
    Ok(0)
}
