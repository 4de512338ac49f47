//! `tc-ami cleanup [-w W] [--keep N] [--dry-run] [--yes]`: deregisters tc-ami's old images and
//! deletes their snapshots in every region, and removes what interrupted builds left.
//!
//! Reads every worker type's pool (live images and rollback targets are never deleted, whichever
//! worker type is cleaned), lists each region once, plans ([`crate::cleanup`]), shows the plan,
//! asks, then deletes, every region at once. A failure on one resource is reported and the
//! rest goes on; the exit code says whether everything planned was done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use futures::future::{join_all, try_join_all};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::build::TAG_BUILD_ID;
use crate::build::TERMINATE_WAIT;
use crate::cleanup::{
    Inventory, Item, Kind, Plan, Policy, Protected, WorkerScope, in_flight_window, plan_cleanup,
    render_plan,
};
use crate::commands::Ctx;
use crate::commands::change::confirm;
use crate::config::{WorkerType, list_worker_types, load_worker_type};
use crate::ec2::{Ec2, has_code};
use crate::interrupt::Cancel;
use crate::pool::{definition, live_images, pool_regions};
use crate::progress::Progress;
use crate::taskcluster::{SecretsApi, TcEnv, WorkerManagerApi};
use crate::wait::POLL_INTERVAL;

/// Images removed at once per region: enough to hide each call's latency, few enough to stay
/// under EC2's request rate limits (throttled calls are retried by the SDK).
const IMAGE_CONCURRENCY: usize = 8;
/// A snapshot stays "in use" for a moment after its image is deregistered.
const SNAPSHOT_IN_USE_TRIES: u32 = 30;

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
    // Every worker type is read, whichever is cleaned: their pools' images are never deleted.
    let selected_name = match worker_type {
        Some(w) => Some(load_worker_type(&ctx.config_dir, w)?.name),
        None => None,
    };
    let names = list_worker_types(&ctx.config_dir);
    if names.is_empty() {
        bail!(
            "no worker types in {}: nothing to clean up (pass -C DIR to pick another config directory)",
            ctx.config_dir.join("worker-types").display()
        );
    }
    let all: Vec<WorkerType> = names
        .iter()
        .map(|n| {
            load_worker_type(&ctx.config_dir, n).map_err(|e| {
                anyhow!("{e} (cleanup reads every worker type to know which images are live; fix the file or move it away)")
            })
        })
        .collect::<Result<_>>()?;
    let selected: Vec<&WorkerType> = all
        .iter()
        .filter(|wt| selected_name.as_ref().is_none_or(|s| *s == wt.name))
        .collect();

    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    let secrets = SecretsApi::new(&env)?;
    let ec2 = Ec2::load().await;
    let progress = Progress::new();

    // Looking changes nothing: an interrupt simply stops it.
    let looked = tokio::select! {
        r = look(&ec2, &wm, &secrets, &all, &selected, keep, &progress) => r?,
        i = ctx.cancel.cancelled() => return Err(i.into()),
    };
    let (pools, plan, regions) = looked;
    progress.finish();

    let summary = plan.summary();
    let worker_types: Vec<&str> = selected.iter().map(|w| w.name.as_str()).collect();
    if plan.items.is_empty() {
        eprintln!(
            "{}: no image or build leftover of tc-ami in {}",
            worker_types.join(", "),
            regions.join(", ")
        );
    } else {
        let table = render_plan(&plan);
        if ctx.json {
            eprint!("{table}");
        } else {
            print!("{table}");
        }
        eprintln!(
            "{}: to delete: {}; keeping {} image(s) (live, rollback targets, the {keep} newest per region, and any that may belong to a build in progress)",
            worker_types.join(", "),
            summary.deletions_text(),
            summary.images_kept
        );
    }
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

    if !summary.deletes_anything() {
        eprintln!("nothing to delete");
        report["plan"] = serde_json::to_value(&plan.items)?;
        report["complete"] = json!(true);
        print_json(ctx, &report)?;
        return Ok(0);
    }
    if dry_run {
        eprintln!("dry run: nothing deleted");
        report["plan"] = serde_json::to_value(&plan.items)?;
        print_json(ctx, &report)?;
        return Ok(0);
    }
    confirm(yes, &format!("delete {}", summary.deletions_text()))?;

    let started = Instant::now();
    let progress = Progress::new();
    let deleting_in: BTreeSet<&str> = plan.to_delete().map(|i| i.region.as_str()).collect();
    progress.stage(&format!(
        "deleting {} in {}",
        summary.deletions_text(),
        deleting_in.into_iter().collect::<Vec<_>>().join(", ")
    ));
    let results = execute(&ec2, &plan, &ctx.cancel).await;
    progress.finish();

    let mut failed = Vec::new();
    let mut skipped = 0;
    let mut items = Vec::new();
    for item in &plan.items {
        let mut v = serde_json::to_value(item)?;
        if let Some(result) = results.get(&(item.region.clone(), item.id.clone())) {
            match result {
                Ok(()) => v["result"] = json!("deleted"),
                Err(Undone::Failed(e)) => {
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
                Err(Undone::Skipped(why)) => {
                    v["result"] = json!("skipped");
                    v["error"] = json!(why);
                    skipped += 1;
                }
            }
        }
        items.push(v);
    }
    let planned = plan.to_delete().count();
    let done = results.values().filter(|r| r.is_ok()).count();
    for f in &failed {
        eprintln!("failed: {f}");
    }
    eprintln!(
        "deleted {done} of {planned} planned in {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if done == planned {
            format!(": {}", summary.deletions_text())
        } else {
            format!("; {} failed, {skipped} not started", failed.len())
        }
    );
    report["plan"] = Value::Array(items);
    report["complete"] = json!(done == planned);
    print_json(ctx, &report)?;

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

fn print_json(ctx: &Ctx, report: &Value) -> Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    }
    Ok(())
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
    let mut by_pool: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for wt in all {
        by_pool
            .entry(&wt.worker_pool_id)
            .or_default()
            .push(wt.name.clone());
    }
    try_join_all(by_pool.into_iter().map(|(pool_id, worker_types)| async move {
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
        let rollback_target = rollback_target_of(secrets, pool_id, &live)
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

/// The one place where rollback targets come from: the images of the deployment before the
/// live one, from the pool's deployment history (`crate::history`).
async fn rollback_target_of(
    secrets: &SecretsApi,
    pool_id: &str,
    live: &BTreeMap<String, String>,
) -> Result<Option<BTreeMap<String, String>>> {
    crate::history::rollback_target(secrets, pool_id, live).await
}

/// Everything in `region` the plan needs, listed with one call per kind.
async fn inventory(ec2: &Ec2, region: &str) -> Result<Inventory> {
    let (images, snapshots, instances, groups, key_pairs) = tokio::try_join!(
        ec2.list_own_images(region),
        ec2.list_own_snapshots_tagged(region, TAG_BUILD_ID),
        ec2.list_instances_tagged(region, TAG_BUILD_ID),
        ec2.list_security_groups_tagged(region, TAG_BUILD_ID),
        ec2.list_key_pairs_tagged(region, TAG_BUILD_ID),
    )?;
    let mut resources = instances;
    resources.extend(groups);
    resources.extend(key_pairs);
    resources.extend(snapshots);
    Ok(Inventory {
        region: region.to_string(),
        images,
        resources,
    })
}

/// Why a planned deletion did not happen.
enum Undone {
    Failed(String),
    /// Not started: interrupted, or something it depends on failed.
    Skipped(String),
}

type Results = BTreeMap<(String, String), Result<(), Undone>>;

/// Carries out the plan's deletions, every region at once. Never cancelled half-way: an
/// interrupt stops new deletions from starting.
async fn execute(ec2: &Ec2, plan: &Plan, cancel: &Cancel) -> Results {
    let results = Mutex::new(Results::new());
    let regions: BTreeSet<&str> = plan.to_delete().map(|i| i.region.as_str()).collect();
    join_all(regions.into_iter().map(|region| {
        let items: Vec<&Item> = plan.to_delete().filter(|i| i.region == region).collect();
        execute_region(ec2, region, items, cancel, &results)
    }))
    .await;
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

async fn execute_region(
    ec2: &Ec2,
    region: &str,
    items: Vec<&Item>,
    cancel: &Cancel,
    results: &Mutex<Results>,
) {
    let record = |item: &Item, r: Result<(), Undone>| {
        results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((region.to_string(), item.id.clone()), r);
    };
    let interrupted = || {
        cancel
            .interrupted()
            .map(|i| Undone::Skipped(format!("not started: {i}")))
    };
    let of_kind =
        |kind: Kind| -> Vec<&Item> { items.iter().copied().filter(|i| i.kind == kind).collect() };

    let images = futures::stream::iter(of_kind(Kind::Image))
        .map(|item| async move {
            let r = match interrupted() {
                Some(skip) => Err(skip),
                None => remove_image(ec2, region, item)
                    .await
                    .map_err(|e| Undone::Failed(format!("{e:#}"))),
            };
            record(item, r);
        })
        .buffer_unordered(IMAGE_CONCURRENCY)
        .collect::<Vec<()>>();

    let leftovers = async {
        // Instances first, all at once; their groups can go only once they are terminated.
        let instances = of_kind(Kind::Instance);
        let mut not_terminated: BTreeSet<String> = BTreeSet::new();
        if !instances.is_empty() {
            if let Some(skip) = interrupted() {
                for i in &instances {
                    not_terminated.insert(i.build_id.clone());
                    record(i, Err(Undone::Skipped(skip_text(&skip))));
                }
            } else {
                let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
                let outcome = terminate_and_wait(ec2, region, &ids).await;
                for i in &instances {
                    let r = match &outcome {
                        Err(e) => Err(Undone::Failed(format!("{e:#}"))),
                        Ok(left) => match left.get(&i.id) {
                            Some(state) => Err(Undone::Failed(format!(
                                "still {state} {}s after TerminateInstances",
                                TERMINATE_WAIT.as_secs()
                            ))),
                            None => Ok(()),
                        },
                    };
                    if r.is_err() {
                        not_terminated.insert(i.build_id.clone());
                    }
                    record(i, r);
                }
            }
        }
        for group in of_kind(Kind::SecurityGroup) {
            let r = if let Some(skip) = interrupted() {
                Err(skip)
            } else if not_terminated.contains(&group.build_id) {
                Err(Undone::Skipped(format!(
                    "not deleted: the instance of build {} was not terminated",
                    group.build_id
                )))
            } else {
                crate::build::delete_group_when_free(ec2, region, &group.id)
                    .await
                    .map_err(|e| Undone::Failed(format!("{e:#}")))
            };
            record(group, r);
        }
        for key in of_kind(Kind::KeyPair) {
            let r = match interrupted() {
                Some(skip) => Err(skip),
                // Deleted by name: that is how instances refer to it.
                None => ec2
                    .delete_key_pair(region, &key.name)
                    .await
                    .map_err(|e| Undone::Failed(format!("{e:#}"))),
            };
            record(key, r);
        }
        for snap in of_kind(Kind::Snapshot) {
            let r = match interrupted() {
                Some(skip) => Err(skip),
                None => delete_snapshot_when_free(ec2, region, &snap.id)
                    .await
                    .map_err(|e| Undone::Failed(format!("{e:#}"))),
            };
            record(snap, r);
        }
    };
    tokio::join!(images, leftovers);
}

fn skip_text(u: &Undone) -> String {
    match u {
        Undone::Failed(s) | Undone::Skipped(s) => s.clone(),
    }
}

/// Deregisters the image, then deletes every snapshot the plan found for it (all its block
/// devices'). An image already gone counts as deregistered.
async fn remove_image(ec2: &Ec2, region: &str, item: &Item) -> Result<()> {
    match ec2.deregister_image(region, &item.id).await {
        Ok(()) => {}
        Err(e) if has_code(&e, &["InvalidAMIID.NotFound", "InvalidAMIID.Unavailable"]) => {}
        Err(e) => return Err(e),
    }
    for snap in &item.snapshot_ids {
        delete_snapshot_when_free(ec2, region, snap)
            .await
            .with_context(|| format!("deregistered, but its snapshot {snap} remains"))?;
    }
    Ok(())
}

async fn delete_snapshot_when_free(ec2: &Ec2, region: &str, id: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        match ec2.delete_snapshot(region, id).await {
            Ok(()) => return Ok(()),
            Err(e) if has_code(&e, &["InvalidSnapshot.NotFound"]) => return Ok(()),
            // The deregistration has not reached the snapshot yet.
            Err(e) if has_code(&e, &["InvalidSnapshot.InUse"]) && tries < SNAPSHOT_IN_USE_TRIES => {
                tries += 1;
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Terminates the instances and waits until they are; returns those that are not (id → state).
async fn terminate_and_wait(
    ec2: &Ec2,
    region: &str,
    ids: &[String],
) -> Result<BTreeMap<String, String>> {
    ec2.terminate_instances(region, ids).await?;
    let deadline = Instant::now() + TERMINATE_WAIT;
    loop {
        let left: BTreeMap<String, String> = ec2
            .instance_states(region, ids)
            .await?
            .into_iter()
            .filter(|(_, state)| state != "terminated")
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
