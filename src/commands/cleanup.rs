//! `tc-ami cleanup [-w W] [--keep N] [--dry-run] [--yes]`: deregisters tc-ami's old images and
//! deletes their snapshots in every region, and removes what interrupted builds left.
//!
//! Reads every worker type's pool (live images and rollback targets are never deleted, whichever
//! worker type is cleaned), lists each region once, plans ([`crate::cleanup`]), shows the plan,
//! asks, then deletes ([`crate::ops::cleanup`]), every region at once. A failure on one
//! resource is reported and the rest goes on; the exit code says whether everything planned
//! was done.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow, bail};
use futures::future::try_join_all;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cleanup::{
    Plan, Policy, Protected, Summary, WorkerScope, in_flight_window, plan_cleanup, render_plan,
};
use crate::commands::Ctx;
use crate::commands::change::confirm;
use crate::config::WorkerType;
use crate::config_dir::{list_worker_types, load_worker_type};
use crate::ec2::Ec2;
use crate::ops::cleanup::{Results, Undone, execute, inventory};
use crate::ops::deployments::{self, HistorySecret};
use crate::pool::{definition, live_images, pool_regions};
use crate::shell::Progress;
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};

/// One worker pool that a worker type in the config directory deploys to.
struct PoolImages {
    pool_id: String,
    worker_types: Vec<String>,
    regions: BTreeSet<String>,
    live: BTreeMap<String, String>,
    rollback_target: Option<BTreeMap<String, String>>,
}

pub async fn run(
    ctx: &Ctx,
    worker_type: Option<&str>,
    keep: usize,
    dry_run: bool,
    yes: bool,
) -> Result<u8> {
    let selected_name = match worker_type {
        Some(w) => Some(load_worker_type(&ctx.config_dir, w)?.name),
        None => None,
    };
    // Every worker type is read, whichever is cleaned: their pools' images are never deleted.
    let all = all_worker_types(ctx)?;
    let selected: Vec<&WorkerType> = all
        .iter()
        .filter(|wt| selected_name.as_ref().is_none_or(|s| *s == wt.name))
        .collect();
    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    let secrets = SecretsApi::new(&env)?;
    let ec2 = Ec2::load().await;
    let progress = ctx.shell.progress();

    // Looking changes nothing: an interrupt simply stops it.
    let looked = tokio::select! {
        r = look(&ec2, &wm, &secrets, &all, &selected, keep, &progress) => r?,
        i = ctx.cancel.cancelled() => return Err(i.into()),
    };
    progress.finish();
    let (pools, plan, regions) = looked;
    let worker_types: Vec<&str> = selected.iter().map(|w| w.name.as_str()).collect();
    let summary = plan.summary();
    show_plan(ctx, &plan, &summary, &worker_types, &regions, keep);
    let mut report = json!({
        "worker_types": worker_types,
        "keep": keep,
        "dry_run": dry_run,
        "regions": regions,
        "pools": pools.iter().map(|p| json!({
            "workerPoolId": p.pool_id,
            "worker_types": p.worker_types,
            "live": p.live,
            "rollback_target": p.rollback_target,
        })).collect::<Vec<_>>(),
        "summary": summary,
    });
    if !summary.deletes_anything() || dry_run {
        ctx.shell.note(if dry_run && summary.deletes_anything() {
            "dry run: nothing deleted"
        } else {
            "nothing to delete"
        });
        report["plan"] = serde_json::to_value(&plan.items)?;
        if !summary.deletes_anything() {
            report["complete"] = json!(true);
        }
        ctx.shell.json_doc(&report);
        return Ok(0);
    }
    confirm(
        &ctx.shell,
        yes,
        &format!("delete {}", summary.deletions_text()),
    )?;
    delete(ctx, &ec2, &plan, &summary, report).await
}

/// Every worker type of the config directory: cleanup must know all their pools.
fn all_worker_types(ctx: &Ctx) -> Result<Vec<WorkerType>> {
    let names = list_worker_types(&ctx.config_dir);
    if names.is_empty() {
        bail!(
            "no worker types in {}: nothing to clean up (pass -C DIR to pick another config directory)",
            ctx.config_dir.join("worker-types").display()
        );
    }
    names
        .iter()
        .map(|n| {
            load_worker_type(&ctx.config_dir, n).map_err(|e| {
                anyhow!("{e} (cleanup reads every worker type to know which images are live; fix the file or move it away)")
            })
        })
        .collect()
}

/// The plan's table (stdout, or stderr with --json) and what it would delete (stderr).
fn show_plan(
    ctx: &Ctx,
    plan: &Plan,
    summary: &Summary,
    worker_types: &[&str],
    regions: &[String],
    keep: usize,
) {
    if plan.items.is_empty() {
        ctx.shell.note(&format!(
            "{}: no image or build leftover of tc-ami in {}",
            worker_types.join(", "),
            regions.join(", ")
        ));
        return;
    }
    ctx.shell.document(|_| render_plan(plan));
    ctx.shell.note(&format!(
        "{}: to delete: {}; keeping {} image(s) (live, rollback targets, the {keep} newest per region, and any that may belong to a build in progress)",
        worker_types.join(", "),
        summary.deletions_text(),
        summary.images_kept
    ));
}

/// Deletes what the plan says, reports each result, and says whether all of it was done.
async fn delete(
    ctx: &Ctx,
    ec2: &Ec2,
    plan: &Plan,
    summary: &Summary,
    mut report: Value,
) -> Result<u8> {
    let started = Instant::now();
    let progress = ctx.shell.progress();
    let deleting_in: BTreeSet<&str> = plan.to_delete().map(|i| i.region.as_str()).collect();
    progress.stage(&format!(
        "deleting {} in {}",
        summary.deletions_text(),
        deleting_in.into_iter().collect::<Vec<_>>().join(", ")
    ));
    let results = execute(ec2, plan, &ctx.cancel).await;
    progress.finish();

    let (items, failed, skipped) = outcome(plan, &results)?;
    let planned = plan.to_delete().count();
    let done = results.values().filter(|r| r.is_ok()).count();
    for f in &failed {
        ctx.shell.note(&format!("failed: {f}"));
    }
    ctx.shell.note(&format!(
        "deleted {done} of {planned} planned in {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if done == planned {
            format!(": {}", summary.deletions_text())
        } else {
            format!("; {} failed, {skipped} not started", failed.len())
        }
    ));
    report["plan"] = Value::Array(items);
    report["complete"] = json!(done == planned);
    ctx.shell.json_doc(&report);

    if let Some(i) = ctx.cancel.interrupted() {
        return Err(anyhow::Error::new(i).context(format!(
            "cleanup stopped after {done} of {planned} deletions; run it again to finish"
        )));
    }
    if !failed.is_empty() {
        bail!(
            "cleanup incomplete: {} of {planned} deletions failed (listed above; the first: {}); fix the cause and run it again",
            failed.len(),
            failed[0]
        );
    }
    Ok(0)
}

/// The plan's items with their results (JSON), the failures (one line each), and how many
/// were not started.
fn outcome(plan: &Plan, results: &Results) -> Result<(Vec<Value>, Vec<String>, usize)> {
    let mut failed = Vec::new();
    let mut skipped = 0;
    let mut items = Vec::new();
    for item in &plan.items {
        let mut v = serde_json::to_value(item)?;
        match results.get(&(item.region.clone(), item.id.clone())) {
            Some(Ok(())) => v["result"] = json!("deleted"),
            Some(Err(Undone::Failed(e))) => {
                v["result"] = json!("failed");
                v["error"] = json!(e);
                failed.push(format!(
                    "{} {} {} ({}): {e}",
                    item.region,
                    item.kind.label(),
                    item.id,
                    item.name
                ));
            }
            Some(Err(Undone::Skipped(why))) => {
                v["result"] = json!("skipped");
                v["error"] = json!(why);
                skipped += 1;
            }
            None => {}
        }
        items.push(v);
    }
    Ok((items, failed, skipped))
}

type Looked = (Vec<PoolImages>, Plan, Vec<String>);

/// Reads the pools and lists every region: the plan, and what went into it.
async fn look(
    ec2: &Ec2,
    wm: &WorkerManagerApi,
    secrets: &SecretsApi,
    all: &[WorkerType],
    selected: &[&WorkerType],
    keep: usize,
    progress: &Progress,
) -> Result<Looked> {
    progress.stage(&format!(
        "reading the worker pools of {}",
        all.iter()
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let pools = pool_images(wm, secrets, all).await?;
    let mut protected = Protected::default();
    for p in &pools {
        protected.add_live(&p.pool_id, &p.live);
        if let Some(target) = &p.rollback_target {
            protected.add_rollback_target(&p.pool_id, target);
        }
    }

    let scopes: BTreeMap<String, WorkerScope> = selected
        .iter()
        .map(|wt| {
            let mut regions: BTreeSet<String> = wt.all_regions().into_iter().collect();
            for p in pools.iter().filter(|p| p.worker_types.contains(&wt.name)) {
                regions.extend(p.regions.iter().cloned());
            }
            (
                wt.name.clone(),
                WorkerScope {
                    worker_type: wt.name.clone(),
                    regions,
                    window: in_flight_window(wt),
                },
            )
        })
        .collect();
    let regions: Vec<String> = scopes
        .values()
        .flat_map(|s| s.regions.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    progress.stage(&format!(
        "listing images and build resources in {}",
        regions.join(", ")
    ));
    let inventories = try_join_all(regions.iter().map(|r| inventory(ec2, r))).await?;
    let policy = Policy {
        keep,
        now: chrono::Utc::now(),
        scopes,
    };
    Ok((
        pools,
        plan_cleanup(&inventories, &protected, &policy),
        regions,
    ))
}

/// The live images and the rollback target of every pool a worker type deploys to. Any error
/// stops the cleanup: without them, nothing can be deleted safely.
async fn pool_images(
    wm: &WorkerManagerApi,
    secrets: &SecretsApi,
    all: &[WorkerType],
) -> Result<Vec<PoolImages>> {
    // Per pool: its worker types, and the history secret of the first of them.
    let mut by_pool: BTreeMap<&str, (Vec<String>, &str)> = BTreeMap::new();
    for wt in all {
        by_pool
            .entry(&wt.worker_pool_id)
            .or_insert_with(|| (vec![], &wt.history_secret))
            .0
            .push(wt.name.clone());
    }
    try_join_all(by_pool.into_iter().map(|(pool_id, (worker_types, history_secret))| async move {
        let unsafe_to_go_on = || {
            format!("cannot tell which images worker pool {pool_id} needs (worker type {}), so nothing was deleted", worker_types.join(", "))
        };
        let live_pool = wm.get_pool(pool_id).await.with_context(unsafe_to_go_on)?;
        let def = definition(&live_pool);
        let live = live_images(&def);
        let mut regions: BTreeSet<String> = pool_regions(pool_id, &def)
            .unwrap_or_default()
            .into_iter()
            .collect();
        regions.extend(live.keys().cloned());
        // The one place where rollback targets come from: the pool's deployment history.
        let store = HistorySecret::new(secrets, pool_id, history_secret);
        let rollback_target = deployments::rollback_target(&store, &live)
            .await
            .with_context(unsafe_to_go_on)?;
        Ok(PoolImages {
            pool_id: pool_id.to_string(),
            worker_types,
            regions,
            live,
            rollback_target,
        })
    }))
    .await
}
