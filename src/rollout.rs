//! How far a rollout is, and which workers to retire (pure).
//!
//! Every worker carries the `launchConfigId` it was launched from (worker-manager's
//! `worker-full.json`), and tc-ami gives every changed launch config a new id on deploy, so
//! that the service archives the old one: a worker of an archived launch config runs an old
//! image. Inputs are the service's own shapes: the pool definition (its launch configs with
//! `workerManager.launchConfigId`), `listWorkerPoolLaunchConfigs?includeArchived=true`
//! entries, `listWorkersForWorkerPool` workers, and for idle checks the Queue's
//! `listWorkers` entries with the state of each worker's latest task run.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::format_age;
use crate::text::table;

/// A worker's state as worker-manager reports it (`worker-full.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Requested,
    Running,
    Stopping,
    Stopped,
}

impl fmt::Display for WorkerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkerState::Requested => "requested",
            WorkerState::Running => "running",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
        })
    }
}

/// The fields of a `listWorkersForWorkerPool` worker that rollout reads.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Worker {
    pub worker_group: String,
    pub worker_id: String,
    /// Absent for workers started before worker-manager recorded launch configs.
    #[serde(default)]
    pub launch_config_id: Option<String>,
    pub state: WorkerState,
    pub created: DateTime<Utc>,
}

/// One entry of `listWorkerPoolLaunchConfigs` (`worker-pool-launch-config-list.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchConfigRecord {
    pub launch_config_id: String,
    pub is_archived: bool,
    /// The launch config as posted: `region`, `launchConfig.ImageId`, …
    pub configuration: Value,
}

/// Whether new workers are launched from a launch config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LaunchConfigStatus {
    /// In the pool definition: new workers start from it.
    Current,
    /// Archived by the service, and not in the pool definition: its workers are old.
    Archived,
    /// Neither (no id on the worker, or an id the listing does not have).
    Unknown,
}

/// Where a launch config launches and which image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchConfigInfo {
    pub status: LaunchConfigStatus,
    pub region: Option<String>,
    pub image: Option<String>,
}

/// The launch configs of a pool, by id, each current or archived.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LaunchConfigIndex {
    by_id: BTreeMap<String, LaunchConfigInfo>,
}

fn region_and_image(lc: &Value) -> (Option<String>, Option<String>) {
    let text = |v: &Value| v.as_str().map(str::to_string);
    (text(&lc["region"]), text(&lc["launchConfig"]["ImageId"]))
}

impl LaunchConfigIndex {
    /// Current: the pool definition's launch configs (by `workerManager.launchConfigId`) and
    /// listed ones not archived. Archived: listed as archived and not in the definition.
    pub fn new(def: &Value, records: &[LaunchConfigRecord]) -> Self {
        let mut by_id = BTreeMap::new();
        for r in records {
            let (region, image) = region_and_image(&r.configuration);
            let status = match r.is_archived {
                true => LaunchConfigStatus::Archived,
                false => LaunchConfigStatus::Current,
            };
            let info = LaunchConfigInfo {
                status,
                region,
                image,
            };
            by_id.insert(r.launch_config_id.clone(), info);
        }
        let lcs = def["config"]["launchConfigs"].as_array();
        for lc in lcs.into_iter().flatten() {
            if let Some(id) = lc["workerManager"]["launchConfigId"].as_str() {
                let (region, image) = region_and_image(lc);
                let status = LaunchConfigStatus::Current;
                let info = LaunchConfigInfo {
                    status,
                    region,
                    image,
                };
                by_id.insert(id.to_string(), info);
            }
        }
        LaunchConfigIndex { by_id }
    }

    /// What is known of a launch config id; `Unknown` status for `None` or an unlisted id.
    pub fn get(&self, id: Option<&str>) -> LaunchConfigInfo {
        id.and_then(|id| self.by_id.get(id))
            .cloned()
            .unwrap_or(LaunchConfigInfo {
                status: LaunchConfigStatus::Unknown,
                region: None,
                image: None,
            })
    }

    /// The current launch config ids.
    pub fn current_ids(&self) -> impl Iterator<Item = &str> {
        self.by_id
            .iter()
            .filter(|(_, i)| i.status == LaunchConfigStatus::Current)
            .map(|(id, _)| id.as_str())
    }
}

/// Workers per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub requested: usize,
    pub running: usize,
    pub stopping: usize,
    pub stopped: usize,
}

impl StateCounts {
    fn add(&mut self, state: WorkerState) {
        let n = match state {
            WorkerState::Requested => &mut self.requested,
            WorkerState::Running => &mut self.running,
            WorkerState::Stopping => &mut self.stopping,
            WorkerState::Stopped => &mut self.stopped,
        };
        *n += 1;
    }

    /// Workers not yet stopped.
    pub fn live(&self) -> usize {
        self.requested + self.running + self.stopping
    }
}

/// A worker in a listing: who, which state, how long it has existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerAge {
    pub worker_group: String,
    pub worker_id: String,
    pub state: WorkerState,
    pub age_secs: u64,
}

/// The workers of one launch config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchConfigGroup {
    /// `None` for workers that carry no launch config id.
    pub launch_config_id: Option<String>,
    #[serde(flatten)]
    pub info: LaunchConfigInfo,
    pub counts: StateCounts,
    /// Age of the oldest worker not yet stopped.
    pub oldest_secs: Option<u64>,
    /// Oldest first.
    pub workers: Vec<WorkerAge>,
}

/// The pool's workers by launch config: current ones first (even without workers), then
/// archived, then unknown, each by region and id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    pub groups: Vec<LaunchConfigGroup>,
}

fn age_secs(created: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    u64::try_from((now - created).num_seconds()).unwrap_or(0)
}

/// Groups `workers` by launch config, with counts per state and ages at `now`.
pub fn rollout_status(
    index: &LaunchConfigIndex,
    workers: &[Worker],
    now: DateTime<Utc>,
) -> Rollout {
    let mut groups: BTreeMap<Option<String>, LaunchConfigGroup> = BTreeMap::new();
    let group = |id: Option<&str>| -> LaunchConfigGroup {
        LaunchConfigGroup {
            launch_config_id: id.map(str::to_string),
            info: index.get(id),
            counts: StateCounts::default(),
            oldest_secs: None,
            workers: Vec::new(),
        }
    };
    for id in index.current_ids() {
        groups.insert(Some(id.to_string()), group(Some(id)));
    }
    for w in workers {
        let id = w.launch_config_id.as_deref();
        let g = groups
            .entry(id.map(str::to_string))
            .or_insert_with(|| group(id));
        g.counts.add(w.state);
        let age = age_secs(w.created, now);
        if w.state != WorkerState::Stopped {
            g.oldest_secs = g.oldest_secs.max(Some(age));
        }
        g.workers.push(WorkerAge {
            worker_group: w.worker_group.clone(),
            worker_id: w.worker_id.clone(),
            state: w.state,
            age_secs: age,
        });
    }
    let mut groups: Vec<LaunchConfigGroup> = groups.into_values().collect();
    for g in &mut groups {
        g.workers.sort_by(|a, b| {
            b.age_secs
                .cmp(&a.age_secs)
                .then(a.worker_id.cmp(&b.worker_id))
        });
    }
    groups.sort_by(|a, b| {
        let key = |g: &LaunchConfigGroup| {
            (
                g.info.status,
                g.info.region.clone(),
                g.launch_config_id.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    Rollout { groups }
}

/// How far the rollout is, counting workers not yet stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub total: usize,
    pub on_current: usize,
    /// Image → workers on archived launch configs of that image (`unknown image` when the
    /// launch config does not say).
    pub on_archived: BTreeMap<String, usize>,
    pub on_unknown: usize,
    /// Age of the oldest worker of an archived launch config.
    pub oldest_archived_secs: Option<u64>,
    /// No worker of an archived launch config is left (stopped ones do not count).
    pub done: bool,
}

impl Rollout {
    /// The progress numbers.
    pub fn progress(&self) -> Progress {
        let mut p = Progress {
            total: 0,
            on_current: 0,
            on_archived: BTreeMap::new(),
            on_unknown: 0,
            oldest_archived_secs: None,
            done: true,
        };
        for g in &self.groups {
            let live = g.counts.live();
            p.total += live;
            match g.info.status {
                LaunchConfigStatus::Current => p.on_current += live,
                LaunchConfigStatus::Unknown => p.on_unknown += live,
                LaunchConfigStatus::Archived if live > 0 => {
                    let image = g
                        .info
                        .image
                        .clone()
                        .unwrap_or_else(|| "unknown image".into());
                    *p.on_archived.entry(image).or_default() += live;
                    p.oldest_archived_secs = p.oldest_archived_secs.max(g.oldest_secs);
                    p.done = false;
                }
                LaunchConfigStatus::Archived => {}
            }
        }
        p
    }

    /// Whether no worker of an archived launch config is left (stopped ones do not count).
    pub fn done(&self) -> bool {
        self.progress().done
    }
}

impl fmt::Display for Progress {
    /// `14 of 20 workers on the new image; 6 on ami-… (archived), oldest 2h10m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total == 0 {
            return f.write_str("no workers");
        }
        let plural = if self.total == 1 { "worker" } else { "workers" };
        write!(
            f,
            "{} of {} {plural} on the new image",
            self.on_current, self.total
        )?;
        if !self.on_archived.is_empty() {
            let old: Vec<String> = self
                .on_archived
                .iter()
                .map(|(image, n)| format!("{n} on {image}"))
                .collect();
            write!(
                f,
                "; {} (archived), oldest {}",
                old.join(", "),
                format_age(self.oldest_archived_secs)
            )?;
        }
        if self.on_unknown > 0 {
            write!(f, "; {} of an unknown launch config", self.on_unknown)?;
        }
        Ok(())
    }
}

impl LaunchConfigStatus {
    fn as_str(self) -> &'static str {
        match self {
            LaunchConfigStatus::Current => "current",
            LaunchConfigStatus::Archived => "archived",
            LaunchConfigStatus::Unknown => "unknown",
        }
    }
}

/// The ages of a group's workers not yet stopped: `5m`, `5m to 2h11m`, or `-`.
fn ages(g: &LaunchConfigGroup) -> String {
    let live: Vec<u64> = g
        .workers
        .iter()
        .filter(|w| w.state != WorkerState::Stopped)
        .map(|w| w.age_secs)
        .collect();
    match (live.iter().min(), live.iter().max()) {
        (Some(a), Some(b)) if a == b => format_age(Some(*a)),
        (Some(a), Some(b)) => format!("{} to {}", format_age(Some(*a)), format_age(Some(*b))),
        _ => "-".into(),
    }
}

/// The rollout as a table (pure): one row per launch config — every current one, and the
/// others while they have workers not yet stopped — with its status, image, region, workers
/// per state and their ages.
pub fn render_rollout(r: &Rollout) -> String {
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .filter(|g| g.info.status == LaunchConfigStatus::Current || g.counts.live() > 0)
        .map(|g| {
            let or_dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
            vec![
                g.launch_config_id
                    .clone()
                    .unwrap_or_else(|| "(none)".into()),
                g.info.status.as_str().to_string(),
                or_dash(&g.info.image),
                or_dash(&g.info.region),
                g.counts.requested.to_string(),
                g.counts.running.to_string(),
                g.counts.stopping.to_string(),
                ages(g),
            ]
        })
        .collect();
    let header = [
        "LAUNCH CONFIG",
        "STATUS",
        "IMAGE",
        "REGION",
        "REQUESTED",
        "RUNNING",
        "STOPPING",
        "AGES",
    ];
    table(&header, rows)
}

/// The Queue's view of a worker (`queue/v1/list-workers-response.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueWorker {
    pub worker_group: String,
    pub worker_id: String,
    #[serde(default)]
    pub latest_task: Option<TaskRun>,
}

/// A run of a task (`task-run.json`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    pub task_id: String,
    pub run_id: u32,
}

/// The state of a task run (`task-status.json`, `runs[].state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Pending,
    Running,
    Completed,
    Failed,
    Exception,
}

/// Why a worker is not removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Spared {
    /// Its launch config is current: never removed.
    CurrentLaunchConfig,
    /// Its launch config is not known to be archived: never removed.
    UnknownLaunchConfig,
    /// Already on its way out.
    Stopping,
    Stopped,
    /// `idle_only`: its latest task run is not resolved.
    Busy {
        task: TaskRun,
    },
    /// `idle_only`: its latest task run's state was not given, so it may be busy.
    TaskStateUnknown {
        task: TaskRun,
    },
}

impl fmt::Display for Spared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spared::CurrentLaunchConfig => f.write_str("on a current launch config"),
            Spared::UnknownLaunchConfig => {
                f.write_str("its launch config is not known to be archived")
            }
            Spared::Stopping => f.write_str("already stopping"),
            Spared::Stopped => f.write_str("stopped"),
            Spared::Busy { task } => {
                write!(f, "running task {} (run {})", task.task_id, task.run_id)
            }
            Spared::TaskStateUnknown { task } => write!(
                f,
                "the state of its latest task {} (run {}) is unknown",
                task.task_id, task.run_id
            ),
        }
    }
}

/// A worker, as `removeWorker` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerRef {
    pub worker_group: String,
    pub worker_id: String,
    pub launch_config_id: Option<String>,
    pub image: Option<String>,
}

/// What `--retire` removes, in batches (oldest workers first), and what it spares and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retirement {
    pub batches: Vec<Vec<WorkerRef>>,
    pub spared: Vec<(WorkerRef, Spared)>,
}

impl Retirement {
    /// How many workers would be removed.
    pub fn to_remove(&self) -> usize {
        self.batches.iter().map(Vec::len).sum()
    }
}

/// How to retire: only idle workers or all of them, and how many per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetireOptions {
    pub idle_only: bool,
    pub batch_size: NonZeroUsize,
}

/// Why `worker` (of an archived launch config, requested or running) may not be removed
/// under `idle_only`: a worker the Queue does not know has never claimed a task.
fn busy(
    worker: &Worker,
    queue: &BTreeMap<(&str, &str), &QueueWorker>,
    runs: &BTreeMap<TaskRun, RunState>,
) -> Option<Spared> {
    let key = (worker.worker_group.as_str(), worker.worker_id.as_str());
    let task = queue.get(&key)?.latest_task.clone()?;
    match runs.get(&task) {
        None => Some(Spared::TaskStateUnknown { task }),
        Some(RunState::Pending | RunState::Running) => Some(Spared::Busy { task }),
        Some(RunState::Completed | RunState::Failed | RunState::Exception) => None,
    }
}

/// Plans the removal of the workers of archived launch configs (never a current one): with
/// `idle_only`, only those the Queue shows not running a task (`runs` gives the state of
/// each latest task run).
pub fn plan_retirement(
    index: &LaunchConfigIndex,
    workers: &[Worker],
    queue_workers: &[QueueWorker],
    runs: &BTreeMap<TaskRun, RunState>,
    options: RetireOptions,
) -> Retirement {
    let queue: BTreeMap<(&str, &str), &QueueWorker> = queue_workers
        .iter()
        .map(|q| ((q.worker_group.as_str(), q.worker_id.as_str()), q))
        .collect();
    let mut removable: Vec<(&Worker, WorkerRef)> = Vec::new();
    let mut spared = Vec::new();
    for w in workers {
        let info = index.get(w.launch_config_id.as_deref());
        let r = WorkerRef {
            worker_group: w.worker_group.clone(),
            worker_id: w.worker_id.clone(),
            launch_config_id: w.launch_config_id.clone(),
            image: info.image.clone(),
        };
        let why = match (info.status, w.state) {
            (LaunchConfigStatus::Current, _) => Some(Spared::CurrentLaunchConfig),
            (LaunchConfigStatus::Unknown, _) => Some(Spared::UnknownLaunchConfig),
            (_, WorkerState::Stopping) => Some(Spared::Stopping),
            (_, WorkerState::Stopped) => Some(Spared::Stopped),
            _ if options.idle_only => busy(w, &queue, runs),
            _ => None,
        };
        match why {
            Some(why) => spared.push((r, why)),
            None => removable.push((w, r)),
        }
    }
    removable.sort_by(|(a, _), (b, _)| (a.created, &a.worker_id).cmp(&(b.created, &b.worker_id)));
    let removable: Vec<WorkerRef> = removable.into_iter().map(|(_, r)| r).collect();
    let batches = removable
        .chunks(options.batch_size.get())
        .map(<[WorkerRef]>::to_vec)
        .collect();
    Retirement { batches, spared }
}

/// What `--retire` will do, for the person who confirms it (pure): a table of the workers
/// to remove (oldest first, with their state and age at `now`), then the workers spared for
/// their task one per line, then how many are spared for each other reason.
pub fn render_retirement(plan: &Retirement, workers: &[Worker], now: DateTime<Utc>) -> String {
    let by_key: BTreeMap<(&str, &str), &Worker> = workers
        .iter()
        .map(|w| ((w.worker_group.as_str(), w.worker_id.as_str()), w))
        .collect();
    let rows = plan.batches.iter().flatten().map(|r| {
        let w = by_key.get(&(r.worker_group.as_str(), r.worker_id.as_str()));
        vec![
            r.worker_group.clone(),
            r.worker_id.clone(),
            w.map(|w| w.state.to_string()).unwrap_or_default(),
            r.launch_config_id.clone().unwrap_or_default(),
            r.image.clone().unwrap_or_else(|| "-".into()),
            format_age(w.map(|w| age_secs(w.created, now))),
        ]
    });
    let header = [
        "WORKER GROUP",
        "WORKER ID",
        "STATE",
        "LAUNCH CONFIG",
        "IMAGE",
        "AGE",
    ];
    let mut out = if plan.to_remove() > 0 {
        table(&header, rows)
    } else {
        String::new()
    };
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (r, why) in &plan.spared {
        match why {
            Spared::Busy { .. } | Spared::TaskStateUnknown { .. } => out.push_str(&format!(
                "spared {}/{}: {why}\n",
                r.worker_group, r.worker_id
            )),
            Spared::Stopped => {}
            other => *counts.entry(other.to_string()).or_default() += 1,
        }
    }
    for (why, n) in counts {
        let workers = if n == 1 { "worker" } else { "workers" };
        out.push_str(&format!("spared {n} {workers}: {why}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The pool and its launch configs as the real worker-manager returned them after an
    /// ImageId change in us-east-1 (`shared/taskcluster-api/real-service/exp2.txt`, "after c":
    /// lc-3a97… archived, lc-59ae… and lc-explicit-1 current).
    fn pool() -> Value {
        json!({
            "workerPoolId": "proj-test/aws-pool",
            "providerId": "aws",
            "description": "test",
            "config": {
                "maxCapacity": 5,
                "minCapacity": 0,
                "launchConfigs": [
                    {
                        "region": "us-west-2",
                        "launchConfig": {"ImageId": "ami-0000000000000000b", "InstanceType": "m5.large"},
                        "workerConfig": {},
                        "workerManager": {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 1}
                    },
                    {
                        "region": "us-east-1",
                        "launchConfig": {"ImageId": "ami-0000000000000000c", "InstanceType": "m5.large"},
                        "workerConfig": {"genericWorker": {"config": {"deploymentId": "dep-123"}}},
                        "workerManager": {"launchConfigId": "lc-59aec129c4a506605084"}
                    }
                ]
            },
            "owner": "me@example.com",
            "emailOnError": false
        })
    }

    const LAUNCH_CONFIGS: &str = r#"{"workerPoolLaunchConfigs": [
    {"launchConfigId": "lc-3a9787fd2a3dc809c0fb", "workerPoolId": "proj-test/aws-pool", "isArchived": true, "configuration": {"region": "us-east-1", "launchConfig": {"ImageId": "ami-0000000000000000a", "InstanceType": "m5.large"}, "workerConfig": {"genericWorker": {"config": {"deploymentId": "dep-123"}}}}, "created": "2026-11-24T13:48:40.659Z", "lastModified": "2026-11-24T13:48:52.880Z"},
    {"launchConfigId": "lc-59aec129c4a506605084", "workerPoolId": "proj-test/aws-pool", "isArchived": false, "configuration": {"region": "us-east-1", "launchConfig": {"ImageId": "ami-0000000000000000c", "InstanceType": "m5.large"}, "workerConfig": {"genericWorker": {"config": {"deploymentId": "dep-123"}}}}, "created": "2026-11-24T13:48:52.937Z", "lastModified": "2026-11-24T13:48:52.937Z"},
    {"launchConfigId": "lc-explicit-1", "workerPoolId": "proj-test/aws-pool", "isArchived": false, "configuration": {"region": "us-west-2", "launchConfig": {"ImageId": "ami-0000000000000000b", "InstanceType": "m5.large"}, "workerConfig": {}, "workerManager": {"launchConfigId": "lc-explicit-1", "capacityPerInstance": 1}}, "created": "2026-11-24T13:48:40.659Z", "lastModified": "2026-11-24T13:48:52.937Z"}
    ]}"#;

    const OLD_LC: &str = "lc-3a9787fd2a3dc809c0fb";
    const NEW_EAST: &str = "lc-59aec129c4a506605084";

    fn records() -> Vec<LaunchConfigRecord> {
        let v: Value = serde_json::from_str(LAUNCH_CONFIGS).unwrap();
        serde_json::from_value(v["workerPoolLaunchConfigs"].clone()).unwrap()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-24T16:00:00Z".parse().unwrap()
    }

    /// A worker in the full shape of `worker-full.json` (the AWS provider names workers by
    /// instance id, in the worker group of their region); ids here are the test's own.
    fn worker(id: &str, region: &str, lc: Option<&str>, state: &str, created: &str) -> Worker {
        let mut v = json!({
            "workerPoolId": "proj-test/aws-pool",
            "workerGroup": region,
            "workerId": id,
            "providerId": "aws",
            "created": created,
            "expires": "2026-12-01T16:00:00.000Z",
            "state": state,
            "capacity": 1,
            "lastChecked": "2026-11-24T15:59:00.000Z",
            "lastModified": "2026-11-24T15:59:00.000Z"
        });
        if let Some(lc) = lc {
            v["launchConfigId"] = json!(lc);
        }
        serde_json::from_value(v).unwrap()
    }

    fn workers() -> Vec<Worker> {
        vec![
            worker(
                "i-old1",
                "us-east-1",
                Some(OLD_LC),
                "running",
                "2026-11-24T13:50:00.000Z",
            ),
            worker(
                "i-old2",
                "us-east-1",
                Some(OLD_LC),
                "running",
                "2026-11-24T14:30:00.000Z",
            ),
            worker(
                "i-old3",
                "us-east-1",
                Some(OLD_LC),
                "requested",
                "2026-11-24T15:55:00.000Z",
            ),
            worker(
                "i-old4",
                "us-east-1",
                Some(OLD_LC),
                "stopping",
                "2026-11-24T13:49:00.000Z",
            ),
            worker(
                "i-old5",
                "us-east-1",
                Some(OLD_LC),
                "stopped",
                "2026-11-24T13:48:45.000Z",
            ),
            worker(
                "i-new1",
                "us-east-1",
                Some(NEW_EAST),
                "running",
                "2026-11-24T15:00:00.000Z",
            ),
            worker(
                "i-new2",
                "us-east-1",
                Some(NEW_EAST),
                "requested",
                "2026-11-24T15:58:00.000Z",
            ),
            worker(
                "i-west1",
                "us-west-2",
                Some("lc-explicit-1"),
                "running",
                "2026-11-24T13:49:00.000Z",
            ),
        ]
    }

    fn index() -> LaunchConfigIndex {
        LaunchConfigIndex::new(&pool(), &records())
    }

    #[test]
    fn index_knows_current_and_archived() {
        let ix = index();
        assert_eq!(ix.get(Some(OLD_LC)).status, LaunchConfigStatus::Archived);
        assert_eq!(
            ix.get(Some(OLD_LC)).image.as_deref(),
            Some("ami-0000000000000000a")
        );
        assert_eq!(ix.get(Some(NEW_EAST)).status, LaunchConfigStatus::Current);
        assert_eq!(
            ix.get(Some("lc-explicit-1")).region.as_deref(),
            Some("us-west-2")
        );
        assert_eq!(ix.get(Some("lc-gone")).status, LaunchConfigStatus::Unknown);
        assert_eq!(ix.get(None).status, LaunchConfigStatus::Unknown);
        // The pool definition wins over a listing taken at another moment.
        let mut stale = records();
        stale[1].is_archived = true;
        let ix = LaunchConfigIndex::new(&pool(), &stale);
        assert_eq!(ix.get(Some(NEW_EAST)).status, LaunchConfigStatus::Current);
        // Without the listing, only the definition's launch configs are known.
        let ix = LaunchConfigIndex::new(&pool(), &[]);
        assert_eq!(ix.get(Some(OLD_LC)).status, LaunchConfigStatus::Unknown);
    }

    #[test]
    fn groups_by_launch_config_with_counts_and_ages() {
        let r = rollout_status(&index(), &workers(), now());
        let ids: Vec<(Option<&str>, LaunchConfigStatus)> = r
            .groups
            .iter()
            .map(|g| (g.launch_config_id.as_deref(), g.info.status))
            .collect();
        assert_eq!(
            ids,
            vec![
                (Some(NEW_EAST), LaunchConfigStatus::Current),
                (Some("lc-explicit-1"), LaunchConfigStatus::Current),
                (Some(OLD_LC), LaunchConfigStatus::Archived),
            ]
        );
        let old = &r.groups[2];
        assert_eq!(
            old.counts,
            StateCounts {
                requested: 1,
                running: 2,
                stopping: 1,
                stopped: 1
            }
        );
        // The oldest not-yet-stopped one is i-old4 (stopping, 13:49); stopped i-old5 is older.
        assert_eq!(old.oldest_secs, Some(2 * 3600 + 11 * 60));
        assert_eq!(old.workers[0].worker_id, "i-old5");
        assert_eq!(old.info.image.as_deref(), Some("ami-0000000000000000a"));
        assert_eq!(r.groups[0].counts.live(), 2);
        assert_eq!(r.groups[0].oldest_secs, Some(3600));
    }

    #[test]
    fn progress_line_and_done() {
        let r = rollout_status(&index(), &workers(), now());
        let p = r.progress();
        assert_eq!((p.total, p.on_current, p.on_unknown), (7, 3, 0));
        assert!(!p.done && !r.done());
        assert_eq!(
            p.to_string(),
            "3 of 7 workers on the new image; 4 on ami-0000000000000000a (archived), oldest 2h11m"
        );
        // Once the old workers are stopped, it is done: stopped ones do not count.
        let finished: Vec<Worker> = workers()
            .into_iter()
            .map(|mut w| {
                if w.launch_config_id.as_deref() == Some(OLD_LC) {
                    w.state = WorkerState::Stopped;
                }
                w
            })
            .collect();
        let r = rollout_status(&index(), &finished, now());
        assert!(r.done());
        assert_eq!(r.progress().to_string(), "3 of 3 workers on the new image");
    }

    #[test]
    fn a_pool_without_workers_and_unknown_launch_configs() {
        let r = rollout_status(&index(), &[], now());
        assert_eq!(
            r.groups.len(),
            2,
            "current launch configs show even when empty"
        );
        assert!(r.done());
        assert_eq!(r.progress().to_string(), "no workers");
        let legacy = vec![worker(
            "i-legacy",
            "us-east-1",
            None,
            "running",
            "2026-11-20T16:00:00.000Z",
        )];
        let r = rollout_status(&index(), &legacy, now());
        assert_eq!(
            r.groups.last().unwrap().info.status,
            LaunchConfigStatus::Unknown
        );
        assert!(r.done(), "only archived launch configs hold a rollout back");
        assert_eq!(
            r.progress().to_string(),
            "0 of 1 worker on the new image; 1 of an unknown launch config"
        );
    }

    #[test]
    fn serialises_for_json_output() {
        let r = rollout_status(&index(), &workers(), now());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["groups"][2]["status"], "archived");
        assert_eq!(v["groups"][2]["image"], "ami-0000000000000000a");
        assert_eq!(v["groups"][2]["counts"]["running"], 2);
        assert_eq!(v["groups"][2]["workers"][0]["state"], "stopped");
        let p = serde_json::to_value(r.progress()).unwrap();
        assert_eq!(p["on_archived"]["ami-0000000000000000a"], 4);
    }

    fn options(idle_only: bool, batch: usize) -> RetireOptions {
        RetireOptions {
            idle_only,
            batch_size: NonZeroUsize::new(batch).unwrap(),
        }
    }

    fn ids(refs: &[WorkerRef]) -> Vec<&str> {
        refs.iter().map(|r| r.worker_id.as_str()).collect()
    }

    #[test]
    fn retires_only_workers_of_archived_launch_configs_oldest_first() {
        let plan = plan_retirement(
            &index(),
            &workers(),
            &[],
            &BTreeMap::new(),
            options(false, 2),
        );
        let batches: Vec<Vec<&str>> = plan.batches.iter().map(|b| ids(b)).collect();
        assert_eq!(batches, vec![vec!["i-old1", "i-old2"], vec!["i-old3"]]);
        assert_eq!(plan.to_remove(), 3);
        let spared: Vec<(&str, String)> = plan
            .spared
            .iter()
            .map(|(w, why)| (w.worker_id.as_str(), why.to_string()))
            .collect();
        assert_eq!(
            spared,
            vec![
                ("i-old4", "already stopping".to_string()),
                ("i-old5", "stopped".to_string()),
                ("i-new1", "on a current launch config".to_string()),
                ("i-new2", "on a current launch config".to_string()),
                ("i-west1", "on a current launch config".to_string()),
            ]
        );
        assert_eq!(
            plan.batches[0][0].image.as_deref(),
            Some("ami-0000000000000000a")
        );
    }

    #[test]
    fn idle_only_spares_busy_workers_and_those_it_cannot_judge() {
        // Queue entries in the shape of queue/v1/list-workers-response.json; the task ids
        // match the schema's taskId pattern and are the test's own.
        let busy_run = TaskRun {
            task_id: "fNp2r3jbSQ2p0m1qX0xV6A".into(),
            run_id: 0,
        };
        let done_run = TaskRun {
            task_id: "bQk8Zk3pT1ybqv3l9x2r0w".into(),
            run_id: 1,
        };
        let unknown_run = TaskRun {
            task_id: "aC1x5yV0Qm6m3w2y8r4t7g".into(),
            run_id: 0,
        };
        let queue: Vec<QueueWorker> = serde_json::from_value(json!([
            {"workerGroup": "us-east-1", "workerId": "i-old1", "firstClaim": "2026-11-24T13:55:00.000Z",
             "latestTask": {"taskId": busy_run.task_id, "runId": 0}},
            {"workerGroup": "us-east-1", "workerId": "i-old2", "firstClaim": "2026-11-24T14:35:00.000Z",
             "latestTask": {"taskId": done_run.task_id, "runId": 1}},
            {"workerGroup": "us-east-1", "workerId": "i-new1", "firstClaim": "2026-11-24T15:05:00.000Z",
             "latestTask": {"taskId": unknown_run.task_id, "runId": 0}}
        ]))
        .unwrap();
        let runs = BTreeMap::from([
            (busy_run.clone(), RunState::Running),
            (done_run, RunState::Completed),
        ]);
        let plan = plan_retirement(&index(), &workers(), &queue, &runs, options(true, 10));
        // i-old2's last task completed; i-old3 never claimed one (the Queue does not list it).
        assert_eq!(
            plan.batches.iter().map(|b| ids(b)).collect::<Vec<_>>(),
            vec![vec!["i-old2", "i-old3"]]
        );
        assert_eq!(plan.spared[0].1, Spared::Busy { task: busy_run });
        assert_eq!(
            plan.spared[0].1.to_string(),
            "running task fNp2r3jbSQ2p0m1qX0xV6A (run 0)"
        );
        // A current worker is spared as current, whatever its task.
        assert!(
            plan.spared
                .iter()
                .any(|(w, why)| w.worker_id == "i-new1" && *why == Spared::CurrentLaunchConfig)
        );
        // A latest task whose state was not given: spared.
        let queue_unknown: Vec<QueueWorker> = serde_json::from_value(json!([
            {"workerGroup": "us-east-1", "workerId": "i-old2", "firstClaim": "2026-11-24T14:35:00.000Z",
             "latestTask": {"taskId": unknown_run.task_id, "runId": 0}}
        ]))
        .unwrap();
        let plan = plan_retirement(
            &index(),
            &workers(),
            &queue_unknown,
            &runs,
            options(true, 10),
        );
        assert!(plan.spared.iter().any(|(w, why)| w.worker_id == "i-old2"
            && *why
                == Spared::TaskStateUnknown {
                    task: unknown_run.clone()
                }));
    }

    #[test]
    fn never_retires_without_knowing_the_launch_config_is_archived() {
        let legacy = vec![worker(
            "i-legacy",
            "us-east-1",
            None,
            "running",
            "2026-11-20T16:00:00.000Z",
        )];
        let ix = LaunchConfigIndex::new(&pool(), &[]);
        let plan = plan_retirement(&ix, &workers(), &[], &BTreeMap::new(), options(false, 5));
        assert_eq!(
            plan.to_remove(),
            0,
            "archived status unknown without the listing"
        );
        let plan = plan_retirement(&index(), &legacy, &[], &BTreeMap::new(), options(false, 5));
        assert_eq!(plan.spared[0].1, Spared::UnknownLaunchConfig);
        let plan = plan_retirement(&index(), &[], &[], &BTreeMap::new(), options(false, 5));
        assert!(plan.batches.is_empty() && plan.spared.is_empty());
    }

    #[test]
    fn renders_the_rollout_table() {
        let r = rollout_status(&index(), &workers(), now());
        let text = render_rollout(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "LAUNCH CONFIG            STATUS    IMAGE                  REGION     REQUESTED  RUNNING  STOPPING  AGES"
        );
        assert_eq!(
            lines[1],
            "lc-59aec129c4a506605084  current   ami-0000000000000000c  us-east-1  1          1        0         2m to 1h"
        );
        assert_eq!(
            lines[2],
            "lc-explicit-1            current   ami-0000000000000000b  us-west-2  0          1        0         2h11m"
        );
        assert_eq!(
            lines[3],
            "lc-3a9787fd2a3dc809c0fb  archived  ami-0000000000000000a  us-east-1  1          2        1         5m to 2h11m"
        );
        assert_eq!(lines.len(), 4);
        // An archived launch config whose workers have all stopped is left out.
        let r = rollout_status(&index(), &workers()[4..5], now());
        assert_eq!(render_rollout(&r).lines().count(), 3);
    }

    #[test]
    fn renders_the_retirement_plan() {
        let busy_run = TaskRun {
            task_id: "fNp2r3jbSQ2p0m1qX0xV6A".into(),
            run_id: 0,
        };
        let queue: Vec<QueueWorker> = serde_json::from_value(json!([
            {"workerGroup": "us-east-1", "workerId": "i-old1", "firstClaim": "2026-11-24T13:55:00.000Z",
             "latestTask": {"taskId": busy_run.task_id, "runId": 0}}
        ]))
        .unwrap();
        let runs = BTreeMap::from([(busy_run, RunState::Running)]);
        let plan = plan_retirement(&index(), &workers(), &queue, &runs, options(true, 10));
        let text = render_retirement(&plan, &workers(), now());
        assert_eq!(
            text,
            "WORKER GROUP  WORKER ID  STATE      LAUNCH CONFIG            IMAGE                  AGE\n\
             us-east-1     i-old2     running    lc-3a9787fd2a3dc809c0fb  ami-0000000000000000a  1h30m\n\
             us-east-1     i-old3     requested  lc-3a9787fd2a3dc809c0fb  ami-0000000000000000a  5m\n\
             spared us-east-1/i-old1: running task fNp2r3jbSQ2p0m1qX0xV6A (run 0)\n\
             spared 1 worker: already stopping\n\
             spared 3 workers: on a current launch config\n"
        );
        let none = plan_retirement(&index(), &[], &[], &BTreeMap::new(), options(true, 10));
        assert_eq!(render_retirement(&none, &[], now()), "");
    }

    #[test]
    fn retirement_serialises_for_json_output() {
        let plan = plan_retirement(
            &index(),
            &workers(),
            &[],
            &BTreeMap::new(),
            options(false, 2),
        );
        let v = serde_json::to_value(&plan).unwrap();
        assert_eq!(v["batches"][0][0]["worker_id"], "i-old1");
        assert_eq!(v["spared"][0][1]["reason"], "stopping");
    }
}
