//! `tc-ami rollout -w W [--watch]` and `tc-ami rollout -w W --retire [--idle-only] [--dry-run]
//! [--yes]`: which workers of the pool still run an old image (a worker of an archived launch
//! config), following them until they are gone, and retiring them.
//!
//! The grouping, the progress line and the retirement plan are [`crate::rollout`]'s; this file
//! fetches (the pool, its launch configs archived ones included, its workers; with
//! `--idle-only` the Queue's workers and the state of their latest task runs), prints, asks and
//! removes in batches.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::join_all;
use serde_json::{Value, json};

use crate::commands::Ctx;
use crate::commands::change::confirm;
use crate::config_dir::load_worker_type;
use crate::rollout::{
    LaunchConfigIndex, QueueWorker, RetireOptions, Retirement, Rollout, RunState, TaskRun, Worker,
    WorkerRef, plan_retirement, render_retirement, render_rollout, rollout_status,
};
use crate::taskcluster::{QueueApi, TcEnv, WorkerManagerApi};

/// How often `--watch` looks again. A real pool's workers notice a new deployment every
/// `checkForNewDeploymentEverySecs` (30 minutes by default); one listing per 1,000 workers
/// every 5 s costs the service little.
pub const WATCH_EVERY: Duration = Duration::from_secs(5);

/// How many `removeWorker` calls go out at once; an interrupt stops between batches.
pub const BATCH_SIZE: NonZeroUsize = NonZeroUsize::new(10).unwrap();

/// How many task statuses are read at once for `--idle-only`.
const STATUS_READS_AT_ONCE: usize = 8;

/// What the command line asked for.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub watch: bool,
    pub retire: bool,
    pub idle_only: bool,
    pub dry_run: bool,
    pub yes: bool,
}

/// One look at a pool: its launch configs and workers, grouped.
pub struct Look {
    pub index: LaunchConfigIndex,
    pub workers: Vec<Worker>,
    pub rollout: Rollout,
    pub at: DateTime<Utc>,
}

/// Fetches the pool's launch configs (archived ones too) and workers; `pool` is the pool as
/// `workerPool` returned it, fetched here when not given.
pub async fn look(wm: &WorkerManagerApi, pool_id: &str, pool: Option<&Value>) -> Result<Look> {
    let fetched;
    let pool = match pool {
        Some(p) => p,
        None => {
            fetched = wm.get_pool(pool_id).await?;
            &fetched
        }
    };
    let (records, workers) =
        tokio::try_join!(wm.launch_configs(pool_id), wm.list_workers(pool_id))?;
    let index = LaunchConfigIndex::new(pool, &records);
    let at = Utc::now();
    let rollout = rollout_status(&index, &workers, at);
    Ok(Look {
        index,
        workers,
        rollout,
        at,
    })
}

/// The line `status` and `deploy` show: `rollout: 3 of 7 workers on the new image; …`, or why
/// it cannot be told.
pub fn rollout_line(look: &Result<Look>) -> String {
    match look {
        Ok(l) => format!("rollout: {}", l.rollout.progress()),
        Err(e) => format!("rollout: unknown ({e:#})"),
    }
}

/// The JSON of a look, for `--json` documents.
pub fn look_json(look: &Look) -> Value {
    json!({
        "at": look.at,
        "progress": look.rollout.progress(),
        "done": look.rollout.done(),
        "launchConfigs": look.rollout.groups,
    })
}

pub async fn run(ctx: &Ctx, worker_type: &str, asked: Asked) -> Result<u8> {
    let wt = load_worker_type(&ctx.config_dir, worker_type)?;
    let env = TcEnv::from_env(true)?;
    let wm = WorkerManagerApi::new(&env)?;
    let pool_id = wt.worker_pool_id.as_str();
    if asked.retire {
        return retire(ctx, &env, &wm, pool_id, asked).await;
    }
    let look = interruptible(ctx, look(&wm, pool_id, None)).await?;
    if !asked.watch || look.rollout.done() {
        show(ctx, &wm, pool_id, &look);
        return Ok(0);
    }
    watch(ctx, &wm, pool_id, &wt.name, look).await
}

/// Runs `f` unless an interrupt comes first (it changes nothing, so it simply stops).
async fn interruptible<T>(ctx: &Ctx, f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        r = f => r,
        i = ctx.cancel.cancelled() => Err(i.into()),
    }
}

/// The result: the table and the progress line on stdout, or the JSON document.
fn show(ctx: &Ctx, wm: &WorkerManagerApi, pool_id: &str, look: &Look) {
    let human = format!(
        "worker pool {pool_id} at {}\n{}{}",
        wm.root_url(),
        render_rollout(&look.rollout),
        look.rollout.progress()
    );
    let mut doc = look_json(look);
    doc["workerPoolId"] = json!(pool_id);
    doc["rootUrl"] = json!(wm.root_url());
    ctx.shell.result(&human, &doc);
}

/// Looks again every [`WATCH_EVERY`] until no worker of an archived launch config is left
/// (exit 0), with a bar of the workers on current launch configs; Ctrl-C stops it (130).
async fn watch(
    ctx: &Ctx,
    wm: &WorkerManagerApi,
    pool_id: &str,
    name: &str,
    mut look: Look,
) -> Result<u8> {
    let bar = ctx.shell.bar();
    loop {
        let p = look.rollout.progress();
        bar.update(p.on_current as u64, p.total as u64, &p.to_string());
        if p.done {
            break;
        }
        let next = async {
            tokio::time::sleep(WATCH_EVERY).await;
            self::look(wm, pool_id, None).await
        };
        look = interruptible(ctx, next).await.with_context(|| {
            format!("stopped watching worker pool {pool_id}: {p}; `tc-ami rollout -w {name} --watch` follows it again")
        })?;
    }
    bar.finish();
    show(ctx, wm, pool_id, &look);
    Ok(0)
}

/// `--retire`: plans, shows the plan, asks, removes in batches.
async fn retire(
    ctx: &Ctx,
    env: &TcEnv,
    wm: &WorkerManagerApi,
    pool_id: &str,
    asked: Asked,
) -> Result<u8> {
    let queue = match asked.idle_only {
        true => Some(QueueApi::new(env)?),
        false => None,
    };
    let look = interruptible(ctx, look(wm, pool_id, None)).await?;
    let plan = interruptible(ctx, plan(&look, queue.as_ref(), pool_id, asked.idle_only)).await?;
    let shown = render_retirement(&plan, &look.workers, look.at);
    ctx.shell.document(|_| shown.clone());
    let mut report = json!({
        "workerPoolId": pool_id,
        "rootUrl": wm.root_url(),
        "idle_only": asked.idle_only,
        "dry_run": asked.dry_run,
        "plan": plan,
    });
    let n = plan.to_remove();
    if n == 0 {
        ctx.shell.note(&format!(
            "nothing to retire in worker pool {pool_id}: no worker of an archived launch config{}",
            if asked.idle_only {
                " is idle"
            } else {
                " is left"
            }
        ));
    } else if asked.dry_run {
        ctx.shell.note(&format!(
            "dry run: {n} {} would be removed from worker pool {pool_id}; nothing removed",
            workers(n)
        ));
    } else {
        let question = format!(
            "remove these {n} {} of archived launch configs from worker pool {pool_id} at {}",
            workers(n),
            wm.root_url()
        );
        // Not run under commands::changing: Ctrl-C at the prompt is watched here.
        tokio::select! {
            r = confirm(&ctx.shell, asked.yes, &question) => r?,
            i = ctx.cancel.cancelled() => return Err(i.into()),
        }
        let removal = Removal {
            wm,
            queue: queue.as_ref(),
            pool_id,
            look: &look,
        };
        let outcome = removal.run(ctx, &plan).await;
        return finish(ctx, &mut report, outcome);
    }
    ctx.shell.json_doc(&report);
    Ok(0)
}

fn workers(n: usize) -> &'static str {
    if n == 1 { "worker" } else { "workers" }
}

fn options(idle_only: bool) -> RetireOptions {
    RetireOptions {
        idle_only,
        batch_size: BATCH_SIZE,
    }
}

/// The retirement plan; with `idle_only`, from the Queue's workers and the state of the latest
/// task run of each worker that would otherwise be removed.
async fn plan(
    look: &Look,
    queue: Option<&QueueApi>,
    pool_id: &str,
    idle_only: bool,
) -> Result<Retirement> {
    let none = BTreeMap::new();
    let all = plan_retirement(&look.index, &look.workers, &[], &none, options(false));
    let Some(queue) = queue.filter(|_| idle_only) else {
        return Ok(all);
    };
    let candidates: Vec<&WorkerRef> = all.batches.iter().flatten().collect();
    if candidates.is_empty() {
        return Ok(all);
    }
    let (queue_workers, runs) = task_states(queue, pool_id, &candidates).await?;
    Ok(plan_retirement(
        &look.index,
        &look.workers,
        &queue_workers,
        &runs,
        options(true),
    ))
}

/// The Queue's workers of the pool's task queue, and the state of the latest task run of each
/// of `candidates` that has one. A task the Queue no longer has is left out (its worker is then
/// spared: its state is unknown).
async fn task_states(
    queue: &QueueApi,
    pool_id: &str,
    candidates: &[&WorkerRef],
) -> Result<(Vec<QueueWorker>, BTreeMap<TaskRun, RunState>)> {
    let queue_workers = queue.list_workers(pool_id).await?;
    let wanted: BTreeSet<(&str, &str)> = candidates
        .iter()
        .map(|r| (r.worker_group.as_str(), r.worker_id.as_str()))
        .collect();
    let tasks: BTreeSet<TaskRun> = queue_workers
        .iter()
        .filter(|q| wanted.contains(&(q.worker_group.as_str(), q.worker_id.as_str())))
        .filter_map(|q| q.latest_task.clone())
        .collect();
    let states: Vec<Result<(TaskRun, Option<RunState>)>> = futures::stream::iter(tasks)
        .map(|t| async move {
            let state = queue.run_state(&t.task_id, t.run_id).await?;
            Ok((t, state))
        })
        .buffer_unordered(STATUS_READS_AT_ONCE)
        .collect()
        .await;
    let mut runs = BTreeMap::new();
    for s in states {
        if let (t, Some(state)) = s? {
            runs.insert(t, state);
        }
    }
    Ok((queue_workers, runs))
}

/// Carries out a retirement plan, batch after batch.
struct Removal<'a> {
    wm: &'a WorkerManagerApi,
    queue: Option<&'a QueueApi>,
    pool_id: &'a str,
    look: &'a Look,
}

/// What became of each worker of the plan.
#[derive(Default)]
struct Outcome {
    removed: Vec<WorkerRef>,
    already_gone: Vec<WorkerRef>,
    /// `--idle-only`: claimed a task between the plan and its batch.
    now_busy: Vec<WorkerRef>,
    failed: Vec<(WorkerRef, String)>,
    not_started: usize,
    interrupted: Option<crate::interrupt::Interrupted>,
}

impl Removal<'_> {
    /// Batch after batch; an interrupt lets the batch under way finish and starts no other.
    async fn run(&self, ctx: &Ctx, plan: &Retirement) -> Outcome {
        let progress = ctx.shell.progress();
        let mut out = Outcome::default();
        let total = plan.batches.len();
        for (n, batch) in plan.batches.iter().enumerate() {
            if let Some(i) = ctx.cancel.interrupted() {
                out.interrupted = Some(i);
                out.not_started = plan.batches[n..].iter().map(Vec::len).sum();
                break;
            }
            progress.stage(&format!(
                "removing batch {} of {total} ({} {})",
                n + 1,
                batch.len(),
                workers(batch.len())
            ));
            match self.still_idle(batch).await {
                Ok((idle, busy)) => {
                    out.now_busy.extend(busy);
                    self.remove(&idle, &mut out).await;
                }
                Err(e) => {
                    let why = format!("{e:#}");
                    out.failed
                        .extend(batch.iter().map(|r| (r.clone(), why.clone())));
                }
            }
        }
        progress.finish();
        out
    }

    /// `--idle-only`: the plan made again for the batch's workers with the Queue's data as it
    /// is now: those still idle, and those that claimed a task since (left alone). Without
    /// `--idle-only`, the whole batch.
    async fn still_idle(&self, batch: &[WorkerRef]) -> Result<(Vec<WorkerRef>, Vec<WorkerRef>)> {
        let Some(queue) = self.queue else {
            return Ok((batch.to_vec(), Vec::new()));
        };
        let refs: Vec<&WorkerRef> = batch.iter().collect();
        let (queue_workers, runs) = task_states(queue, self.pool_id, &refs).await?;
        let keys: BTreeSet<(&str, &str)> = refs
            .iter()
            .map(|r| (r.worker_group.as_str(), r.worker_id.as_str()))
            .collect();
        let subset: Vec<Worker> = (self.look.workers.iter())
            .filter(|w| keys.contains(&(w.worker_group.as_str(), w.worker_id.as_str())))
            .cloned()
            .collect();
        let now = plan_retirement(
            &self.look.index,
            &subset,
            &queue_workers,
            &runs,
            options(true),
        );
        let busy = now.spared.into_iter().map(|(r, _)| r).collect();
        Ok((now.batches.into_iter().flatten().collect(), busy))
    }

    async fn remove(&self, batch: &[WorkerRef], out: &mut Outcome) {
        let results = join_all(batch.iter().map(|r| async move {
            let result = self
                .wm
                .remove_worker(self.pool_id, &r.worker_group, &r.worker_id)
                .await;
            (r.clone(), result)
        }))
        .await;
        for (r, result) in results {
            match result {
                Ok(true) => out.removed.push(r),
                Ok(false) => out.already_gone.push(r),
                Err(e) => out.failed.push((r, format!("{e:#}"))),
            }
        }
    }
}

/// Reports what the removal did; exit 0 only when every planned worker was dealt with.
fn finish(ctx: &Ctx, report: &mut Value, out: Outcome) -> Result<u8> {
    for (r, why) in &out.failed {
        ctx.shell.warn(&format!(
            "failed: {}/{}: {why}",
            r.worker_group, r.worker_id
        ));
    }
    for r in &out.now_busy {
        ctx.shell.note(&format!(
            "spared {}/{}: it claimed a task after the plan was made",
            r.worker_group, r.worker_id
        ));
    }
    let ids = |v: &[WorkerRef]| -> Vec<String> {
        v.iter()
            .map(|r| format!("{}/{}", r.worker_group, r.worker_id))
            .collect()
    };
    report["removed"] = json!(ids(&out.removed));
    report["already_gone"] = json!(ids(&out.already_gone));
    report["now_busy"] = json!(ids(&out.now_busy));
    report["failed"] = json!(out.failed.iter().map(|(r, why)| json!({"worker": format!("{}/{}", r.worker_group, r.worker_id), "error": why})).collect::<Vec<_>>());
    report["not_started"] = json!(out.not_started);
    let complete = out.failed.is_empty() && out.not_started == 0;
    report["complete"] = json!(complete);
    let summary = format!(
        "removed {} {}{}{}",
        out.removed.len(),
        workers(out.removed.len()),
        match out.already_gone.len() {
            0 => String::new(),
            n => format!(" ({n} already gone)"),
        },
        match out.now_busy.len() {
            0 => String::new(),
            n => format!("; spared {n} that claimed a task meanwhile"),
        }
    );
    ctx.shell.note(&summary);
    ctx.shell.json_doc(report);
    if let Some(i) = out.interrupted {
        return Err(anyhow::Error::from(i).context(format!(
            "{summary}; {} not started: run it again to retire them",
            out.not_started
        )));
    }
    if !out.failed.is_empty() {
        bail!(
            "retirement incomplete: {} of {} removals failed (first: {}); fix the cause and run it again",
            out.failed.len(),
            out.failed.len() + out.removed.len() + out.already_gone.len(),
            out.failed[0].1
        );
    }
    Ok(0)
}
