//! `tc-ami cleanup [-w W] [--keep N] [--keep-deployments N] [--dry-run] [--yes]`: deregisters
//! tc-ami's old images and deletes their snapshots (and password secrets) in every region, and
//! removes what interrupted builds left.
//!
//! Reads what every pool needs (the pools of every worker type, and every pool the credentials
//! can list that runs one of the candidate images: every launch config's image, the rollback
//! target, the newest deployments of the history), lists each region once, plans
//! ([`crate::cleanup`]), shows the plan, asks, reads the pools again and re-plans if what they
//! need changed, then deletes ([`crate::ops::cleanup`]), every region at once. A failure on
//! one resource is reported and the rest goes on; the exit code says whether everything
//! planned was done. If what the pools need cannot be read, nothing is deleted.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow, bail};
use futures::future::try_join_all;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::cleanup::{
    Plan, Policy, PoolNeeds, Protected, SecretRemoval, WorkerScope, candidate_images,
    in_flight_window, plan_cleanup, pool_needs, render_plan,
};
use crate::commands::Ctx;
use crate::commands::change::confirm;
use crate::commands::try_cmd::cleanup_left_pools;
use crate::config::{PasswordDestination, WorkerType};
use crate::config_dir::{list_worker_types, load_worker_type};
use crate::ec2::Ec2;
use crate::interrupt::ShieldKind;
use crate::model::inventory::Inventory;
use crate::ops::cleanup::{
    Results, SecretOutcome, Undone, execute, inventory, remove_password_secrets,
};
use crate::ops::deployments::HistorySecret;
use crate::pool::definition;
use crate::shell::Progress;
use crate::taskcluster::{PoolList, SecretsApi, TcEnv, WorkerManagerApi, status_of};

/// How many times in a row the pools may change between the plan and the deletion before
/// cleanup gives up (each change is shown and re-planned).
const MAX_REPLANS: usize = 3;

/// What cleanup keeps besides what the pools run and may be building.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// The newest available images per worker type and region.
    pub images: usize,
    /// The newest deployments of each pool's history.
    pub deployments: usize,
}

pub async fn run(
    ctx: &Ctx,
    worker_type: Option<&str>,
    keep: Keep,
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
    let reader = Reader {
        wm: WorkerManagerApi::new(&env)?,
        secrets: SecretsApi::new(&env)?,
        known: known_pools(&all),
        keep_deployments: keep.deployments,
    };
    let ec2 = crate::ops::aws_credentials::ec2_for_all(&selected).await?;
    let progress = ctx.shell.progress();

    // Looking changes nothing: an interrupt drops it (commands::changing).
    let looked = look(&ec2, &reader, &selected, keep, &progress).await?;
    progress.finish();
    let Looked {
        needs,
        inventories,
        policy,
        regions,
        listing,
    } = looked;
    // Temporary pools a killed `tc-ami try` left: a step of its own, from the same listing.
    let try_pools = cleanup_left_pools(ctx, &env, &selected, &listing, dry_run, yes).await?;
    for note in &needs.notes {
        ctx.shell.warn(note);
    }
    let worker_types: Vec<&str> = selected.iter().map(|w| w.name.as_str()).collect();
    let plan = plan_cleanup(&inventories, &needs.protected(), &policy);
    show_plan(ctx, &plan, &worker_types, &regions, keep);
    let report = |needs: &Needs, plan: &Plan| {
        json!({
            "worker_types": worker_types,
            "keep": keep.images,
            "keep_deployments": keep.deployments,
            "dry_run": dry_run,
            "regions": regions,
            "pools": needs.pools,
            "summary": plan.summary(),
            "try_pools": try_pools,
        })
    };
    if !plan.summary().deletes_anything() || dry_run {
        return done_without_deleting(ctx, report(&needs, &plan), &plan, dry_run);
    }

    let candidates = candidate_images(&inventories, &policy);
    let confirmed = Confirming {
        reader: &reader,
        inventories: &inventories,
        policy: &policy,
        candidates: &candidates,
        worker_types: &worker_types,
        yes,
    };
    let (needs, plan) = confirmed.confirm(ctx, needs, plan).await?;
    if !plan.summary().deletes_anything() {
        return done_without_deleting(ctx, report(&needs, &plan), &plan, false);
    }
    // From here on, an interrupt stops new deletions from starting and lets those under way
    // finish; a second one stops at once, saying what is not deleted yet.
    let _deleting = ctx.cancel.shield(ShieldKind::Own, "the deletions");
    delete(ctx, &ec2, &reader.secrets, &plan, report(&needs, &plan)).await
}

/// Asking, and reading the pools again right before deleting.
struct Confirming<'a> {
    reader: &'a Reader,
    inventories: &'a [Inventory],
    policy: &'a Policy,
    candidates: &'a BTreeSet<String>,
    worker_types: &'a [&'a str],
    yes: bool,
}

impl Confirming<'_> {
    /// The answer may come much later: what the pools need is read again after it, right
    /// before deleting, and if that changes the plan, the new plan is shown and asked about
    /// again (with --yes, read once more and carried out). The plan to carry out (it may
    /// delete nothing after all).
    async fn confirm(&self, ctx: &Ctx, mut needs: Needs, mut plan: Plan) -> Result<(Needs, Plan)> {
        let mut replans = 0;
        loop {
            confirm(
                &ctx.shell,
                self.yes,
                &format!("delete {}", plan.summary().deletions_text()),
            )
            .await?;
            let progress = ctx.shell.progress();
            progress.stage("reading the worker pools again before deleting");
            // Reading changes nothing: an interrupt drops it (commands::changing).
            let fresh = self.reader.read(self.candidates).await?;
            progress.finish();
            let (before, after) = (needs.protected(), fresh.protected());
            needs = fresh;
            let replanned = plan_cleanup(self.inventories, &after, self.policy);
            if replanned == plan {
                return Ok((needs, plan));
            }
            replans += 1;
            let changes = before.changes(&after, self.candidates);
            show_changes(ctx, &changes, &plan, &replanned, self.worker_types);
            plan = replanned;
            if !plan.summary().deletes_anything() {
                return Ok((needs, plan));
            }
            if replans >= MAX_REPLANS {
                bail!(
                    "the worker pools changed {replans} times between the plan and the deletion, so nothing was deleted; run cleanup again when they are not being changed"
                );
            }
            if self.yes {
                ctx.shell
                    .note("going on with the new plan (--yes); reading the pools once more first");
            }
        }
    }
}

/// Nothing to delete, or a dry run: the report, exit 0.
fn done_without_deleting(ctx: &Ctx, mut report: Value, plan: &Plan, dry_run: bool) -> Result<u8> {
    let deletes = plan.summary().deletes_anything();
    ctx.shell.note(if dry_run && deletes {
        "dry run: nothing deleted"
    } else {
        "nothing to delete"
    });
    report["plan"] = serde_json::to_value(&plan.items)?;
    report["secrets"] = serde_json::to_value(&plan.secrets)?;
    if !deletes {
        report["complete"] = json!(true);
    }
    ctx.shell.json_doc(&report);
    Ok(0)
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

/// Pool id → the worker types that deploy to it.
/// Pool id → the worker types that deploy to it, and the history secret of the first of them.
fn known_pools(all: &[WorkerType]) -> BTreeMap<String, (Vec<String>, String)> {
    let mut by_pool: BTreeMap<String, (Vec<String>, String)> = BTreeMap::new();
    for wt in all {
        by_pool
            .entry(wt.worker_pool_id.clone())
            .or_insert_with(|| (Vec::new(), wt.history_secret.clone()))
            .0
            .push(wt.name.clone());
    }
    by_pool
}

/// The plan's table (stdout, or stderr with --json) and what it would delete (stderr).
fn show_plan(ctx: &Ctx, plan: &Plan, worker_types: &[&str], regions: &[String], keep: Keep) {
    if plan.items.is_empty() {
        ctx.shell.note(&format!(
            "{}: no image or build leftover of tc-ami in {}",
            worker_types.join(", "),
            regions.join(", ")
        ));
        return;
    }
    ctx.shell.document(|_| render_plan(plan));
    let summary = plan.summary();
    ctx.shell.note(&format!(
        "{}: to delete: {}; keeping {} image(s) (every pool's launch configs, rollback targets, the {} newest deployments per pool, the {} newest per region, and any that may belong to a build in progress)",
        worker_types.join(", "),
        summary.deletions_text(),
        summary.images_kept,
        keep.deployments,
        keep.images,
    ));
}

/// What changed in the pools since the plan, and what that changes in it.
fn show_changes(ctx: &Ctx, changes: &[String], old: &Plan, new: &Plan, worker_types: &[&str]) {
    ctx.shell.note(&format!(
        "the worker pools changed since the plan ({}); the new plan:",
        changes.join(", ")
    ));
    let changed = Plan {
        items: new
            .changed_since(old)
            .into_iter()
            .map(|(item, _)| item.clone())
            .collect(),
        secrets: Vec::new(),
    };
    if changed.items.is_empty() {
        ctx.shell.note("(no resource changes action)");
    } else {
        ctx.shell.document(|_| render_plan(&changed));
    }
    let summary = new.summary();
    ctx.shell.note(&format!(
        "{}: to delete now: {}; keeping {} image(s)",
        worker_types.join(", "),
        summary.deletions_text(),
        summary.images_kept
    ));
}

/// Deletes what the plan says, removes the password secrets of the images that went,
/// reports each result, and says whether all of it was done.
async fn delete(
    ctx: &Ctx,
    ec2: &Ec2,
    secrets: &SecretsApi,
    plan: &Plan,
    mut report: Value,
) -> Result<u8> {
    let summary = plan.summary();
    let started = Instant::now();
    let progress = ctx.shell.progress();
    let deleting_in: BTreeSet<&str> = plan.to_delete().map(|i| i.region.as_str()).collect();
    progress.stage(&format!(
        "deleting {} in {}",
        summary.deletions_text(),
        deleting_in.into_iter().collect::<Vec<_>>().join(", ")
    ));
    let results = execute(ec2, plan, &ctx.cancel).await;
    let secret_outcomes = remove_password_secrets(secrets, plan, &results).await;
    progress.finish();

    let (items, failed, skipped) = outcome(plan, &results)?;
    let secret_report = report_secrets(ctx, &secrets.env().lacking(), &secret_outcomes)?;
    let mut done_summary = summary.clone();
    done_summary.password_secrets = secret_outcomes
        .iter()
        .filter(|(_, o)| *o == SecretOutcome::Removed)
        .count();

    let planned = plan.to_delete().count();
    let done = results.values().filter(|r| r.is_ok()).count();
    for f in &failed {
        ctx.shell.note(&format!("failed: {f}"));
    }
    ctx.shell.note(&format!(
        "deleted {done} of {planned} planned in {:.1}s{}",
        started.elapsed().as_secs_f64(),
        if done == planned {
            format!(": {}", done_summary.deletions_text())
        } else {
            format!("; {} failed, {skipped} not started", failed.len())
        }
    ));
    report["plan"] = Value::Array(items);
    report["secrets"] = Value::Array(secret_report);
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

/// The password secrets' outcomes as JSON, with a warning for each one left.
fn report_secrets(
    ctx: &Ctx,
    lacking: &str,
    secret_outcomes: &[(&SecretRemoval, SecretOutcome)],
) -> Result<Vec<Value>> {
    let mut secret_report = Vec::new();
    for (s, outcome) in secret_outcomes {
        let mut v = serde_json::to_value(s)?;
        v["result"] = json!(outcome.label());
        match outcome {
            SecretOutcome::NotAllowed => ctx.shell.warn(&format!(
                "the password secret {} of deregistered image {} was not removed: {lacking} the scope secrets:set:{} (403); remove it by hand, or grant the scope",
                s.name,
                s.name.rsplit('/').next().unwrap_or_default(),
                s.name
            )),
            SecretOutcome::Failed(e) => {
                v["error"] = json!(e);
                ctx.shell.warn(&format!(
                    "the password secret {} was not removed: {e}; remove it by hand",
                    s.name
                ));
            }
            _ => {}
        }
        secret_report.push(v);
    }
    Ok(secret_report)
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

/// What the pools need, as read once.
struct Needs {
    pools: Vec<PoolNeeds>,
    /// One line each: what could not be read and is therefore not protected (listing not
    /// allowed, a listed pool's history not readable).
    notes: Vec<String>,
}

impl Needs {
    fn protected(&self) -> Protected {
        Protected::from_pools(&self.pools)
    }
}

/// Reads what the pools need. Any failure but a missing scope where one is optional stops
/// the cleanup: without it, nothing can be deleted safely.
struct Reader {
    wm: WorkerManagerApi,
    secrets: SecretsApi,
    /// Pool id → the worker types that deploy to it, and its history secret.
    known: BTreeMap<String, (Vec<String>, String)>,
    keep_deployments: usize,
}

impl Reader {
    /// Everything, in order: the worker types' pools, the listing, the listed pools that run
    /// one of `candidates` (with their histories).
    async fn read(&self, candidates: &BTreeSet<String>) -> Result<Needs> {
        let mut pools = self.known_pools().await?;
        let listing = self.list().await?;
        let (listed, notes) = self.listed_pools(&listing, candidates).await?;
        pools.extend(listed);
        Ok(Needs { pools, notes })
    }

    /// The pools of the worker types, with their histories.
    async fn known_pools(&self) -> Result<Vec<PoolNeeds>> {
        try_join_all(self.known.iter().map(|(pool_id, (worker_types, history_secret))| async move {
            let unsafe_to_go_on = || {
                format!(
                    "cannot tell which images worker pool {pool_id} needs (worker type {}), so nothing was deleted",
                    worker_types.join(", ")
                )
            };
            let live = self
                .wm
                .get_pool(pool_id)
                .await
                .with_context(unsafe_to_go_on)?;
            let history = HistorySecret::new(&self.secrets, pool_id, history_secret)
                .load()
                .await
                .with_context(unsafe_to_go_on)?
                .history;
            Ok(pool_needs(
                pool_id,
                worker_types.clone(),
                &definition(&live),
                Some(&history),
                self.keep_deployments,
            ))
        }))
        .await
    }

    async fn list(&self) -> Result<PoolList> {
        self.wm.list_pools().await.with_context(|| {
            format!(
                "cannot tell which images the worker pools listed at {} need, so nothing was deleted",
                self.wm.root_url()
            )
        })
    }

    /// The listed pools that no worker type describes and that run one of `candidates`, with
    /// their histories where the client may read them; and what could not be read.
    async fn listed_pools(
        &self,
        listing: &PoolList,
        candidates: &BTreeSet<String>,
    ) -> Result<(Vec<PoolNeeds>, Vec<String>)> {
        let listed = match listing {
            PoolList::Pools(pools) => pools,
            PoolList::NotAllowed(_) => {
                return Ok((
                    Vec::new(),
                    vec![format!(
                        "{} the scope worker-manager:list-worker-pools (403), so only the pools of worker-types/ protect images; a pool no worker type describes is not protected, and temporary pools left by tc-ami try are not looked for",
                        self.wm.env().lacking()
                    )],
                ));
            }
        };
        let running: Vec<(&str, Value)> = listed
            .iter()
            .filter_map(|p| {
                let id = p["workerPoolId"].as_str()?;
                (!self.known.contains_key(id)).then(|| (id, definition(p)))
            })
            .filter(|(id, def)| pool_needs(id, Vec::new(), def, None, 0).names_any(candidates))
            .collect();
        let read = try_join_all(running.iter().map(|(pool_id, def)| async move {
            // A pool no worker type describes: its history is where tc-ami puts it by default.
            let Some(name) = crate::config::default_history_secret(pool_id) else {
                return Ok((
                    pool_needs(pool_id, Vec::new(), def, None, self.keep_deployments),
                    None,
                ));
            };
            let store = HistorySecret::new(&self.secrets, pool_id, &name);
            match store.load().await.map(|l| l.history) {
                Ok(history) => Ok((
                    pool_needs(pool_id, Vec::new(), def, Some(&history), self.keep_deployments),
                    None,
                )),
                Err(e) if status_of(&e) == Some(403) => Ok((
                    pool_needs(pool_id, Vec::new(), def, None, self.keep_deployments),
                    Some(format!(
                        "the deployment history of worker pool {pool_id} (it runs a tc-ami image) cannot be read (403: it needs the scope secrets:get:{name}), so only its launch configs protect images"
                    )),
                )),
                Err(e) => Err(e.context(format!(
                    "cannot tell which images worker pool {pool_id} needs (it runs a tc-ami image), so nothing was deleted"
                ))),
            }
        }))
        .await?;
        let mut pools = Vec::new();
        let mut notes = Vec::new();
        for (needs, note) in read {
            pools.push(needs);
            notes.extend(note);
        }
        Ok((pools, notes))
    }
}

struct Looked {
    needs: Needs,
    inventories: Vec<Inventory>,
    policy: Policy,
    regions: Vec<String>,
    /// Every worker pool the client may list.
    listing: PoolList,
}

/// Reads the pools and lists every region: what the plan is made of.
async fn look(
    ec2: &Ec2,
    reader: &Reader,
    selected: &[&WorkerType],
    keep: Keep,
    progress: &Progress,
) -> Result<Looked> {
    progress.stage(&format!(
        "reading the worker pools {}",
        reader
            .known
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut pools = reader.known_pools().await?;
    progress.stage("listing every worker pool");
    let listing = reader.list().await?;

    let scopes: BTreeMap<String, WorkerScope> = selected
        .iter()
        .map(|wt| {
            let mut regions: BTreeSet<String> = wt.all_regions().into_iter().collect();
            for p in pools.iter().filter(|p| p.worker_types.contains(&wt.name)) {
                regions.extend(p.regions.iter().cloned());
            }
            let password_secret_prefix = match &wt.password {
                PasswordDestination::Secret { prefix, .. } => Some(prefix.clone()),
                PasswordDestination::Print => None,
            };
            (
                wt.name.clone(),
                WorkerScope {
                    worker_type: wt.name.clone(),
                    regions,
                    window: in_flight_window(wt),
                    password_secret_prefix,
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
        keep: keep.images,
        keep_deployments: keep.deployments,
        now: chrono::Utc::now(),
        scopes,
    };
    let candidates = candidate_images(&inventories, &policy);
    let (listed, notes) = reader.listed_pools(&listing, &candidates).await?;
    pools.extend(listed);
    Ok(Looked {
        needs: Needs { pools, notes },
        inventories,
        policy,
        regions,
        listing,
    })
}
