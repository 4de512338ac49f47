//! `tc-ami try -w W [--image …] --task FILE [--timeout 2h] [--keep-pool]`: runs real tasks on
//! images in a temporary copy of W's pool before they reach anyone.
//!
//! The temporary pool `<W's pool>-try-<short id>` ([`crate::try_pool`]) is created through
//! registered cleanups ([`crate::ops::teardown`]): a sweep by its name (it is named before it
//! is created) until createWorkerPool answers, its deletion by id from then on; before the task
//! is created, the cancellation of whatever of its task group is still unresolved. Whatever
//! ends the try (all tasks resolved, a failure, the timeout, Ctrl-C, SIGTERM, an error), both
//! run; `--keep-pool` keeps the pool. A SIGKILLed try leaves the pool to `tc-ami cleanup`
//! ([`cleanup_left_pools`]). `deploy --try` and `promote --try` call [`try_images`] first.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rand::Rng;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::commands::Ctx;
use crate::commands::change::{
    Asked, Change, Target, check_available, confirm, newest_built_images, resolve_images,
};
use crate::config::WorkerType;
use crate::config_dir::load_worker_type;
use crate::duration::{format_duration, format_elapsed, parse_duration};
use crate::history::{Deployment, Kind, Tried, TriedTask};
use crate::image_arg::parse_image_args;
use crate::interrupt::Interrupted;
use crate::ops::deployments::HistorySecret;
use crate::ops::teardown::{Removal, Teardown, Undo};
use crate::pool::{definition, live_images};
use crate::shell::Progress;
use crate::taskcluster::{PoolList, QueueApi, SecretsApi, TcEnv, WorkerManagerApi};
use crate::text::table;
use crate::try_pool::{
    GroupTask, LeftPool, Outcome, TaskSetup, TaskState, TryPoolSpec, counts_text, group_tasks,
    left_try_pools, named, outcome, parse_task_file, poll_interval, prepare_task, settled,
    short_id, slug_id, task_url, try_pool_definition, try_pool_id, unresolved, wait_limit,
};
use crate::wait::POLL_INTERVAL;

/// `--timeout`'s default, and the timeout of the tries `deploy` and `promote` run.
pub const DEFAULT_TIMEOUT: &str = "2h";
/// From the task's deadline to its expiry: how long its logs and artifacts stay.
const TASK_EXPIRES_AFTER_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What to try the images with.
#[derive(Debug, Clone)]
pub struct TryArgs {
    pub task_file: PathBuf,
    pub timeout: Duration,
    pub keep_pool: bool,
}

/// The pool the images are tried for, as it is live.
pub struct TryOn<'a> {
    pub wt: &'a WorkerType,
    pub env: &'a TcEnv,
    pub wm: &'a WorkerManagerApi,
    pub live: &'a Value,
    /// The pool's deployment history, as loaded (a new deploymentId is unique in it).
    pub history: &'a crate::history::History,
}

/// How a try ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum End {
    Passed,
    Failed,
    TimedOut,
    Interrupted(Interrupted),
}

impl End {
    fn text(self) -> &'static str {
        match self {
            End::Passed => "passed",
            End::Failed => "failed",
            End::TimedOut => "timed out",
            End::Interrupted(_) => "interrupted",
        }
    }
}

/// What was tried, and how it went.
pub struct TryReport {
    pub pool_id: String,
    pub source_pool_id: String,
    pub images: BTreeMap<String, String>,
    pub task_id: String,
    pub group_id: String,
    pub tasks: Vec<GroupTask>,
    pub end: End,
    /// The counts per state when the wait ended (before anything was cancelled).
    pub end_counts: String,
    pub timeout: Duration,
    pub kept_pool: bool,
    /// What the cleanups removed (cancelled tasks, the pool) and what they could not.
    pub removal: Removal,
    pub elapsed: Duration,
    pub root_url: String,
}

/// `--timeout`, checked against what the Queue allows for a deadline.
pub fn parse_timeout(text: &str) -> Result<Duration> {
    let timeout = parse_duration(text).map_err(|e| anyhow!("--timeout {text}: {e}"))?;
    if timeout.is_zero() || timeout > crate::try_pool::MAX_DEADLINE {
        bail!(crate::try_pool::TryError::BadTimeout(timeout.as_secs()));
    }
    Ok(timeout)
}

pub async fn run(
    ctx: &Ctx,
    worker_type: &str,
    images: &[String],
    task_file: &Path,
    timeout: &str,
    keep_pool: bool,
) -> Result<u8> {
    let image_args = parse_image_args(images).map_err(|e| anyhow!(e))?;
    let args = TryArgs {
        task_file: task_file.to_path_buf(),
        timeout: parse_timeout(timeout)?,
        keep_pool,
    };
    // The task file is checked before anything is asked of EC2 or Taskcluster.
    check_task_file(&load_worker_type(&ctx.config_dir, worker_type)?, task_file)?;
    let t = Target::load(ctx, worker_type).await?;
    let images = if image_args.is_empty() {
        newest_built_images(&t.ec2, &t.wt, &t.regions).await?
    } else {
        resolve_images(&t.ec2, &t.wt, &t.wt.worker_pool_id, &t.regions, &image_args).await?
    };
    check_available(&t.ec2, &images).await?;
    let history = t.history().load().await?.history;
    let on = TryOn {
        wt: &t.wt,
        env: &t.env,
        wm: &t.wm,
        live: &t.live,
        history: &history,
    };
    let report = try_images(ctx, &on, &images, &args).await?;
    ctx.shell
        .result(&report.table(), &report.to_json(&t.wt.name));
    report.into_exit()
}

/// `deploy`'s and `promote`'s `--try FILE` and `--no-try`.
#[derive(Debug, Clone, Default)]
pub struct TryFirst {
    pub task: Option<PathBuf>,
    pub no_try: bool,
}

/// The task file `deploy`/`promote` try the images with first: `--try FILE`, else the worker
/// type's `try_task`; none with `--no-try` (said on stderr).
pub fn task_to_try(ctx: &Ctx, wt: &WorkerType, first: &TryFirst) -> Option<PathBuf> {
    if first.no_try {
        ctx.shell.note(&match &wt.try_task {
            Some(file) => format!(
                "not trying the images first (--no-try): {}'s try_task {} is skipped",
                wt.name,
                file.display()
            ),
            None => "not trying the images first (--no-try)".to_string(),
        });
        return None;
    }
    first.task.clone().or_else(|| wt.try_task.clone())
}

/// Reads and checks a task file as a try would, before anything is built or copied.
pub fn check_task_file(wt: &WorkerType, task_file: &Path) -> Result<()> {
    let file = task_file.display().to_string();
    let text = std::fs::read_to_string(task_file)
        .with_context(|| format!("cannot read the task file {file}"))?;
    let task = parse_task_file(&file, &text)?;
    let setup = TaskSetup {
        file: &file,
        task_id: &slug_id([0; 16]),
        try_pool_id: &try_pool_id(&wt.worker_pool_id, &short_id(0))?,
        now: chrono::Utc::now(),
        timeout: parse_timeout(DEFAULT_TIMEOUT)?,
        expires_after_deadline: TASK_EXPIRES_AFTER_DEADLINE,
    };
    prepare_task(&task, &setup)?;
    Ok(())
}

/// A try that did not pass, as the context of its error (the message `deploy` and `promote`
/// have always given): `auto` reads the try's document from it.
#[derive(Debug)]
pub struct TryNotPassed {
    pub pool_id: String,
    /// The try's JSON document ([`TryReport::to_json`]).
    pub doc: Value,
}

impl std::fmt::Display for TryNotPassed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nothing pushed to worker pool {}: the images did not pass their try",
            self.pool_id
        )
    }
}

/// For `deploy` and `promote`: tries `images` on `on`'s pool with `task_file` and returns
/// only if every task completed, with the try's JSON document; a dry run only says that it
/// would (None).
pub async fn require_passing_try(
    ctx: &Ctx,
    on: &TryOn<'_>,
    images: &BTreeMap<String, String>,
    task_file: &Path,
    dry_run: bool,
    yes: bool,
) -> Result<Option<Value>> {
    if dry_run {
        ctx.shell.note(&format!(
            "dry run: the images would first be tried with {} in a temporary copy of worker pool {}; not tried",
            task_file.display(),
            on.wt.worker_pool_id
        ));
        return Ok(None);
    }
    // The push asks after the try: ask now whether asking is possible at all.
    crate::commands::change::refuse_without_terminal(
        yes,
        &format!("try and push to worker pool {}", on.wt.worker_pool_id),
    )?;
    let args = TryArgs {
        task_file: task_file.to_path_buf(),
        timeout: parse_timeout(DEFAULT_TIMEOUT)?,
        keep_pool: false,
    };
    let report = try_images(ctx, on, images, &args).await?;
    ctx.shell.document(|_| report.table());
    let doc = report.to_json(&on.wt.name);
    match report.end {
        End::Passed => Ok(Some(doc)),
        end => Err(report.failure(end).context(TryNotPassed {
            pool_id: on.wt.worker_pool_id.clone(),
            doc,
        })),
    }
}

/// For `deploy` and `promote`, between computing the change and pushing it: when there is a
/// task to try and something to push, tries the change's images ([`require_passing_try`]) and
/// returns the change computed again against the pool as it is after the try (which took a
/// while); otherwise the change as it is.
pub async fn try_before_push(
    ctx: &Ctx,
    on: &TryOn<'_>,
    change: Change,
    task_file: Option<&Path>,
    asked: Asked,
) -> Result<Change> {
    Ok(try_before_push_reporting(ctx, on, change, task_file, asked)
        .await?
        .0)
}

/// [`try_before_push`], and the try's JSON document when there was one.
pub async fn try_before_push_reporting(
    ctx: &Ctx,
    on: &TryOn<'_>,
    change: Change,
    task_file: Option<&Path>,
    asked: Asked,
) -> Result<(Change, Option<Value>)> {
    let Some(file) = task_file.filter(|_| change.patched.changed) else {
        return Ok((change, None));
    };
    let tried = {
        // The try watches the interrupt itself and removes its temporary pool: under
        // commands::changing it must not be dropped half-way.
        let _trying = ctx
            .cancel
            .shield(crate::interrupt::ShieldKind::Own, "the try");
        require_passing_try(ctx, on, &change.images, file, asked.dry_run, asked.yes).await?
    };
    if asked.dry_run {
        return Ok((change, tried));
    }
    let now = on.wm.get_pool(&change.pool_id).await?;
    let change = Change::new(
        &change.pool_id,
        &change.root_url,
        &now,
        change.images,
        on.history,
    )?;
    Ok((change, tried))
}

/// Everything a try needs, checked and prepared before anything is created.
struct Prepared {
    pool_id: String,
    pool: Value,
    task_id: String,
    group_id: String,
    task: Value,
    timeout: Duration,
    started: Instant,
}

fn prepare(on: &TryOn<'_>, images: &BTreeMap<String, String>, args: &TryArgs) -> Result<Prepared> {
    let file = args.task_file.display().to_string();
    let text = std::fs::read_to_string(&args.task_file)
        .with_context(|| format!("cannot read the task file {file}"))?;
    let task = parse_task_file(&file, &text)?;
    let mut rng = rand::thread_rng();
    let pool_id = try_pool_id(&on.wt.worker_pool_id, &short_id(rng.r#gen()))?;
    let task_id = slug_id(rng.r#gen());
    // The wait's clock starts before the task's `created`: it ends no later than the deadline.
    let started = Instant::now();
    let now = chrono::Utc::now();
    let spec = TryPoolSpec {
        source_pool_id: &on.wt.worker_pool_id,
        images,
        max_capacity: on.wt.try_max_capacity,
        now,
        timeout: args.timeout,
    };
    let pool = try_pool_definition(&definition(on.live), &spec)?;
    let setup = TaskSetup {
        file: &file,
        task_id: &task_id,
        try_pool_id: &pool_id,
        now,
        timeout: args.timeout,
        expires_after_deadline: TASK_EXPIRES_AFTER_DEADLINE,
    };
    let task = prepare_task(&task, &setup)?;
    let group_id = task["taskGroupId"].as_str().unwrap_or(&task_id).to_string();
    Ok(Prepared {
        pool_id,
        pool,
        task_id,
        group_id,
        task,
        timeout: args.timeout,
        started,
    })
}

/// Tries `images`: creates the temporary pool and the task, waits for the task group, then
/// cancels what is unresolved and removes the pool (unless `keep_pool`), and records the try
/// in the pool's history. An error before the end (a refused call) removes what was created
/// and is returned; how the tasks ended is in the report.
pub async fn try_images(
    ctx: &Ctx,
    on: &TryOn<'_>,
    images: &BTreeMap<String, String>,
    args: &TryArgs,
) -> Result<TryReport> {
    let p = prepare(on, images, args)?;
    let secrets = SecretsApi::new(on.env)?;
    // Read first: a client that cannot record the try finds out before anything is created.
    let store = HistorySecret::new(&secrets, &on.wt.worker_pool_id, &on.wt.history_secret);
    let history = store.load().await?.history;
    let queue = QueueApi::new(on.env)?;
    let progress = ctx.shell.progress();
    let td = Teardown::new();
    let work = create_and_wait(ctx, on, &queue, &td, &p, args.keep_pool, &progress);
    let (tasks, end) = match td.undo_on_failure(POLL_INTERVAL, work, |_| {}).await {
        Ok(done) => done,
        Err((e, removal)) => {
            progress.finish();
            let done = removal_text(&p.pool_id, &removal, args.keep_pool);
            let done = if done.is_empty() {
                done
            } else {
                format!(" ({done})")
            };
            return Err(e.context(format!(
                "trying the images in a temporary copy of worker pool {}{done}",
                on.wt.worker_pool_id
            )));
        }
    };
    progress.stage(&format!(
        "cancelling what is unresolved{}",
        if args.keep_pool {
            String::new()
        } else {
            format!(" and removing worker pool {}", p.pool_id)
        }
    ));
    let end_counts = counts_text(&tasks);
    let removal = td.run(POLL_INTERVAL).await;
    progress.finish();
    // After the cancellations: the states the tasks ended in.
    let tasks = match queue.list_task_group(&p.group_id).await {
        Ok(entries) => group_tasks(&entries).unwrap_or(tasks),
        Err(_) => tasks,
    };
    let report = TryReport {
        pool_id: p.pool_id.clone(),
        source_pool_id: on.wt.worker_pool_id.clone(),
        images: images.clone(),
        task_id: p.task_id.clone(),
        group_id: p.group_id.clone(),
        tasks,
        end,
        end_counts,
        timeout: args.timeout,
        kept_pool: args.keep_pool,
        removal,
        elapsed: p.started.elapsed(),
        root_url: on.env.root_url.clone(),
    };
    record(ctx, on, &secrets, history, &report).await;
    report.notes(ctx, &on.wt.name);
    Ok(report)
}

/// Creates the pool and the task (each registered for removal first), then waits.
async fn create_and_wait<'a>(
    ctx: &Ctx,
    on: &TryOn<'a>,
    queue: &'a QueueApi,
    td: &Teardown<'a>,
    p: &Prepared,
    keep_pool: bool,
    progress: &Progress,
) -> Result<(Vec<GroupTask>, End)> {
    ctx.cancel.check()?;
    progress.stage(&format!(
        "creating the temporary worker pool {} (at most {} workers)",
        p.pool_id, on.wt.try_max_capacity
    ));
    let wm = on.wm;
    let description = p.pool["description"].as_str().unwrap_or_default();
    let (_, pool_step) = td
        .create(
            pool_sweep(wm, &p.pool_id, description),
            wm.create_pool(&p.pool_id, &p.pool),
            |_| pool_removal(wm, &p.pool_id),
        )
        .await?;
    if keep_pool {
        td.keep(&[pool_step]);
    }
    ctx.cancel.check()?;
    progress.stage(&format!("creating task {} in {}", p.task_id, p.pool_id));
    td.register(cancel_unresolved(queue, &p.group_id));
    queue.create_task(&p.task_id, &p.task).await?;
    progress.note(&format!("task {}", task_url(queue.root_url(), &p.task_id)));
    progress.stage(&format!(
        "waiting for the tasks of task group {} (timeout {})",
        p.group_id,
        format_duration(p.timeout)
    ));
    wait_for_group(ctx, queue, p, progress).await
}

/// Lists the group until it settles ([`settled`]), the timeout passes or an interrupt comes;
/// shows the counts per state whenever they change, and at least once a minute.
async fn wait_for_group(
    ctx: &Ctx,
    queue: &QueueApi,
    p: &Prepared,
    progress: &Progress,
) -> Result<(Vec<GroupTask>, End)> {
    let deadline = p.started + wait_limit(p.timeout);
    let mut last: Vec<GroupTask> = Vec::new();
    let mut shown: Option<(String, Instant)> = None;
    loop {
        let next = (Instant::now() + poll_interval(p.started.elapsed())).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            i = ctx.cancel.cancelled() => return Ok((last, End::Interrupted(i))),
        }
        let entries = queue.list_task_group(&p.group_id).await?;
        let tasks = group_tasks(&entries).with_context(|| {
            format!(
                "task group {}: an entry is not a task and its status",
                p.group_id
            )
        })?;
        let counts = counts_text(&tasks);
        if shown
            .as_ref()
            .is_none_or(|(c, at)| *c != counts || at.elapsed() >= Duration::from_secs(60))
        {
            progress.note(&format!(
                "tasks: {counts} ({} waited)",
                format_elapsed(p.started.elapsed())
            ));
            shown = Some((counts, Instant::now()));
        }
        // The Queue resolves what runs past the deadline (the timeout) `deadline-exceeded`,
        // at about the moment this wait ends: either way the try has timed out.
        let passed = matches!(outcome(&tasks), Outcome::Pass { .. });
        let late = tasks.iter().any(|t| t.deadline_exceeded);
        if !passed && (late || Instant::now() >= deadline) {
            return Ok((tasks, End::TimedOut));
        }
        if settled(&tasks) {
            return Ok((tasks, if passed { End::Passed } else { End::Failed }));
        }
        last = tasks;
    }
}

/// Before createWorkerPool answers: the pool of that id, if it exists and is the one this try
/// described (never someone else's pool of the same id).
fn pool_sweep<'a>(wm: &'a WorkerManagerApi, pool_id: &str, description: &str) -> Undo<'a> {
    let (pool_id, description) = (pool_id.to_string(), description.to_string());
    Undo::new(
        format!("worker pool {pool_id} (if it was created)"),
        move |_| async move {
            match wm.find_pool(&pool_id).await {
                Ok(Some(p))
                    if p["description"] == description.as_str()
                        && p["providerId"] != "null-provider" =>
                {
                    let what = format!("worker pool {pool_id}");
                    Removal::of(what.clone(), what, wm.delete_pool(&pool_id).await)
                }
                Ok(_) => Removal::default(),
                Err(e) => Removal {
                    removed: vec![],
                    left: vec![format!(
                        "worker pool {pool_id} if it was created (could not look: {e:#})"
                    )],
                },
            }
        },
    )
}

fn pool_removal<'a>(wm: &'a WorkerManagerApi, pool_id: &str) -> Undo<'a> {
    let pool_id = pool_id.to_string();
    let what = format!("worker pool {pool_id}");
    Undo::new(what.clone(), move |_| async move {
        Removal::of(what.clone(), what, wm.delete_pool(&pool_id).await)
    })
}

/// Cancels every task of the group that is not resolved (none once all have resolved).
fn cancel_unresolved<'a>(queue: &'a QueueApi, group: &str) -> Undo<'a> {
    let group = group.to_string();
    Undo::new(
        format!("the unresolved tasks of task group {group}"),
        move |_| async move {
            let open = queue.list_task_group(&group).await.and_then(|entries| {
                let tasks = group_tasks(&entries)?;
                Ok(unresolved(&tasks)
                    .into_iter()
                    .map(|t| t.task_id.clone())
                    .collect::<Vec<_>>())
            });
            let what = format!("the unresolved tasks of task group {group}");
            Removal::each(open, &what, |id: String| async move {
                let result = queue.cancel_task(&id).await;
                Removal::of(
                    format!("task {id} (cancelled)"),
                    format!("task {id}"),
                    result,
                )
            })
            .await
        },
    )
}

/// What the cleanups did, for a message: `; cancelled 2 tasks; removed worker pool …`.
fn removal_text(pool_id: &str, removal: &Removal, kept: bool) -> String {
    let cancelled = removal
        .removed
        .iter()
        .filter(|r| r.ends_with("(cancelled)"))
        .count();
    let mut parts = Vec::new();
    if cancelled > 0 {
        parts.push(format!("cancelled {cancelled} unresolved task(s)"));
    }
    if removal
        .removed
        .iter()
        .any(|r| r.starts_with("worker pool "))
    {
        parts.push(format!("removed the temporary worker pool {pool_id}"));
    } else if kept {
        parts.push(format!(
            "kept the temporary worker pool {pool_id} (--keep-pool)"
        ));
    }
    if !removal.left.is_empty() {
        parts.push(format!(
            "LEFT BEHIND, remove by hand: {}",
            removal.left.join(", ")
        ));
    }
    parts.join("; ")
}

/// Appends the try to the pool's history; a failure to record it is a warning (the try's
/// outcome stands).
async fn record(
    ctx: &Ctx,
    on: &TryOn<'_>,
    secrets: &SecretsApi,
    history: crate::history::History,
    report: &TryReport,
) {
    let record = Deployment {
        seq: history.next_seq(),
        time: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 0),
        who: on.env.identity(),
        kind: Kind::Try,
        worker_type: on.wt.name.clone(),
        before: live_images(&definition(on.live)),
        after: report.images.clone(),
        deployment_id: None,
        undoes: None,
        undoes_outside_change: false,
        from: None,
        unverified: false,
        tried: Some(Tried {
            pool: report.pool_id.clone(),
            outcome: report.end.text().to_string(),
            tasks: report
                .tasks
                .iter()
                .map(|t| TriedTask {
                    task_id: t.task_id.clone(),
                    name: t.name.clone(),
                    state: t.state.as_str().to_string(),
                })
                .collect(),
        }),
    };
    let pool = &on.wt.worker_pool_id;
    let store = HistorySecret::new(secrets, pool, &on.wt.history_secret);
    if let Err(e) = store.record(&record).await {
        ctx.shell.warn(&format!(
            "the try could not be recorded in the history of worker pool {pool}: {}",
            crate::text::one_line(&format!("{e:#}"))
        ));
    }
}

impl TryReport {
    /// Each task's final state and its page.
    pub fn table(&self) -> String {
        let rows = self.tasks.iter().map(|t| {
            [
                t.state.as_str().to_string(),
                t.name.clone().unwrap_or_else(|| "-".into()),
                task_url(&self.root_url, &t.task_id),
            ]
        });
        table(&["STATE", "TASK", "LINK"], rows)
    }

    pub fn to_json(&self, worker_type: &str) -> Value {
        json!({
            "worker_type": worker_type,
            "workerPoolId": self.source_pool_id,
            "tryPoolId": self.pool_id,
            "images": self.images,
            "taskId": self.task_id,
            "taskGroupId": self.group_id,
            "outcome": self.end.text(),
            "tasks": self.tasks.iter().map(|t| json!({
                "taskId": t.task_id,
                "name": t.name,
                "state": t.state,
                "url": task_url(&self.root_url, &t.task_id),
            })).collect::<Vec<_>>(),
            "poolKept": self.kept_pool,
            "leftBehind": self.removal.left,
            "duration_seconds": self.elapsed.as_secs_f64(),
        })
    }

    /// The lines on stderr: the outcome, and what happened to the pool.
    fn notes(&self, ctx: &Ctx, worker_type: &str) {
        let images: Vec<String> = self
            .images
            .iter()
            .map(|(r, i)| format!("{r} {i}"))
            .collect();
        ctx.shell.note(&format!(
            "try of {} in {}: {} after {} ({})",
            images.join(", "),
            self.pool_id,
            self.end.text(),
            format_elapsed(self.elapsed),
            counts_text(&self.tasks)
        ));
        let done = removal_text(&self.pool_id, &self.removal, self.kept_pool);
        if !done.is_empty() {
            ctx.shell.note(&done);
        }
        if self.kept_pool {
            ctx.shell.note(&format!(
                "to remove it: `tc-ami cleanup -w {worker_type}` once its {} have passed, or now with the taskcluster CLI: `taskcluster api workerManager deleteWorkerPool {}`",
                format_duration(self.timeout),
                self.pool_id
            ));
        }
    }

    /// Why the try did not pass, in one line.
    fn failure(&self, end: End) -> anyhow::Error {
        let left = crate::ops::build::leftover_text(&self.removal.left);
        match end {
            End::Passed => anyhow!("the try passed{left}"),
            End::Failed => {
                let failed: Vec<GroupTask> = self
                    .tasks
                    .iter()
                    .filter(|t| matches!(t.state, TaskState::Failed | TaskState::Exception))
                    .cloned()
                    .collect();
                anyhow!("try failed: {}{left}", named(&failed))
            }
            End::TimedOut => anyhow!(
                "try timed out after {} (the tasks then: {}){left}",
                format_duration(self.timeout),
                self.end_counts
            ),
            End::Interrupted(i) => anyhow::Error::new(i).context(format!(
                "try stopped; {}",
                removal_text(&self.pool_id, &self.removal, self.kept_pool)
            )),
        }
    }

    /// The exit of `tc-ami try`: 0 when every task completed (and nothing was left behind),
    /// else the error that says why.
    pub fn into_exit(self) -> Result<u8> {
        match self.end {
            End::Passed if self.removal.left.is_empty() => Ok(0),
            end => Err(self.failure(end)),
        }
    }
}

/// `cleanup`'s step for temporary pools: removes those a killed `try` of the `selected`
/// worker types left ([`left_try_pools`]) among the `listing` cleanup made, after showing them
/// and asking. Returns what it found and did, for the JSON document (null when the client may
/// not list the pools: cleanup's one warning about the listing says so); an error when one
/// could not be removed.
pub async fn cleanup_left_pools(
    ctx: &Ctx,
    env: &TcEnv,
    selected: &[&WorkerType],
    listing: &PoolList,
    dry_run: bool,
    yes: bool,
) -> Result<Value> {
    let wm = WorkerManagerApi::new(env)?;
    let sources: Vec<&str> = selected.iter().map(|w| w.worker_pool_id.as_str()).collect();
    // An extra the client may lack the scope for: the rest of the cleanup goes on without it,
    // and its warning about the listing names this step too.
    let PoolList::Pools(pools) = listing else {
        return Ok(json!(null));
    };
    let left = left_try_pools(pools, &sources, chrono::Utc::now());
    if left.is_empty() {
        return Ok(json!([]));
    }
    show_left_pools(ctx, &left);
    if dry_run {
        ctx.shell.note("dry run: no temporary worker pool removed");
        return Ok(serde_json::to_value(&left)?);
    }
    confirm(
        &ctx.shell,
        yes,
        &format!(
            "remove {} temporary worker pool(s) left by tc-ami try",
            left.len()
        ),
    )
    .await?;
    let mut failed = Vec::new();
    for pool in &left {
        match wm.delete_pool(&pool.pool_id).await {
            Ok(()) => ctx.shell.note(&format!(
                "removed the temporary worker pool {}",
                pool.pool_id
            )),
            Err(e) => failed.push(format!("{}: {e:#}", pool.pool_id)),
        }
    }
    if !failed.is_empty() {
        bail!(
            "cleanup incomplete: {} of {} temporary worker pools could not be removed ({}); fix the cause and run it again",
            failed.len(),
            left.len(),
            failed.join("; ")
        );
    }
    Ok(serde_json::to_value(&left)?)
}

fn show_left_pools(ctx: &Ctx, left: &[LeftPool]) {
    let rows = left.iter().map(|p| {
        [
            p.pool_id.clone(),
            p.source.clone(),
            p.made.format("%Y-%m-%d %H:%M:%S").to_string(),
            format_duration(Duration::from_secs(p.timeout_seconds)),
            "remove".to_string(),
        ]
    });
    let text = table(
        &[
            "TEMPORARY POOL",
            "COPY OF",
            "MADE (UTC)",
            "TIMEOUT",
            "ACTION",
        ],
        rows,
    );
    ctx.shell.document(|_| text);
    ctx.shell.note(&format!(
        "{} temporary worker pool(s) of `tc-ami try` outlived their timeout: their try was killed",
        left.len()
    ));
}
