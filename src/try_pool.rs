//! `tc-ami try` planning (pure): the temporary pool's id and definition, the task to run
//! in it, and the outcome of its task group.
//!
//! Servo's `commands/new-ami.py` (`try_ami`, servo/taskcluster-config) is the model: a
//! temporary pool from the production definition with the new image, their daily decision
//! task pointed at it, the task group watched, the pool deleted. Shapes and limits come from
//! the official schemas in `shared/taskcluster-api/generated/`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::valid_worker_pool_id;
use crate::duration::{format_duration, parse_duration};
use crate::pool::{PoolError, new_deployment_id, patch_pool};

/// What joins the pool's name and the short id.
pub const TRY_INFIX: &str = "-try-";
/// The longest worker-type part of a workerPoolId (the part after `/`).
pub const WORKER_TYPE_MAX: usize = 38;
/// The short id is cut to no fewer characters than this before the pool's name is cut.
pub const MIN_SHORT_ID: usize = 4;
/// How every temporary pool's description starts, so that `cleanup` can recognise one.
pub const DESCRIPTION_START: &str = "Temporary pool made by `tc-ami try`";
/// The variable tc-ami sets in the task's `payload.env`: the temporary pool's id.
pub const ENV_VAR: &str = "TC_AMI_TRY_POOL";
/// The Queue refuses a deadline more than 5 days ahead (queue API reference, `createTask`).
pub const MAX_DEADLINE: Duration = Duration::from_secs(5 * 24 * 3600);

/// Why a try cannot be set up; each message is one line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TryError {
    #[error(
        "`{0}` is not a worker pool id: it must look like PROVISIONER/WORKER-TYPE (lowercase worker type)"
    )]
    BadPoolId(String),
    #[error("the short id `{0}` must be lowercase letters and digits, at least one")]
    BadShortId(String),
    #[error("try_max_capacity must be at least 1: with 0 the temporary pool never starts a worker")]
    ZeroCapacity,
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(
        "the try timeout must be between 1s and 5d (the Queue refuses a deadline beyond 5 days), not {0}s"
    )]
    BadTimeout(u64),
    #[error("{file}: {message}")]
    Task { file: String, message: String },
}

fn task_error(file: &str, message: impl Into<String>) -> TryError {
    TryError::Task {
        file: file.to_string(),
        message: message.into(),
    }
}

/// A short id for a temporary pool: 8 lowercase base-36 characters of `random`.
pub fn short_id(random: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n = random;
    (0..8)
        .map(|_| {
            let c = digits[(n % 36) as usize] as char;
            n /= 36;
            c
        })
        .collect()
}

/// `<pool id>-try-<short id>`, cut to fit worker-manager's workerPoolId rule: the short id
/// first (down to [`MIN_SHORT_ID`]), then the pool's name.
pub fn try_pool_id(pool_id: &str, short: &str) -> Result<String, TryError> {
    let (provisioner, name) = pool_id
        .split_once('/')
        .filter(|_| valid_worker_pool_id(pool_id))
        .ok_or_else(|| TryError::BadPoolId(pool_id.to_string()))?;
    let short_ok = !short.is_empty()
        && short
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !short_ok {
        return Err(TryError::BadShortId(short.to_string()));
    }
    let room = WORKER_TYPE_MAX - TRY_INFIX.len();
    let short_len = short
        .len()
        .min(room.saturating_sub(name.len()).max(MIN_SHORT_ID))
        .min(room - 1);
    let name_len = name.len().min(room - short_len);
    let name = name[..name_len].trim_end_matches('-');
    Ok(format!(
        "{provisioner}/{name}{TRY_INFIX}{}",
        &short[..short_len]
    ))
}

/// What the temporary pool is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct TryPoolSpec<'a> {
    /// The pool whose live definition is copied.
    pub source_pool_id: &'a str,
    /// Region → image to try.
    pub images: &'a BTreeMap<String, String>,
    /// The worker type's `try_max_capacity`.
    pub max_capacity: u64,
    pub now: DateTime<Utc>,
    /// The try's timeout: after `now` plus this, `cleanup` may remove the pool.
    pub timeout: Duration,
}

/// The fields `createWorkerPool` accepts (`create-worker-pool-request.json`).
const CREATE_FIELDS: [&str; 5] = [
    "providerId",
    "description",
    "config",
    "owner",
    "emailOnError",
];

/// The `createWorkerPool` body of the temporary pool: the live definition (from
/// `pool::definition`) with the images to try, minCapacity 0, maxCapacity from the spec,
/// no launch config ids (the service assigns fresh ones), and a description that says what
/// made it and when.
pub fn try_pool_definition(def: &Value, spec: &TryPoolSpec) -> Result<Value, TryError> {
    if spec.max_capacity == 0 {
        return Err(TryError::ZeroCapacity);
    }
    let now = spec.now;
    let patched = patch_pool(spec.source_pool_id, def, spec.images, |image| {
        new_deployment_id(image, now)
    })?;
    let mut out = patched.after;
    let Some(obj) = out.as_object_mut() else {
        return Err(PoolError::NoLaunchConfigs(spec.source_pool_id.to_string()).into());
    };
    obj.retain(|k, _| CREATE_FIELDS.contains(&k.as_str()));
    obj.insert("description".into(), Value::String(description(spec)));
    if let Some(config) = obj.get_mut("config").and_then(Value::as_object_mut) {
        config.insert("minCapacity".into(), Value::from(0));
        config.insert("maxCapacity".into(), Value::from(spec.max_capacity));
        let lcs = config
            .get_mut("launchConfigs")
            .and_then(Value::as_array_mut);
        for lc in lcs.into_iter().flatten() {
            forget_launch_config_id(lc);
        }
    }
    Ok(out)
}

fn description(spec: &TryPoolSpec) -> String {
    let images: Vec<String> = spec
        .images
        .iter()
        .map(|(region, image)| format!("{image} in {region}"))
        .collect();
    format!(
        "{DESCRIPTION_START} at {} for at most {}, to try {} from {}. `tc-ami cleanup` removes it after that time if it is left behind.",
        spec.now.to_rfc3339_opts(SecondsFormat::Secs, true),
        format_duration(spec.timeout),
        images.join(", "),
        spec.source_pool_id
    )
}

/// When a temporary pool was made and for how long, from its description (see
/// [`try_pool_definition`]); None when the description does not say.
pub fn made_at(def: &Value) -> Option<(DateTime<Utc>, Duration)> {
    let rest = def["description"]
        .as_str()?
        .strip_prefix(DESCRIPTION_START)?
        .strip_prefix(" at ")?;
    let (time, rest) = rest.split_once(" for at most ")?;
    let (timeout, _) = rest.split_once(", to try ")?;
    let time = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    Some((time, parse_duration(timeout).ok()?))
}

/// Whether `candidate` is a pool id [`try_pool_id`] makes for `source_pool_id` (with any short
/// id, cut or not).
pub fn is_try_pool_of(source_pool_id: &str, candidate: &str) -> bool {
    candidate
        .rsplit_once(TRY_INFIX)
        .is_some_and(|(_, short)| try_pool_id(source_pool_id, short).as_deref() == Ok(candidate))
}

/// A temporary pool that `cleanup` removes: its `try` has ended, whatever ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeftPool {
    #[serde(rename = "workerPoolId")]
    pub pool_id: String,
    /// The pool it copies.
    pub source: String,
    pub made: DateTime<Utc>,
    pub timeout_seconds: u64,
}

/// The temporary pools of `sources` that a `try` left (SIGKILL, a lost machine): among `pools`
/// (`listWorkerPools` entries), those named as [`try_pool_id`] names them, described as
/// [`is_try_pool`] requires, not deleted yet (worker-manager shows a deleted pool with
/// `null-provider` until its workers are gone), and made more than their timeout before `now`
/// (their try cannot still be running). A pool whose age cannot be told is left alone.
pub fn left_try_pools(pools: &[Value], sources: &[&str], now: DateTime<Utc>) -> Vec<LeftPool> {
    pools
        .iter()
        .filter_map(|p| {
            let id = p["workerPoolId"].as_str()?;
            let source = sources.iter().find(|s| is_try_pool_of(s, id))?;
            if !is_try_pool(id, p) || p["providerId"] == "null-provider" {
                return None;
            }
            let (made, timeout) = made_at(p)?;
            let ended = made + chrono::Duration::from_std(timeout).ok()?;
            (ended < now).then(|| LeftPool {
                pool_id: id.to_string(),
                source: source.to_string(),
                made,
                timeout_seconds: timeout.as_secs(),
            })
        })
        .collect()
}

/// Removes `workerManager.launchConfigId`, and `workerManager` when nothing else is left.
fn forget_launch_config_id(lc: &mut Value) {
    let Some(obj) = lc.as_object_mut() else {
        return;
    };
    if let Some(wm) = obj.get_mut("workerManager").and_then(Value::as_object_mut) {
        wm.shift_remove("launchConfigId");
        if wm.is_empty() {
            obj.shift_remove("workerManager");
        }
    }
}

/// Whether a pool is a temporary pool of `tc-ami try`: its id has `-try-` in its name and
/// its description starts with [`DESCRIPTION_START`].
pub fn is_try_pool(pool_id: &str, def: &Value) -> bool {
    let name = pool_id.split_once('/').map_or("", |(_, n)| n);
    name.contains(TRY_INFIX)
        && def["description"]
            .as_str()
            .is_some_and(|d| d.starts_with(DESCRIPTION_START))
}

/// A taskId as Taskcluster makes them (slugid's "nice" v4): `random` with the UUID v4 version
/// and variant bits set and the first bit cleared, as 22 URL-safe base64 characters.
pub fn slug_id(random: [u8; 16]) -> String {
    let mut bytes = random;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes[0] &= 0x7f;
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `id` matches the taskId pattern of the Queue's schemas
/// (`^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$`).
pub fn is_slug_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 22
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        && (b'Q'..=b'T').contains(&b[8])
        && b"CGKOSWaeimquy26-".contains(&b[10])
        && b"AQgw".contains(&b[21])
}

/// Reads a task definition: JSON for a `.json` file, YAML otherwise.
pub fn parse_task_file(file: &str, text: &str) -> Result<Value, TryError> {
    let parsed = if file.to_ascii_lowercase().ends_with(".json") {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        yaml_serde::from_str(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| task_error(file, format!("not a valid task file: {}", one_line(&e))))
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What `prepare_task` fills in.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSetup<'a> {
    /// The task file's name, for error messages.
    pub file: &'a str,
    /// The taskId the task will be created under; the task group's id when the file has none
    /// (a decision task's group is its own id).
    pub task_id: &'a str,
    /// The temporary pool (the task's queue).
    pub try_pool_id: &'a str,
    pub now: DateTime<Utc>,
    /// From `now` to the task's deadline: the try's timeout.
    pub timeout: Duration,
    /// From the deadline to the task's expiry (the Queue's own default is one year).
    pub expires_after_deadline: Duration,
}

/// The task to create: `task` with its queue set to the temporary pool (`taskQueueId`, and
/// `provisionerId`/`workerType` where the file has them), `created`, `deadline` and `expires`
/// from `now`, `taskGroupId` if absent, and `payload.env.TC_AMI_TRY_POOL`; then checked
/// against what the Queue's create-task-request schema requires.
pub fn prepare_task(task: &Value, setup: &TaskSetup) -> Result<Value, TryError> {
    let file = setup.file;
    let secs = setup.timeout.as_secs();
    if secs == 0 || setup.timeout > MAX_DEADLINE {
        return Err(TryError::BadTimeout(secs));
    }
    let mut task = task.clone();
    let Some(obj) = task.as_object_mut() else {
        return Err(task_error(
            file,
            "a task definition must be a mapping at the top level",
        ));
    };
    let (provisioner, worker_type) = setup
        .try_pool_id
        .split_once('/')
        .ok_or_else(|| TryError::BadPoolId(setup.try_pool_id.to_string()))?;
    obj.insert("taskQueueId".into(), Value::from(setup.try_pool_id));
    for (key, value) in [("provisionerId", provisioner), ("workerType", worker_type)] {
        if obj.contains_key(key) {
            obj.insert(key.into(), Value::from(value));
        }
    }
    let after = |t: DateTime<Utc>, d: Duration| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| t.checked_add_signed(d))
    };
    let deadline = after(setup.now, setup.timeout).ok_or(TryError::BadTimeout(secs))?;
    let expires = after(deadline, setup.expires_after_deadline).ok_or_else(|| {
        task_error(
            file,
            "the task's expiry after its deadline is beyond any date",
        )
    })?;
    for (key, time) in [
        ("created", setup.now),
        ("deadline", deadline),
        ("expires", expires),
    ] {
        obj.insert(
            key.into(),
            Value::from(time.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
    }
    obj.entry("taskGroupId")
        .or_insert_with(|| Value::from(setup.task_id));
    set_env(file, obj, setup.try_pool_id)?;
    validate_task(file, &task)?;
    Ok(task)
}

fn set_env(file: &str, task: &mut Map<String, Value>, pool: &str) -> Result<(), TryError> {
    let payload = task
        .entry("payload")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(payload) = payload.as_object_mut() else {
        return Err(task_error(file, "`payload` must be a mapping"));
    };
    let env = payload
        .entry("env")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(env) = env.as_object_mut() else {
        return Err(task_error(
            file,
            "`payload.env` must be a mapping of variables",
        ));
    };
    env.insert(ENV_VAR.into(), Value::from(pool));
    Ok(())
}

type Check = fn(&Value) -> bool;

const PRIORITIES: [&str; 7] = [
    "highest",
    "very-high",
    "high",
    "medium",
    "low",
    "very-low",
    "lowest",
];

fn id_chars(s: &str, extra: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || extra.contains(c))
}

fn strings(v: &Value, max_items: usize, ok: fn(&str) -> bool) -> bool {
    v.as_array()
        .is_some_and(|a| a.len() <= max_items && a.iter().all(|s| s.as_str().is_some_and(ok)))
}

/// Every field of `create-task-request.json` (it allows no others), with what it must be.
const FIELDS: [(&str, &str, Check); 19] = [
    ("created", "a date-time", |v| v.is_string()),
    ("deadline", "a date-time", |v| v.is_string()),
    ("expires", "a date-time", |v| v.is_string()),
    ("payload", "a mapping", Value::is_object),
    ("metadata", "a mapping", Value::is_object),
    ("extra", "a mapping", Value::is_object),
    (
        "tags",
        "a mapping of strings of at most 4096 characters",
        |v| {
            v.as_object().is_some_and(|m| {
                m.values()
                    .all(|s| s.as_str().is_some_and(|s| s.chars().count() <= 4096))
            })
        },
    ),
    (
        "priority",
        "one of highest, very-high, high, medium, low, very-low, lowest",
        |v| v.as_str().is_some_and(|s| PRIORITIES.contains(&s)),
    ),
    ("requires", "all-completed or all-resolved", |v| {
        matches!(v.as_str(), Some("all-completed" | "all-resolved"))
    }),
    ("retries", "an integer from 0 to 49", |v| {
        v.as_u64().is_some_and(|n| n <= 49)
    }),
    (
        "routes",
        "a list of at most 64 strings of 1 to 249 characters",
        |v| strings(v, 64, |s| (1..=249).contains(&s.chars().count())),
    ),
    ("scopes", "a list of scopes (printable ASCII)", |v| {
        strings(v, usize::MAX, |s| {
            s.bytes().all(|c| (b' '..=b'~').contains(&c))
        })
    }),
    ("dependencies", "a list of at most 10000 taskIds", |v| {
        strings(v, 10000, is_slug_id)
    }),
    ("taskGroupId", "a taskId (22-character slugid)", |v| {
        v.as_str().is_some_and(is_slug_id)
    }),
    ("schedulerId", "1 to 38 letters, digits, - or _", |v| {
        v.as_str()
            .is_some_and(|s| (1..=38).contains(&s.len()) && id_chars(s, ""))
    }),
    ("projectId", "1 to 500 letters, digits, ., /, - or _", |v| {
        v.as_str()
            .is_some_and(|s| (1..=500).contains(&s.len()) && id_chars(s, "./"))
    }),
    ("provisionerId", "1 to 38 letters, digits, - or _", |v| {
        v.as_str()
            .is_some_and(|s| (1..=38).contains(&s.len()) && id_chars(s, ""))
    }),
    ("workerType", "a worker type name", |v| {
        v.as_str()
            .is_some_and(|s| valid_worker_pool_id(&format!("p/{s}")))
    }),
    ("taskQueueId", "a worker pool id", |v| {
        v.as_str().is_some_and(valid_worker_pool_id)
    }),
];

/// Checks `task` against what the Queue's create-task-request schema requires, naming the
/// first field that does not fit.
pub fn validate_task(file: &str, task: &Value) -> Result<(), TryError> {
    let Some(obj) = task.as_object() else {
        return Err(task_error(
            file,
            "a task definition must be a mapping at the top level",
        ));
    };
    for key in obj.keys() {
        if !FIELDS.iter().any(|(f, _, _)| f == key) {
            return Err(task_error(
                file,
                format!(
                    "`{key}` is not a field of a task definition (the Queue's create-task-request schema allows no other fields)"
                ),
            ));
        }
    }
    for (field, what, ok) in FIELDS {
        match obj.get(field) {
            Some(v) if !ok(v) => {
                return Err(task_error(file, format!("`{field}` must be {what}")));
            }
            None if ["created", "deadline", "payload", "metadata"].contains(&field) => {
                return Err(task_error(file, format!("`{field}` is required")));
            }
            _ => {}
        }
    }
    validate_metadata(file, &obj["metadata"])?;
    match json_e_key(task, "") {
        Some(path) => Err(task_error(
            file,
            format!("`{path}` is a json-e construct: render the template first (tc-ami does not)"),
        )),
        None => Ok(()),
    }
}

/// `task-metadata.json`: name, description, owner and source, all strings; source a URL.
fn validate_metadata(file: &str, metadata: &Value) -> Result<(), TryError> {
    for (key, max) in [
        ("name", 255),
        ("description", 32768),
        ("owner", 255),
        ("source", 4096),
    ] {
        let field = format!("metadata.{key}");
        match metadata[key].as_str() {
            None => {
                return Err(task_error(
                    file,
                    format!("`{field}` is required (a string)"),
                ));
            }
            Some(s) if s.chars().count() > max => {
                return Err(task_error(
                    file,
                    format!("`{field}` must be at most {max} characters"),
                ));
            }
            Some(_) => {}
        }
    }
    let source = metadata["source"].as_str().unwrap_or_default();
    if !["https://", "http://", "ssh://", "git@"]
        .iter()
        .any(|p| source.starts_with(p))
    {
        return Err(task_error(
            file,
            "`metadata.source` must start with https://, http://, ssh:// or git@",
        ));
    }
    Ok(())
}

/// The path of the first key that starts with `$` (a json-e operator), if any.
fn json_e_key(v: &Value, path: &str) -> Option<String> {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            if k.starts_with('$') {
                Some(join(k))
            } else {
                json_e_key(v, &join(k))
            }
        }),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, v)| json_e_key(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// A task's state (`task-status.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Unscheduled,
    Pending,
    Running,
    Completed,
    Failed,
    Exception,
}

impl TaskState {
    /// The state as the Queue writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Unscheduled => "unscheduled",
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Exception => "exception",
        }
    }
}

/// A task of the group: id, name, state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupTask {
    pub task_id: String,
    pub name: Option<String>,
    pub state: TaskState,
    /// Its last run was resolved `deadline-exceeded`: the Queue says the try's time is up.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deadline_exceeded: bool,
}

#[derive(Deserialize)]
struct Entry {
    task: EntryTask,
    status: EntryStatus,
}

#[derive(Deserialize)]
struct EntryTask {
    #[serde(default)]
    metadata: Option<EntryMetadata>,
}

#[derive(Deserialize)]
struct EntryMetadata {
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryStatus {
    task_id: String,
    state: TaskState,
    #[serde(default)]
    runs: Vec<EntryRun>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryRun {
    #[serde(default)]
    reason_resolved: Option<String>,
}

/// The tasks of `listTaskGroup` pages (`tasks` entries, `task-definition-and-status.json`).
pub fn group_tasks(entries: &[Value]) -> Result<Vec<GroupTask>, serde_json::Error> {
    entries
        .iter()
        .map(|e| {
            let e: Entry = serde_json::from_value(e.clone())?;
            let last_reason = e
                .status
                .runs
                .last()
                .and_then(|r| r.reason_resolved.as_deref());
            Ok(GroupTask {
                deadline_exceeded: last_reason == Some("deadline-exceeded"),
                task_id: e.status.task_id,
                name: e.task.metadata.and_then(|m| m.name),
                state: e.status.state,
            })
        })
        .collect()
}

/// How many tasks are in each state.
pub fn counts(tasks: &[GroupTask]) -> BTreeMap<TaskState, usize> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.state).or_default() += 1;
    }
    counts
}

/// `2 pending, 1 running, 3 completed`, in the Queue's order of states; `no task yet`.
pub fn counts_text(tasks: &[GroupTask]) -> String {
    let parts: Vec<String> = counts(tasks)
        .iter()
        .map(|(s, n)| format!("{n} {}", s.as_str()))
        .collect();
    if parts.is_empty() {
        "no task yet".into()
    } else {
        parts.join(", ")
    }
}

/// The result of a try so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// Every task completed.
    Pass { completed: usize },
    /// Some task failed or hit an exception (final: the try has failed).
    Fail {
        failed: Vec<GroupTask>,
        unresolved: usize,
    },
    /// Some task is not resolved yet, or the group is still empty.
    Pending { counts: BTreeMap<TaskState, usize> },
}

/// The outcome of a task group: any failed or exception → fail, naming them; else any
/// unresolved (or no task yet) → pending, with counts per state; else pass.
pub fn outcome(tasks: &[GroupTask]) -> Outcome {
    let failed: Vec<GroupTask> = tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Failed | TaskState::Exception))
        .cloned()
        .collect();
    let completed = tasks
        .iter()
        .filter(|t| t.state == TaskState::Completed)
        .count();
    let unresolved = tasks.len() - completed - failed.len();
    if !failed.is_empty() {
        Outcome::Fail { failed, unresolved }
    } else if unresolved > 0 || tasks.is_empty() {
        Outcome::Pending {
            counts: counts(tasks),
        }
    } else {
        Outcome::Pass { completed }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Pass { completed } => write!(f, "passed: all {completed} tasks completed"),
            Outcome::Fail { failed, unresolved } => {
                write!(f, "failed: {}", named(failed))?;
                match unresolved {
                    0 => Ok(()),
                    n => write!(f, "; {n} not resolved"),
                }
            }
            Outcome::Pending { counts } if counts.is_empty() => f.write_str("pending: no task yet"),
            Outcome::Pending { counts } => {
                let parts: Vec<String> = counts
                    .iter()
                    .map(|(s, n)| format!("{n} {}", s.as_str()))
                    .collect();
                write!(f, "pending: {}", parts.join(", "))
            }
        }
    }
}

/// Whether the group needs no more waiting: it has tasks, none pending or running, and either
/// all completed or some failed (what is still unscheduled then waits on a failed task and
/// would only run out its deadline).
pub fn settled(tasks: &[GroupTask]) -> bool {
    !tasks.is_empty()
        && !tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
        && match outcome(tasks) {
            Outcome::Pass { .. } | Outcome::Fail { .. } => true,
            Outcome::Pending { .. } => false,
        }
}

/// The tasks not resolved yet (to cancel when the try stops early).
pub fn unresolved(tasks: &[GroupTask]) -> Vec<&GroupTask> {
    tasks
        .iter()
        .filter(|t| {
            matches!(
                t.state,
                TaskState::Unscheduled | TaskState::Pending | TaskState::Running
            )
        })
        .collect()
}

/// How long to wait before looking at the task group again, `elapsed` into the wait: a
/// twentieth of it, between 1.2 s and 15 s. A change is seen within 5 % of the time waited
/// (a task group that takes an hour is listed every 15 s, one that takes a minute every 3 s).
pub fn poll_interval(elapsed: Duration) -> Duration {
    (elapsed / 20).clamp(Duration::from_millis(1200), Duration::from_secs(15))
}

/// `build (bQk8…, failed); test (aC1x…, exception)`: each task's name, id and state.
pub fn named(tasks: &[GroupTask]) -> String {
    let names: Vec<String> = tasks
        .iter()
        .map(|t| match &t.name {
            Some(n) => format!("{n} ({}, {})", t.task_id, t.state.as_str()),
            None => format!("{} ({})", t.task_id, t.state.as_str()),
        })
        .collect();
    names.join("; ")
}

/// How long the wait lasts: the timeout (the tasks' deadline) less a tenth of it, at most
/// 10 s, so that tc-ami cancels what is unresolved itself rather than racing the Queue, which
/// resolves it `deadline-exceeded` at the deadline.
pub fn wait_limit(timeout: Duration) -> Duration {
    timeout - (timeout / 10).min(Duration::from_secs(10))
}

/// The page of a task in the Taskcluster UI: `<root URL>/tasks/<taskId>`.
pub fn task_url(root_url: &str, task_id: &str) -> String {
    format!("{}/tasks/{task_id}", root_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::managed::TC_ADMIN_DEFAULT_PREFIX;
    use crate::pool::definition;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-11-24T22:00:00Z".parse().unwrap()
    }

    #[test]
    fn short_ids_are_eight_base36_characters() {
        assert_eq!(short_id(0), "00000000");
        assert_eq!(short_id(35), "z0000000");
        assert_eq!(short_id(36), "01000000");
        let s = short_id(u64::MAX);
        assert_eq!(s.len(), 8);
        assert!(
            s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn try_pool_ids() {
        assert_eq!(
            try_pool_id("proj-servo/win2016", "k3x9q2ab").unwrap(),
            "proj-servo/win2016-try-k3x9q2ab"
        );
        // 38 characters exactly, untouched.
        let name = "a".repeat(25);
        let id = try_pool_id(&format!("proj-servo/{name}"), "k3x9q2ab").unwrap();
        assert_eq!(id.split_once('/').unwrap().1.len(), 38);
        assert!(id.ends_with("-try-k3x9q2ab"));
        // One more: the short id gives way first.
        let id = try_pool_id(&format!("proj-servo/{name}b"), "k3x9q2ab").unwrap();
        assert_eq!(id, format!("proj-servo/{name}b-try-k3x9q2a"));
        // A 38-character name: the short id is cut to 4, then the name.
        let long = format!("win2016-{}", "x".repeat(30));
        let id = try_pool_id(&format!("proj-servo/{long}"), "k3x9q2ab").unwrap();
        assert_eq!(id, format!("proj-servo/{}-try-k3x9", &long[..29]));
        // A cut that ends on `-` drops it.
        let dashed = format!("{}-{}", "w".repeat(28), "z".repeat(9));
        let id = try_pool_id(&format!("p/{dashed}"), "k3x9q2ab").unwrap();
        assert_eq!(id, format!("p/{}-try-k3x9", "w".repeat(28)));
    }

    #[test]
    fn every_try_pool_id_is_a_valid_worker_pool_id() {
        for name_len in 1..=WORKER_TYPE_MAX {
            let name: String = (0..name_len)
                .map(|i| if i % 5 == 4 { '-' } else { 'w' })
                .collect();
            let name = format!("{}w", &name[..name_len - 1]);
            for short_len in 1..=40 {
                let short = "7".repeat(short_len);
                let pool = format!("proj-servo/{name}");
                let id = try_pool_id(&pool, &short).unwrap();
                assert!(valid_worker_pool_id(&id), "{id}");
                let (_, wt) = id.split_once('/').unwrap();
                assert!(wt.contains(TRY_INFIX), "{id}");
                let kept = wt.rsplit('-').next().unwrap().len();
                assert!(kept >= short_len.min(MIN_SHORT_ID), "{id}");
            }
        }
    }

    #[test]
    fn try_pool_id_errors() {
        assert_eq!(
            try_pool_id("win2016", "abcd"),
            Err(TryError::BadPoolId("win2016".into()))
        );
        assert!(try_pool_id("proj-servo/Win2016", "abcd").is_err());
        assert_eq!(
            try_pool_id("proj-servo/win2016", "AB"),
            Err(TryError::BadShortId("AB".into()))
        );
        assert!(try_pool_id("proj-servo/win2016", "").is_err());
        assert!(try_pool_id("proj-servo/win2016", "ab-c").is_err());
    }

    /// Servo's win2016 pool as worker-manager serves it: the config that
    /// servo/taskcluster-config's worker_pools.py `aws_windows` makes from
    /// config/worker-pools.yml (commit 2646f467: min 1, max 10, us-west-2
    /// ami-09fcb40b5d2426c46, c5.xlarge), with the deploymentId that code computes (sha256 of
    /// the launch config) and the description tc-admin writes for an empty one; fields in the
    /// service's order, with the id and counts it adds.
    fn servo_live() -> Value {
        json!({
            "workerPoolId": "proj-servo/win2016",
            "providerId": "community-tc-workers-aws",
            "description": TC_ADMIN_DEFAULT_PREFIX,
            "created": "2026-01-01T00:00:00.000Z",
            "lastModified": "2026-11-01T00:00:00.000Z",
            "config": {
                "maxCapacity": 10,
                "minCapacity": 1,
                "launchConfigs": [{
                    "region": "us-west-2",
                    "launchConfig": {
                        "ImageId": "ami-09fcb40b5d2426c46",
                        "InstanceType": "c5.xlarge",
                        "InstanceMarketOptions": {"MarketType": "spot"}
                    },
                    "workerConfig": {"genericWorker": {"config": {
                        "ed25519SigningKeyLocation": "C:\\generic-worker\\generic-worker-ed25519-signing-key.key",
                        "taskclusterProxyExecutable": "C:\\generic-worker\\taskcluster-proxy.exe",
                        "livelogExecutable": "C:\\generic-worker\\livelog.exe",
                        "workerTypeMetadata": {},
                        "sentryProject": "generic-worker",
                        "wstAudience": "communitytc",
                        "wstServerURL": "https://community-websocktunnel.services.mozilla.com",
                        "checkForNewDeploymentEverySecs": 600,
                        "idleTimeoutSecs": 14400,
                        "shutdownMachineOnIdle": true,
                        "deploymentId": "06a1ca75cb2f36be433e110f1dbd804ba07eaaea9c51c72afe029c2b235f7969"
                    }}},
                    "capacityPerInstance": 1,
                    "workerManager": {"launchConfigId": "lc-1c8d4f2e9a7b3c5d6e0f"}
                }]
            },
            "owner": "servo-ops@mozilla.com",
            "emailOnError": false,
            "currentCapacity": 1, "requestedCount": 0, "runningCount": 1, "stoppingCount": 0,
            "stoppedCount": 0, "requestedCapacity": 0, "runningCapacity": 1,
            "stoppingCapacity": 0, "stoppedCapacity": 0
        })
    }

    fn images(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(r, i)| (r.to_string(), i.to_string()))
            .collect()
    }

    fn spec<'a>(images: &'a BTreeMap<String, String>, max: u64) -> TryPoolSpec<'a> {
        TryPoolSpec {
            source_pool_id: "proj-servo/win2016",
            images,
            max_capacity: max,
            now: now(),
            timeout: Duration::from_secs(2 * 3600),
        }
    }

    #[test]
    fn the_temporary_pool_definition() {
        let imgs = images(&[("us-west-2", "ami-040db55391fa01dd7")]);
        let def = definition(&servo_live());
        let tmp = try_pool_definition(&def, &spec(&imgs, 2)).unwrap();
        let keys: Vec<&str> = tmp
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            vec![
                "providerId",
                "description",
                "config",
                "owner",
                "emailOnError"
            ]
        );
        let config = &tmp["config"];
        assert_eq!(
            (config["minCapacity"].clone(), config["maxCapacity"].clone()),
            (json!(0), json!(2))
        );
        let lc = &config["launchConfigs"][0];
        assert_eq!(lc["launchConfig"]["ImageId"], "ami-040db55391fa01dd7");
        assert!(
            lc.get("workerManager").is_none(),
            "fresh launch config ids: {lc}"
        );
        let gw = &lc["workerConfig"]["genericWorker"]["config"];
        assert_eq!(gw["deploymentId"], "ami-040db55391fa01dd7-20261124T220000Z");
        assert_eq!(gw["idleTimeoutSecs"], 14400);
        assert_eq!(
            lc["launchConfig"]["InstanceMarketOptions"],
            json!({"MarketType": "spot"})
        );
        assert_eq!(
            tmp["description"],
            "Temporary pool made by `tc-ami try` at 2026-11-24T22:00:00Z for at most 2h, to try \
             ami-040db55391fa01dd7 in us-west-2 from proj-servo/win2016. `tc-ami cleanup` \
             removes it after that time if it is left behind."
        );
        assert_eq!(made_at(&tmp), Some((now(), Duration::from_secs(7200))));
        assert_eq!(made_at(&def), None);
        assert_eq!(tmp["providerId"], "community-tc-workers-aws");
        assert!(is_try_pool("proj-servo/win2016-try-k3x9q2ab", &tmp));
        assert!(!is_try_pool("proj-servo/win2016", &tmp));
        assert!(!is_try_pool("proj-servo/win2016-try-k3x9q2ab", &def));
    }

    #[test]
    fn the_live_images_keep_the_content_but_still_lose_their_ids() {
        let imgs = images(&[("us-west-2", "ami-09fcb40b5d2426c46")]);
        let def = definition(&servo_live());
        let tmp = try_pool_definition(&def, &spec(&imgs, 1)).unwrap();
        let lc = &tmp["config"]["launchConfigs"][0];
        assert!(lc.get("workerManager").is_none());
        assert_eq!(
            lc["workerConfig"]["genericWorker"]["config"]["deploymentId"],
            "06a1ca75cb2f36be433e110f1dbd804ba07eaaea9c51c72afe029c2b235f7969"
        );
    }

    #[test]
    fn the_temporary_pool_refuses_what_cannot_work() {
        let def = definition(&servo_live());
        let none = images(&[("us-east-1", "ami-040db55391fa01dd7")]);
        let err = try_pool_definition(&def, &spec(&none, 2)).unwrap_err();
        assert!(
            matches!(err, TryError::Pool(PoolError::NoImageForRegion { .. })),
            "{err}"
        );
        let imgs = images(&[("us-west-2", "ami-040db55391fa01dd7")]);
        assert_eq!(
            try_pool_definition(&def, &spec(&imgs, 0)),
            Err(TryError::ZeroCapacity)
        );
    }

    #[test]
    fn slug_ids() {
        assert_eq!(slug_id([0; 16]), "AAAAAAAAQACAAAAAAAAAAA");
        assert_eq!(slug_id([0xff; 16]), "f_______T_-__________w");
        for seed in 0..=255u8 {
            let bytes: [u8; 16] =
                std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 17));
            let id = slug_id(bytes);
            assert!(is_slug_id(&id), "{id}");
            assert!(!id.starts_with('-'), "{id}");
        }
        assert!(!is_slug_id("AAAAAAAAAACAAAAAAAAAAA"), "version nibble");
        assert!(!is_slug_id("AAAAAAAAQAAAAAAAAAAAAA"), "variant bits");
        assert!(!is_slug_id("AAAAAAAAQACAAAAAAAAAAB"), "last character");
        assert!(!is_slug_id("AAAAAAAAQACAAAAAAAAAA"), "length");
        assert!(!is_slug_id("AAAAAAAAQACAAAAAAAAA=A"), "alphabet");
    }

    /// The task of servo/taskcluster-config's `config/hooks.yml` (hook project-servo/daily),
    /// verbatim: the decision task Servo's `try_ami` submits. Its `$fromNow` deadline and
    /// expiry are json-e, which tc-ami replaces.
    const SERVO_DAILY_TASK: &str = r#"provisionerId: proj-servo
workerType: docker
metadata:
  name: "Servo daily: decision task. On failure, ping SimonSapin"
  description: ""
  owner: servo-ops@mozilla.com
  source: https://github.com/servo/taskcluster-config/blob/master/config/hooks.yml
#    routes:
#      - notify.irc-channel.#servo.on-failed
scopes:
  - assume:hook-id:project-servo/daily
expires:
  $fromNow: 3 months
deadline:
  $fromNow: 12 hours
payload:
  maxRunTime: 600
  image: "servobrowser/taskcluster-bootstrap:decision-task\
    @sha256:28045b7ec0485ef363f8cb14f194008b47e9ede99f2ea40a1e945e921fce976e"
  features:
    taskclusterProxy: true
  command:
    - /bin/bash
    - "--login"
    - "-e"
    - "-c"
    - >-
      git init repo &&
      cd repo &&
      git fetch --depth 1 "$GIT_URL" "$GIT_REF" &&
      git reset --hard FETCH_HEAD &&
      python3 etc/taskcluster/decision_task.py
  env:
    GIT_URL: https://github.com/servo/servo.git
    GIT_REF: refs/heads/master
    TASK_FOR: daily
    TASK_OWNER: servo-ops@mozilla.com
    TASK_SOURCE: https://github.com/servo/taskcluster-config/blob/master/config/hooks.yml
"#;

    const TASK_ID: &str = "AAAAAAAAQACAAAAAAAAAAA";

    fn setup<'a>(file: &'a str) -> TaskSetup<'a> {
        TaskSetup {
            file,
            task_id: TASK_ID,
            try_pool_id: "proj-servo/win2016-try-k3x9q2ab",
            now: now(),
            timeout: Duration::from_secs(2 * 3600),
            expires_after_deadline: Duration::from_secs(14 * 24 * 3600),
        }
    }

    #[test]
    fn reads_yaml_and_json_task_files() {
        let task = parse_task_file("daily.yml", SERVO_DAILY_TASK).unwrap();
        let keys: Vec<&str> = task
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            vec![
                "provisionerId",
                "workerType",
                "metadata",
                "scopes",
                "expires",
                "deadline",
                "payload"
            ]
        );
        assert_eq!(
            task["payload"]["image"],
            "servobrowser/taskcluster-bootstrap:decision-task@sha256:28045b7ec0485ef363f8cb14f194008b47e9ede99f2ea40a1e945e921fce976e"
        );
        let json_task = parse_task_file("t.JSON", &task.to_string()).unwrap();
        assert_eq!(json_task, task);
        let err = parse_task_file("try-task.yml", "payload: [unclosed\n  x").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("try-task.yml: not a valid task file: "),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            parse_task_file("t.json", "{")
                .unwrap_err()
                .to_string()
                .starts_with("t.json: ")
        );
    }

    #[test]
    fn prepares_servo_s_decision_task_for_the_temporary_pool() {
        let task = parse_task_file("daily.yml", SERVO_DAILY_TASK).unwrap();
        let t = prepare_task(&task, &setup("daily.yml")).unwrap();
        assert_eq!(t["provisionerId"], "proj-servo");
        assert_eq!(t["workerType"], "win2016-try-k3x9q2ab");
        assert_eq!(t["taskQueueId"], "proj-servo/win2016-try-k3x9q2ab");
        assert_eq!(t["created"], "2026-11-24T22:00:00.000Z");
        assert_eq!(t["deadline"], "2026-11-25T00:00:00.000Z");
        assert_eq!(t["expires"], "2026-12-09T00:00:00.000Z");
        assert_eq!(t["taskGroupId"], TASK_ID);
        let env = &t["payload"]["env"];
        assert_eq!(env[ENV_VAR], "proj-servo/win2016-try-k3x9q2ab");
        assert_eq!(env["TASK_FOR"], "daily");
        let keys: Vec<&str> = t.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "provisionerId",
                "workerType",
                "metadata",
                "scopes",
                "expires",
                "deadline",
                "payload",
                "taskQueueId",
                "created",
                "taskGroupId"
            ]
        );
        assert_eq!(t["metadata"], task["metadata"]);
        assert_eq!(t["payload"]["command"], task["payload"]["command"]);
    }

    /// A generic-worker task that names only its queue (the `try-task.yml` shape of issue 12).
    fn generic_worker_task() -> Value {
        json!({
            "taskQueueId": "proj-servo/win2016",
            "taskGroupId": "bQk8Zk3pT1ybqv3l9x2r0w",
            "metadata": {
                "name": "tc-ami try: tools",
                "description": "Checks the tools the image promises",
                "owner": "servo-ops@mozilla.com",
                "source": "https://github.com/servo/servo"
            },
            "payload": {
                "command": ["git --version", "python --version"],
                "maxRunTime": 600
            }
        })
    }

    #[test]
    fn prepares_a_queue_only_task_and_keeps_its_group() {
        let t = prepare_task(&generic_worker_task(), &setup("try-task.yml")).unwrap();
        assert_eq!(t["taskQueueId"], "proj-servo/win2016-try-k3x9q2ab");
        assert!(t.get("provisionerId").is_none() && t.get("workerType").is_none());
        assert_eq!(t["taskGroupId"], "bQk8Zk3pT1ybqv3l9x2r0w");
        assert_eq!(
            t["payload"]["env"],
            json!({ENV_VAR: "proj-servo/win2016-try-k3x9q2ab"})
        );
    }

    type Edit = fn(&mut Value);

    fn prepare_err(edit: Edit) -> String {
        let mut task = generic_worker_task();
        edit(&mut task);
        prepare_task(&task, &setup("try-task.yml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_the_file_and_the_field_that_does_not_fit() {
        let cases: Vec<(Edit, &str)> = vec![
            (
                |t| {
                    t["metadata"].as_object_mut().unwrap().remove("source");
                },
                "try-task.yml: `metadata.source` is required (a string)",
            ),
            (
                |t| t["metadata"]["source"] = json!("servo/servo"),
                "try-task.yml: `metadata.source` must start with https://, http://, ssh:// or git@",
            ),
            (
                |t| t["metadata"]["name"] = json!("n".repeat(256)),
                "try-task.yml: `metadata.name` must be at most 255 characters",
            ),
            (
                |t| {
                    t.as_object_mut().unwrap().remove("metadata");
                },
                "try-task.yml: `metadata` is required",
            ),
            (
                |t| t["taskId"] = json!(TASK_ID),
                "try-task.yml: `taskId` is not a field of a task definition (the Queue's create-task-request schema allows no other fields)",
            ),
            (
                |t| t["retries"] = json!(50),
                "try-task.yml: `retries` must be an integer from 0 to 49",
            ),
            (
                |t| t["priority"] = json!("urgent"),
                "try-task.yml: `priority` must be one of highest, very-high, high, medium, low, very-low, lowest",
            ),
            (
                |t| t["taskGroupId"] = json!("not-a-slug"),
                "try-task.yml: `taskGroupId` must be a taskId (22-character slugid)",
            ),
            (
                |t| t["payload"]["maxRunTime"] = json!({"$eval": "600"}),
                "try-task.yml: `payload.maxRunTime.$eval` is a json-e construct: render the template first (tc-ami does not)",
            ),
            (
                |t| t["payload"]["command"][1] = json!({"$if": "x", "then": []}),
                "try-task.yml: `payload.command[1].$if` is a json-e construct: render the template first (tc-ami does not)",
            ),
            (
                |t| t["payload"] = json!([]),
                "try-task.yml: `payload` must be a mapping",
            ),
            (
                |t| t["payload"]["env"] = json!(["A=1"]),
                "try-task.yml: `payload.env` must be a mapping of variables",
            ),
            (
                |t| t["routes"] = json!([""]),
                "try-task.yml: `routes` must be a list of at most 64 strings of 1 to 249 characters",
            ),
        ];
        for (edit, expected) in cases {
            assert_eq!(prepare_err(edit), expected);
        }
        assert_eq!(
            prepare_task(&json!([1]), &setup("t.yml"))
                .unwrap_err()
                .to_string(),
            "t.yml: a task definition must be a mapping at the top level"
        );
    }

    #[test]
    fn the_timeout_must_fit_the_queue_s_deadline_limit() {
        let task = generic_worker_task();
        let mut s = setup("t.yml");
        s.timeout = MAX_DEADLINE;
        assert!(prepare_task(&task, &s).is_ok());
        s.timeout = MAX_DEADLINE + Duration::from_secs(1);
        assert_eq!(prepare_task(&task, &s), Err(TryError::BadTimeout(432_001)));
        s.timeout = Duration::ZERO;
        assert!(prepare_task(&task, &s).is_err());
        // No panic on an expiry beyond any date.
        s.timeout = MAX_DEADLINE;
        s.expires_after_deadline = Duration::from_secs(u64::MAX);
        let err = prepare_task(&task, &s).unwrap_err().to_string();
        assert_eq!(
            err,
            "t.yml: the task's expiry after its deadline is beyond any date"
        );
    }

    /// One `tasks` entry of listTaskGroup (`task-definition-and-status.json`): a full task and
    /// its status, with the test's own ids.
    fn entry(task_id: &str, name: &str, state: &str) -> Value {
        json!({
            "task": {
                "provisionerId": "proj-servo", "workerType": "win2016-try-k3x9q2ab",
                "taskQueueId": "proj-servo/win2016-try-k3x9q2ab", "schedulerId": "-",
                "projectId": "none", "taskGroupId": TASK_ID, "dependencies": [],
                "requires": "all-completed", "routes": [], "priority": "lowest", "retries": 5,
                "created": "2026-11-24T22:00:00.000Z", "deadline": "2026-11-25T00:00:00.000Z",
                "expires": "2026-12-09T00:00:00.000Z", "scopes": [], "payload": {},
                "metadata": {"name": name, "description": "", "owner": "servo-ops@mozilla.com",
                             "source": "https://github.com/servo/servo"},
                "tags": {}, "extra": {}
            },
            "status": {
                "taskId": task_id, "provisionerId": "proj-servo", "workerType": "win2016-try-k3x9q2ab",
                "taskQueueId": "proj-servo/win2016-try-k3x9q2ab", "schedulerId": "-",
                "projectId": "none", "taskGroupId": TASK_ID, "deadline": "2026-11-25T00:00:00.000Z",
                "expires": "2026-12-09T00:00:00.000Z", "retriesLeft": 5, "state": state, "runs": []
            }
        })
    }

    fn group(states: &[(&str, &str, &str)]) -> Vec<GroupTask> {
        let entries: Vec<Value> = states.iter().map(|(id, n, s)| entry(id, n, s)).collect();
        group_tasks(&entries).unwrap()
    }

    #[test]
    fn outcome_of_a_task_group() {
        let done = group(&[
            (TASK_ID, "decision", "completed"),
            ("bQk8Zk3pT1ybqv3l9x2r0w", "build", "completed"),
        ]);
        assert_eq!(outcome(&done), Outcome::Pass { completed: 2 });
        assert_eq!(outcome(&done).to_string(), "passed: all 2 tasks completed");

        let running = group(&[
            (TASK_ID, "decision", "completed"),
            ("bQk8Zk3pT1ybqv3l9x2r0w", "build", "running"),
            ("aC1x5yV0Qm6m3w2y8r4t7g", "test", "pending"),
            ("fNp2r3jbSQ2p0m1qX0xV6A", "lint", "unscheduled"),
        ]);
        assert_eq!(
            outcome(&running).to_string(),
            "pending: 1 unscheduled, 1 pending, 1 running, 1 completed"
        );

        let failed = group(&[
            (TASK_ID, "decision", "completed"),
            ("bQk8Zk3pT1ybqv3l9x2r0w", "build", "failed"),
            ("aC1x5yV0Qm6m3w2y8r4t7g", "test", "exception"),
            ("fNp2r3jbSQ2p0m1qX0xV6A", "lint", "running"),
        ]);
        let o = outcome(&failed);
        assert!(matches!(&o, Outcome::Fail { failed, unresolved: 1 } if failed.len() == 2));
        assert_eq!(
            o.to_string(),
            "failed: build (bQk8Zk3pT1ybqv3l9x2r0w, failed); test (aC1x5yV0Qm6m3w2y8r4t7g, exception); 1 not resolved"
        );
        assert_eq!(outcome(&[]).to_string(), "pending: no task yet");
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["outcome"], "fail");
        assert_eq!(v["failed"][0]["state"], "failed");
    }

    #[test]
    fn group_entries_must_have_the_queue_s_shape() {
        let mut bad = entry(TASK_ID, "decision", "completed");
        bad["status"]["state"] = json!("done");
        assert!(group_tasks(&[bad]).is_err());
        let mut nameless = entry(TASK_ID, "decision", "completed");
        nameless["task"].as_object_mut().unwrap().remove("metadata");
        assert_eq!(group_tasks(&[nameless]).unwrap()[0].name, None);
        assert_eq!(
            outcome(&group_tasks(&[entry(TASK_ID, "d", "failed")]).unwrap()).to_string(),
            format!("failed: d ({TASK_ID}, failed)")
        );
        let mut late = entry(TASK_ID, "d", "exception");
        late["status"]["runs"] = json!([{"runId": 0, "state": "exception",
            "reasonCreated": "scheduled", "reasonResolved": "deadline-exceeded",
            "scheduled": "2026-11-24T22:00:00.000Z", "resolved": "2026-11-25T00:00:00.000Z"}]);
        assert!(group_tasks(&[late]).unwrap()[0].deadline_exceeded);
        assert!(!group_tasks(&[entry(TASK_ID, "d", "exception")]).unwrap()[0].deadline_exceeded);
        assert_eq!(counts_text(&[]), "no task yet");
        assert_eq!(
            counts_text(&group_tasks(&[entry(TASK_ID, "d", "running")]).unwrap()),
            "1 running"
        );
    }

    #[test]
    fn task_links() {
        assert_eq!(
            task_url("https://community-tc.services.mozilla.com/", TASK_ID),
            format!("https://community-tc.services.mozilla.com/tasks/{TASK_ID}")
        );
        assert_eq!(
            task_url("http://127.0.0.1:8080", "x"),
            "http://127.0.0.1:8080/tasks/x"
        );
    }
    #[test]
    fn try_pool_ids_are_recognised_for_their_source_only() {
        assert!(is_try_pool_of(
            "proj-servo/win2016",
            "proj-servo/win2016-try-k3x9q2ab"
        ));
        assert!(!is_try_pool_of(
            "proj-servo/win2016",
            "proj-servo/win2016-staging-try-k3x9q2ab"
        ));
        assert!(is_try_pool_of(
            "proj-servo/win2016-staging",
            "proj-servo/win2016-staging-try-k3x9q2ab"
        ));
        assert!(!is_try_pool_of("proj-servo/win2016", "proj-servo/win2016"));
        assert!(!is_try_pool_of(
            "proj-servo/win2016",
            "other/win2016-try-k3x9q2ab"
        ));
        assert!(!is_try_pool_of(
            "proj-servo/win2016",
            "proj-servo/win2016-try-K3"
        ));
        // Cut ids: the short id, then the name.
        for name_len in 20..=38 {
            let source = format!("proj-servo/{}", "w".repeat(name_len));
            let id = try_pool_id(&source, "k3x9q2ab").unwrap();
            assert!(is_try_pool_of(&source, &id), "{id}");
            // Names cut to the same 29 characters give the same ids: such pools count for both.
            let other = format!("proj-servo/{}x", "w".repeat(name_len - 1));
            assert_eq!(is_try_pool_of(&other, &id), name_len >= 30, "{id}");
        }
    }

    fn listed(id: &str, made: &str, timeout: &str, provider: &str) -> Value {
        let images = images(&[("us-west-2", "ami-040db55391fa01dd7")]);
        let mut s = spec(&images, 2);
        s.now = made.parse().unwrap();
        s.timeout = parse_duration(timeout).unwrap();
        let mut def = try_pool_definition(&definition(&servo_live()), &s).unwrap();
        def["workerPoolId"] = json!(id);
        def["providerId"] = json!(provider);
        def
    }

    #[test]
    fn pools_left_by_a_try_once_their_timeout_has_passed() {
        let now: DateTime<Utc> = "2026-11-25T12:00:00Z".parse().unwrap();
        let aws = "community-tc-workers-aws";
        let mut foreign = listed(
            "proj-servo/win2016-try-aaaa1111",
            "2026-11-24T00:00:00Z",
            "2h",
            aws,
        );
        foreign["description"] = json!("someone's pool");
        let pools = vec![
            listed(
                "proj-servo/win2016-try-old00001",
                "2026-11-25T09:00:00Z",
                "2h",
                aws,
            ),
            listed(
                "proj-servo/win2016-try-running1",
                "2026-11-25T11:00:00Z",
                "2h",
                aws,
            ),
            listed(
                "proj-servo/win2016-try-deleted1",
                "2026-11-24T00:00:00Z",
                "2h",
                "null-provider",
            ),
            listed(
                "proj-servo/win2016-staging-try-old00002",
                "2026-11-24T00:00:00Z",
                "1h",
                aws,
            ),
            listed("proj-servo/win2016", "2026-11-24T00:00:00Z", "2h", aws),
            foreign,
            json!({"workerPoolId": "proj-servo/win2016-try-nodesc01", "providerId": aws}),
        ];
        let left = left_try_pools(&pools, &["proj-servo/win2016"], now);
        assert_eq!(
            left,
            vec![LeftPool {
                pool_id: "proj-servo/win2016-try-old00001".into(),
                source: "proj-servo/win2016".into(),
                made: "2026-11-25T09:00:00Z".parse().unwrap(),
                timeout_seconds: 7200,
            }]
        );
        let both = left_try_pools(
            &pools,
            &["proj-servo/win2016", "proj-servo/win2016-staging"],
            now,
        );
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].source, "proj-servo/win2016-staging");
    }

    #[test]
    fn a_group_settles_when_nothing_runs_and_the_outcome_is_known() {
        let t = |states: &[&str]| {
            let ids = [
                "AAAAAAAAQACAAAAAAAAAAA",
                "bQk8Zk3pT1ybqv3l9x2r0w",
                "aC1x5yV0Qm6m3w2y8r4t7g",
            ];
            let tasks: Vec<(&str, &str, &str)> = states
                .iter()
                .enumerate()
                .map(|(i, s)| (ids[i], "t", *s))
                .collect();
            group(&tasks)
        };
        assert!(!settled(&[]));
        assert!(settled(&t(&["completed", "completed"])));
        assert!(!settled(&t(&["completed", "running"])));
        assert!(!settled(&t(&["failed", "running"])));
        assert!(settled(&t(&["failed", "unscheduled"])));
        assert!(!settled(&t(&["completed", "unscheduled"])));
        assert!(settled(&t(&["completed", "exception", "completed"])));
        let g = t(&["completed", "unscheduled", "running"]);
        let open: Vec<&str> = unresolved(&g).iter().map(|t| t.task_id.as_str()).collect();
        assert_eq!(open, ["bQk8Zk3pT1ybqv3l9x2r0w", "aC1x5yV0Qm6m3w2y8r4t7g"]);
    }

    #[test]
    fn the_wait_ends_a_little_before_the_deadline() {
        let s = Duration::from_secs;
        assert_eq!(wait_limit(s(2)), Duration::from_millis(1800));
        assert_eq!(wait_limit(s(7200)), s(7190));
    }

    #[test]
    fn the_group_is_listed_more_rarely_as_the_wait_grows() {
        let s = Duration::from_secs;
        assert_eq!(poll_interval(s(0)), Duration::from_millis(1200));
        assert_eq!(poll_interval(s(60)), s(3));
        assert_eq!(poll_interval(s(3600)), s(15));
    }
}
