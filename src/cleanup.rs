//! Cleanup planning (pure): which of tc-ami's images to deregister, with every snapshot of
//! every block device, which leftovers of interrupted builds to remove, and which password
//! secrets go with the images, each with why.
//!
//! The rules, in the order they protect:
//! - only what tc-ami made is ever a candidate: images, instances, security groups, key pairs
//!   and snapshots carrying both `tc-ami:build-id` and `tc-ami:worker-type` (or, for a debug
//!   instance with its group and key pair, `tc-ami:debug-id` instead of the build id), of a worker type in
//!   the [`Policy`] and in one of that worker type's regions;
//! - an image that any pool needs ([`Protected`], from [`PoolNeeds`]) is kept, whatever its
//!   worker type: the ImageId of every launch config of every pool read, the rollback target of
//!   each pool, and the images of the newest `keep_deployments` records of each pool's history;
//! - the `keep` newest available images of each worker type in each region are kept;
//! - anything whose build may still be running is kept ([`BuildEnd`]): until its
//!   `tc-ami:expires-at` tag, or without the tag, while younger than the cleaning machine's
//!   [`in_flight_window`];
//! - anything whose age cannot be told is kept.
//!
//! The rest is deleted. An image goes with the snapshots of all its block devices and the
//! tc-ami snapshots whose description names it; a tc-ami snapshot that no image uses is a
//! leftover too. A build's password secret goes once none of its images stays.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::config::WorkerType;
use crate::duration::{format_age, format_duration};
use crate::history::{History, Images, plan_rollback};
use crate::model::inventory::{Inventory, Kind, Resource};
use crate::model::tags::{
    BUILD_ID, CREATED_AT, DEBUG_ID, EXPIRES_AT, SOURCE_IMAGE_ID, WORKER_TYPE,
};
use crate::model::{Image, ImageState, InstanceStateName, parse_ec2_time};
use crate::pool::{launch_config_images, live_images};
use crate::text::table;

/// How many of the newest images per worker type and region `cleanup` keeps by default.
pub const DEFAULT_KEEP: usize = 3;

/// How many of the newest deployments of each pool's history `cleanup` keeps by default.
pub const DEFAULT_KEEP_DEPLOYMENTS: usize = 3;

/// How long after it started a build may still be running: `build_timeout` for the guest,
/// then `image_timeout` for the image and `image_timeout` again for its copies. The build
/// writes its start plus this as `tc-ami:expires-at`; `cleanup` uses its own config's window
/// only for what carries no such tag (built by an older tc-ami).
pub fn in_flight_window(wt: &WorkerType) -> Duration {
    wt.build_timeout
        .saturating_add(wt.image_timeout.saturating_mul(2))
}

/// `start + window`, or None when that is past what a date can hold.
pub fn expires_at(start: DateTime<Utc>, window: Duration) -> Option<DateTime<Utc>> {
    chrono::Duration::from_std(window)
        .ok()
        .and_then(|d| start.checked_add_signed(d))
}

/// The `tc-ami:expires-at` value: RFC 3339, UTC, whole seconds (`2026-11-24T15:10:01Z`).
pub fn format_expires_at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The `tc-ami:expires-at` tag, when there is one and it is an RFC 3339 time.
pub fn parse_expires_at(tags: &BTreeMap<String, String>) -> Option<DateTime<Utc>> {
    tags.get(EXPIRES_AT).and_then(|t| parse_ec2_time(t.trim()))
}

/// When the build that made a resource can no longer be running, and how that was told.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BuildEnd {
    /// Its `tc-ami:expires-at` tag.
    Tagged(DateTime<Utc>),
    /// No (valid) tag: its creation time plus the cleaning machine's window.
    Window {
        created: DateTime<Utc>,
        window: Duration,
    },
    /// Neither a tag nor a creation time.
    Unknown,
}

impl BuildEnd {
    pub fn of(
        tags: &BTreeMap<String, String>,
        created: Option<DateTime<Utc>>,
        window: Duration,
    ) -> BuildEnd {
        match (parse_expires_at(tags), created) {
            (Some(t), _) => BuildEnd::Tagged(t),
            (None, Some(created)) => BuildEnd::Window { created, window },
            (None, None) => BuildEnd::Unknown,
        }
    }

    /// The time; None for unknown, or a window past what a date can hold (never ends).
    fn at(&self) -> Option<DateTime<Utc>> {
        match *self {
            BuildEnd::Tagged(t) => Some(t),
            BuildEnd::Window { created, window } => expires_at(created, window),
            BuildEnd::Unknown => None,
        }
    }

    fn window_seconds(&self) -> Option<u64> {
        match self {
            BuildEnd::Window { window, .. } => Some(window.as_secs()),
            _ => None,
        }
    }

    /// The later of two ends (a build's resources are judged together); an unknown end
    /// yields to a known one.
    fn later(self, other: BuildEnd) -> BuildEnd {
        match (self, other) {
            (BuildEnd::Unknown, x) | (x, BuildEnd::Unknown) => x,
            (a, b) => match (a.at(), b.at()) {
                (None, _) => a,
                (_, None) => b,
                (Some(x), Some(y)) if y > x => b,
                _ => a,
            },
        }
    }

    /// Why it is kept, while its build may still be running (or its age is unknown).
    fn keeps(&self, now: DateTime<Utc>) -> Option<Why> {
        if let BuildEnd::Unknown = self {
            return Some(Why::UnknownAge);
        }
        let running = match (self, self.at()) {
            // A creation time in the future (clock skew) counts as young.
            (BuildEnd::Window { created, .. }, _) if *created > now => true,
            (_, None) => true,
            (_, Some(end)) => now < end,
        };
        running.then(|| Why::MayBeInProgress {
            until: self.at(),
            window_seconds: self.window_seconds(),
        })
    }
}

/// One worker type whose resources the cleanup may delete.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerScope {
    pub worker_type: String,
    /// Its build and copy regions and the regions of its pool.
    pub regions: BTreeSet<String>,
    /// [`in_flight_window`] of the worker type: for resources without `tc-ami:expires-at`.
    pub window: Duration,
    /// Its `password_secret_prefix`: the builds' passwords are in `<prefix>/<image id>`.
    pub password_secret_prefix: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// The newest available images kept per worker type and region.
    pub keep: usize,
    /// The newest deployments of each pool's history whose images are kept (for the reason
    /// text; the images themselves are in [`Protected`]).
    pub keep_deployments: usize,
    pub now: DateTime<Utc>,
    /// The worker types cleaned up, by name. Anything of another worker type is left alone.
    pub scopes: BTreeMap<String, WorkerScope>,
}

impl Policy {
    /// The scope a resource in `region` with these tags falls in: it carries tc-ami's build
    /// tags, of a worker type cleaned up, in one of that worker type's regions.
    fn scope_of(&self, tags: &BTreeMap<String, String>, region: &str) -> Option<&WorkerScope> {
        launch_of(tags)?;
        let scope = self.scopes.get(tags.get(WORKER_TYPE)?)?;
        scope.regions.contains(region).then_some(scope)
    }

    /// The same for an image: only a build makes images.
    fn image_scope_of(
        &self,
        tags: &BTreeMap<String, String>,
        region: &str,
    ) -> Option<&WorkerScope> {
        tags.get(BUILD_ID)?;
        self.scope_of(tags, region)
    }
}

/// The launch that made a resource: its build (`tc-ami:build-id`), or for a debug instance
/// with its group and key pair, `tc-ami:debug-id` (judged as a build: until its
/// `tc-ami:expires-at`, launch + TTL).
fn launch_of(tags: &BTreeMap<String, String>) -> Option<&String> {
    tags.get(BUILD_ID).or_else(|| tags.get(DEBUG_ID))
}

/// Why something is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Why {
    /// Kept: the ImageId of one of the pool's launch configs (any of them, in any region).
    Live { pool: String },
    /// Kept: an image of the deployment before the live one (what `rollback` puts back).
    RollbackTarget { pool: String },
    /// Kept: an image of one of the newest deployments recorded in the pool's history.
    Deployed { pool: String, seq: u64 },
    /// Kept: among the `of` newest available images of its worker type in its region.
    Newest { rank: usize, of: usize },
    /// Kept: its build may still be running, until `until` (None: never ends), told by the
    /// `tc-ami:expires-at` tag, or without it (`window_seconds`) by the creation time and the
    /// cleaning machine's window.
    MayBeInProgress {
        until: Option<DateTime<Utc>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        window_seconds: Option<u64>,
    },
    /// Kept: no creation time and no `tc-ami:expires-at`, so no age.
    UnknownAge,
    /// Deleted: an image that is none of the above; `window_seconds` when it had no
    /// `tc-ami:expires-at` tag and the cleaning machine's window told that its build ended.
    Old {
        keep: usize,
        keep_deployments: usize,
        state: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        window_seconds: Option<u64>,
    },
    /// Deleted: an instance, group or key pair of a build that has ended (at `ended`, by its
    /// `tc-ami:expires-at`; or older than `window_seconds` without the tag).
    LeftByBuild {
        ended: Option<DateTime<Utc>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        window_seconds: Option<u64>,
    },
    /// Kept: the instance, group or key pair of a debug instance whose TTL runs until `until`
    /// (its `tc-ami:expires-at`).
    DebugInstanceUntil { until: DateTime<Utc> },
    /// Deleted: the instance, group or key pair of a debug instance whose TTL ended at `ended`.
    DebugInstanceEnded { ended: DateTime<Utc> },
    /// Deleted: a tc-ami snapshot that no image uses (its build ended as above).
    NoImage {
        ended: Option<DateTime<Utc>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        window_seconds: Option<u64>,
    },
}

impl Why {
    pub fn keeps(&self) -> bool {
        matches!(
            self,
            Why::Live { .. }
                | Why::RollbackTarget { .. }
                | Why::Deployed { .. }
                | Why::Newest { .. }
                | Why::MayBeInProgress { .. }
                | Why::DebugInstanceUntil { .. }
                | Why::UnknownAge
        )
    }

    fn ended(end: &BuildEnd) -> (Option<DateTime<Utc>>, Option<u64>) {
        (end.at(), end.window_seconds())
    }
}

/// How a build's end was told, for a reason's text.
fn ended_text(ended: &Option<DateTime<Utc>>, window_seconds: &Option<u64>) -> String {
    match (window_seconds, ended) {
        (Some(w), _) => fallback_text("older", *w),
        (None, Some(t)) => format!("its {EXPIRES_AT} {} has passed", format_expires_at(*t)),
        (None, None) => format!("its {EXPIRES_AT} has passed"),
    }
}

/// `no tc-ami:expires-at: older than this machine's 2h window`
fn fallback_text(than: &str, window_seconds: u64) -> String {
    format!(
        "no {EXPIRES_AT}: {than} than this machine's {} window",
        format_duration(Duration::from_secs(window_seconds))
    )
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Live { pool } => write!(f, "live in {pool}"),
            Why::RollbackTarget { pool } => write!(f, "rollback target of {pool}"),
            Why::Deployed { pool, seq } => write!(f, "deployed by #{seq} of {pool}"),
            Why::Newest { rank, of } => write!(f, "newest {rank} of {of}"),
            Why::MayBeInProgress {
                window_seconds: Some(w),
                ..
            } => write!(
                f,
                "may belong to a build in progress ({})",
                fallback_text("younger", *w)
            ),
            Why::MayBeInProgress {
                until: Some(t),
                window_seconds: None,
            } => write!(
                f,
                "may belong to a build in progress (until {}, its {EXPIRES_AT})",
                format_expires_at(*t)
            ),
            Why::MayBeInProgress {
                until: None,
                window_seconds: None,
            } => write!(f, "may belong to a build in progress"),
            Why::UnknownAge => write!(f, "no creation time: age unknown"),
            Why::Old {
                keep,
                keep_deployments,
                state,
                window_seconds,
            } => {
                write!(f, "not live, not a rollback target")?;
                if *keep_deployments > 0 {
                    write!(f, ", not in the {keep_deployments} newest deployments")?;
                }
                if *keep > 0 {
                    write!(f, ", not among the {keep} newest")?;
                }
                if state != ImageState::Available.as_str() {
                    write!(f, " ({state})")?;
                }
                if let Some(w) = window_seconds {
                    write!(f, " ({})", fallback_text("older", *w))?;
                }
                Ok(())
            }
            Why::LeftByBuild {
                ended,
                window_seconds,
            } => write!(
                f,
                "left by a build that ended ({})",
                ended_text(ended, window_seconds)
            ),
            Why::DebugInstanceUntil { until } => write!(
                f,
                "a debug instance's, until {} (its {EXPIRES_AT})",
                format_expires_at(*until)
            ),
            Why::DebugInstanceEnded { ended } => write!(
                f,
                "a debug instance's, whose TTL ended at {} (its {EXPIRES_AT})",
                format_expires_at(*ended)
            ),
            Why::NoImage {
                ended,
                window_seconds,
            } => write!(
                f,
                "used by no image ({})",
                ended_text(ended, window_seconds)
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Keep,
    Delete,
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub kind: Kind,
    pub region: String,
    pub id: String,
    pub name: String,
    pub worker_type: String,
    pub build_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub age_seconds: Option<u64>,
    /// Images: the snapshots deleted with it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshot_ids: Vec<String>,
    pub action: Action,
    /// Every reason it is kept, or the reason it is deleted.
    pub why: Vec<Why>,
}

impl Item {
    pub fn deletes(&self) -> bool {
        self.action == Action::Delete
    }

    pub fn why_text(&self) -> String {
        let mut text = self
            .why
            .iter()
            .map(Why::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        if self.kind == Kind::Image && self.deletes() {
            let n = self.snapshot_ids.len();
            text.push_str(&format!("; {n} snapshot{}", if n == 1 { "" } else { "s" }));
        }
        text
    }
}

/// One deployment of a pool's history whose images are kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptDeployment {
    pub seq: u64,
    pub images: Images,
}

/// What one worker pool needs, as read from worker-manager and its deployment history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolNeeds {
    #[serde(rename = "workerPoolId")]
    pub pool_id: String,
    /// The worker types of the config directory that deploy to it; empty for a pool found by
    /// listing the worker pools.
    pub worker_types: Vec<String>,
    /// The regions of its launch configs.
    #[serde(skip)]
    pub regions: BTreeSet<String>,
    /// Region → the ImageId of every launch config in it.
    pub live: BTreeMap<String, BTreeSet<String>>,
    /// What `rollback` would put back.
    pub rollback_target: Option<Images>,
    /// The newest deployments recorded in its history, newest first.
    pub deployments: Vec<KeptDeployment>,
    /// False when its history could not be read (a pool found by listing, without the scope
    /// to read its history): only its launch configs protect images.
    pub history_read: bool,
}

/// What `pool` (its definition, as [`crate::pool::definition`] gives it) and its deployment
/// history (None: not readable) need: every launch config's image, the rollback target and
/// the images of the `keep_deployments` newest records.
pub fn pool_needs(
    pool_id: &str,
    worker_types: Vec<String>,
    def: &Value,
    history: Option<&History>,
    keep_deployments: usize,
) -> PoolNeeds {
    let mut live: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut regions = BTreeSet::new();
    for (region, image) in launch_config_images(def) {
        regions.insert(region.clone());
        if let Some(image) = image {
            live.entry(region).or_default().insert(image);
        }
    }
    let (rollback_target, deployments) = match history {
        None => (None, Vec::new()),
        Some(h) => (
            plan_rollback(pool_id, h, &live_images(def))
                .ok()
                .map(|p| p.target),
            h.deployments()
                .rev()
                .take(keep_deployments)
                .map(|r| KeptDeployment {
                    seq: r.seq,
                    images: r.after.clone(),
                })
                .collect(),
        ),
    };
    PoolNeeds {
        pool_id: pool_id.to_string(),
        worker_types,
        regions,
        live,
        rollback_target,
        deployments,
        history_read: history.is_some(),
    }
}

impl PoolNeeds {
    /// Whether any of its launch configs runs one of `images`.
    pub fn names_any(&self, images: &BTreeSet<String>) -> bool {
        self.live.values().flatten().any(|i| images.contains(i))
    }
}

/// Images that must stay, whatever the worker type: image id → why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Protected {
    by_image: BTreeMap<String, BTreeSet<Why>>,
}

impl Protected {
    /// Everything the pools need.
    pub fn from_pools(pools: &[PoolNeeds]) -> Protected {
        let mut p = Protected::default();
        for pool in pools {
            p.add_live(&pool.pool_id, &pool.live);
            if let Some(target) = &pool.rollback_target {
                p.add_rollback_target(&pool.pool_id, target);
            }
            for d in &pool.deployments {
                p.add_deployment(&pool.pool_id, d.seq, &d.images);
            }
        }
        p
    }

    /// The images of a pool's launch configs (region → every ImageId there).
    pub fn add_live(&mut self, pool: &str, images: &BTreeMap<String, BTreeSet<String>>) {
        for id in images.values().flatten() {
            self.add(id, Why::Live { pool: pool.into() });
        }
    }

    /// The images `rollback` would put back into a pool (region → image id).
    pub fn add_rollback_target(&mut self, pool: &str, images: &Images) {
        for id in images.values() {
            self.add(id, Why::RollbackTarget { pool: pool.into() });
        }
    }

    /// The images a recorded deployment of a pool put there (region → image id).
    pub fn add_deployment(&mut self, pool: &str, seq: u64, images: &Images) {
        for id in images.values() {
            self.add(
                id,
                Why::Deployed {
                    pool: pool.into(),
                    seq,
                },
            );
        }
    }

    fn add(&mut self, id: &str, why: Why) {
        self.by_image.entry(id.to_string()).or_default().insert(why);
    }

    pub fn reasons(&self, image_id: &str) -> Vec<Why> {
        self.by_image
            .get(image_id)
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.by_image.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_image.is_empty()
    }

    /// What differs in `newer` for `images` (the candidates), one line per image: `ami-…: now
    /// live in P; no longer deployed by #4 of P`.
    pub fn changes(&self, newer: &Protected, images: &BTreeSet<String>) -> Vec<String> {
        let empty = BTreeSet::new();
        let ids: BTreeSet<&String> = self.by_image.keys().chain(newer.by_image.keys()).collect();
        ids.into_iter()
            .filter(|id| images.contains(*id))
            .filter_map(|id| {
                let before = self.by_image.get(id).unwrap_or(&empty);
                let after = newer.by_image.get(id).unwrap_or(&empty);
                let mut parts: Vec<String> = after
                    .difference(before)
                    .map(|w| format!("now {w}"))
                    .collect();
                parts.extend(before.difference(after).map(|w| format!("no longer {w}")));
                (!parts.is_empty()).then(|| format!("{id}: {}", parts.join("; ")))
            })
            .collect()
    }
}

/// A password secret to remove: every image of its build is deleted by the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRemoval {
    /// `<password_secret_prefix>/<the build region's image id>`.
    pub name: String,
    pub worker_type: String,
    pub build_id: String,
    /// (region, image id): the deletions it waits for; it is removed only if they all succeed.
    pub images: Vec<(String, String)>,
}

/// The whole plan: every candidate, kept or deleted, sorted by region, kind, newest first;
/// and the password secrets that go with the deleted images.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
    pub secrets: Vec<SecretRemoval>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub images_kept: usize,
    pub images_deleted: usize,
    /// Snapshots deleted with the images.
    pub image_snapshots_deleted: usize,
    pub instances: usize,
    pub security_groups: usize,
    pub key_pairs: usize,
    /// Snapshots no image uses.
    pub snapshots: usize,
    /// Leftovers kept because they may belong to a build in progress.
    pub leftovers_kept: usize,
    /// Password secrets removed with the images.
    pub password_secrets: usize,
}

impl Summary {
    pub fn deletes_anything(&self) -> bool {
        self.images_deleted
            + self.instances
            + self.security_groups
            + self.key_pairs
            + self.snapshots
            > 0
    }

    /// `3 images (4 snapshots, 1 password secret), 1 instance, 1 security group, 1 key pair`.
    pub fn deletions_text(&self) -> String {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let mut parts = Vec::new();
        if self.images_deleted > 0 {
            let mut with = count(self.image_snapshots_deleted, "snapshot");
            if self.password_secrets > 0 {
                with.push_str(&format!(
                    ", {}",
                    count(self.password_secrets, "password secret")
                ));
            }
            parts.push(format!("{} ({with})", count(self.images_deleted, "image")));
        }
        if self.instances > 0 {
            parts.push(count(self.instances, "instance"));
        }
        if self.security_groups > 0 {
            parts.push(count(self.security_groups, "security group"));
        }
        if self.key_pairs > 0 {
            parts.push(count(self.key_pairs, "key pair"));
        }
        if self.snapshots > 0 {
            parts.push(count(self.snapshots, "unused snapshot"));
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}

impl Plan {
    pub fn to_delete(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.deletes())
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary {
            password_secrets: self.secrets.len(),
            ..Summary::default()
        };
        for i in &self.items {
            match (i.kind, i.action) {
                (Kind::Image, Action::Keep) => s.images_kept += 1,
                (Kind::Image, Action::Delete) => {
                    s.images_deleted += 1;
                    s.image_snapshots_deleted += i.snapshot_ids.len();
                }
                (_, Action::Keep) => s.leftovers_kept += 1,
                (Kind::Instance, _) => s.instances += 1,
                (Kind::SecurityGroup, _) => s.security_groups += 1,
                (Kind::KeyPair, _) => s.key_pairs += 1,
                (Kind::Snapshot, _) => s.snapshots += 1,
            }
        }
        s
    }

    /// The items of `self` whose action differs from `before`'s (new items count as changed):
    /// (the item now, its action before).
    pub fn changed_since<'a>(&'a self, before: &Plan) -> Vec<(&'a Item, Option<Action>)> {
        let was: BTreeMap<(&str, &str), Action> = before
            .items
            .iter()
            .map(|i| ((i.region.as_str(), i.id.as_str()), i.action))
            .collect();
        self.items
            .iter()
            .filter_map(|i| {
                let old = was.get(&(i.region.as_str(), i.id.as_str())).copied();
                (old != Some(i.action)).then_some((i, old))
            })
            .collect()
    }
}

fn age_seconds(created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<u64> {
    created.map(|c| (now - c).num_seconds().max(0) as u64)
}

fn tag_time(tags: &BTreeMap<String, String>) -> Option<DateTime<Utc>> {
    tags.get(CREATED_AT).and_then(|t| parse_ec2_time(t))
}

fn tag(tags: &BTreeMap<String, String>, key: &str) -> String {
    tags.get(key).cloned().unwrap_or_default()
}

/// The image ids of every candidate image (tc-ami's, of a worker type cleaned, in one of its
/// regions): a listed pool that runs one of them must be read.
pub fn candidate_images(inventories: &[Inventory], policy: &Policy) -> BTreeSet<String> {
    inventories
        .iter()
        .flat_map(|inv| {
            inv.images
                .iter()
                .filter(|i| policy.image_scope_of(&i.tags, &inv.region).is_some())
                .map(|i| i.id.clone())
        })
        .collect()
}

/// The plan for tc-ami's images and the leftovers of interrupted builds in `inventories`.
pub fn plan_cleanup(inventories: &[Inventory], protected: &Protected, policy: &Policy) -> Plan {
    let mut items = plan_images(inventories, protected, policy);
    let secrets = password_secrets(inventories, &items, policy);
    items.extend(plan_leftovers(inventories, policy));
    items.sort_by(|a, b| {
        (&a.region, a.kind)
            .cmp(&(&b.region, b.kind))
            .then_with(|| b.created.cmp(&a.created))
            .then_with(|| b.name.cmp(&a.name))
            .then_with(|| b.id.cmp(&a.id))
    });
    Plan { items, secrets }
}

/// The password secrets of the builds none of whose images stays: a build stores its
/// password in `<prefix>/<image id of the build region>` (a copy names that image in
/// `tc-ami:source-image-id`); while a copy stays, so does the password.
fn password_secrets(
    inventories: &[Inventory],
    image_items: &[Item],
    policy: &Policy,
) -> Vec<SecretRemoval> {
    let tags: BTreeMap<(&str, &str), &BTreeMap<String, String>> = inventories
        .iter()
        .flat_map(|inv| {
            inv.images
                .iter()
                .map(|i| ((inv.region.as_str(), i.id.as_str()), &i.tags))
        })
        .collect();
    let mut builds: BTreeMap<(&str, &str), Vec<&Item>> = BTreeMap::new();
    for item in image_items {
        builds
            .entry((item.worker_type.as_str(), item.build_id.as_str()))
            .or_default()
            .push(item);
    }
    let mut out = Vec::new();
    for ((worker_type, build_id), items) in builds {
        let Some(prefix) = policy
            .scopes
            .get(worker_type)
            .and_then(|s| s.password_secret_prefix.as_deref())
        else {
            continue;
        };
        if build_id.is_empty() || items.iter().any(|i| !i.deletes()) {
            continue;
        }
        let images: Vec<(String, String)> = items
            .iter()
            .map(|i| (i.region.clone(), i.id.clone()))
            .collect();
        let sources: BTreeSet<&str> = items
            .iter()
            .map(|i| {
                tags.get(&(i.region.as_str(), i.id.as_str()))
                    .and_then(|t| t.get(SOURCE_IMAGE_ID))
                    .map_or(i.id.as_str(), String::as_str)
            })
            .collect();
        for source in sources {
            out.push(SecretRemoval {
                name: format!("{prefix}/{source}"),
                worker_type: worker_type.to_string(),
                build_id: build_id.to_string(),
                images: images.clone(),
            });
        }
    }
    out
}

/// tc-ami's images of the worker types in `policy`, each kept (with every reason) or deleted.
pub fn plan_images(inventories: &[Inventory], protected: &Protected, policy: &Policy) -> Vec<Item> {
    inventories
        .iter()
        .flat_map(|inv| plan_region_images(inv, protected, policy))
        .collect()
}

fn plan_region_images(inv: &Inventory, protected: &Protected, policy: &Policy) -> Vec<Item> {
    let mut seen = BTreeSet::new();
    let candidates: Vec<(&Image, &WorkerScope)> = inv
        .images
        .iter()
        .filter(|i| seen.insert(i.id.as_str()))
        .filter_map(|i| Some((i, policy.image_scope_of(&i.tags, &inv.region)?)))
        .collect();
    let newest = newest_images(&candidates, policy);
    // Snapshots of tc-ami that name an image in their description ("Created by
    // CreateImage(i-…) for ami-…", "Copied for DestinationAmi ami-…") go with it.
    let named = snapshots_by_named_image(inv);
    let naming = |image: &str| named.get(image).into_iter().flatten().copied();

    let mut items = Vec::new();
    for (image, scope) in candidates {
        let created = image.creation_date.or_else(|| tag_time(&image.tags));
        let end = BuildEnd::of(&image.tags, created, scope.window);
        let mut why = protected.reasons(&image.id);
        why.extend(newest.get(image.id.as_str()).cloned());
        why.extend(end.keeps(policy.now));
        let action = if why.is_empty() {
            why.push(Why::Old {
                keep: policy.keep,
                keep_deployments: policy.keep_deployments,
                state: image.state.to_string(),
                window_seconds: end.window_seconds(),
            });
            Action::Delete
        } else {
            Action::Keep
        };
        let mut snapshot_ids: BTreeSet<String> = image.snapshot_ids.iter().cloned().collect();
        snapshot_ids.extend(naming(&image.id).map(str::to_string));
        items.push(Item {
            kind: Kind::Image,
            region: inv.region.clone(),
            id: image.id.clone(),
            name: image.name.clone(),
            worker_type: scope.worker_type.clone(),
            build_id: tag(&image.tags, BUILD_ID),
            state: Some(image.state.to_string()),
            created,
            age_seconds: age_seconds(created, policy.now),
            snapshot_ids: snapshot_ids.into_iter().collect(),
            action,
            why,
        });
    }
    // A snapshot that an image staying in the region uses or names (any image, tc-ami's or
    // not) is never deleted with another one: it is needed (and EC2 would refuse).
    let deleted: BTreeSet<&str> = items
        .iter()
        .filter(|i| i.deletes())
        .map(|i| i.id.as_str())
        .collect();
    let staying: Vec<&Image> = inv
        .images
        .iter()
        .filter(|i| !deleted.contains(i.id.as_str()))
        .collect();
    let needed: BTreeSet<String> = staying
        .iter()
        .flat_map(|i| i.snapshot_ids.iter().map(String::as_str))
        .chain(staying.iter().flat_map(|i| naming(&i.id)))
        .map(str::to_string)
        .collect();
    for item in &mut items {
        item.snapshot_ids.retain(|s| !needed.contains(s));
    }
    items
}

/// The `keep` newest available images of each worker type among `candidates` (one region).
fn newest_images<'a>(
    candidates: &[(&'a Image, &WorkerScope)],
    policy: &Policy,
) -> BTreeMap<&'a str, Why> {
    let mut newest = BTreeMap::new();
    for scope in policy.scopes.values() {
        let mut available: Vec<&Image> = candidates
            .iter()
            .filter(|(i, s)| s.worker_type == scope.worker_type && i.is_available())
            .map(|(i, _)| *i)
            .collect();
        available.sort_by(|a, b| {
            b.creation_date
                .cmp(&a.creation_date)
                .then_with(|| b.name.cmp(&a.name))
                .then_with(|| b.id.cmp(&a.id))
        });
        for (rank, image) in available.iter().take(policy.keep).enumerate() {
            newest.insert(
                image.id.as_str(),
                Why::Newest {
                    rank: rank + 1,
                    of: policy.keep,
                },
            );
        }
    }
    newest
}

/// The later of EC2's creation time and the build's start: the younger, the safer.
fn latest_time(r: &Resource) -> Option<DateTime<Utc>> {
    match (r.created, tag_time(&r.tags)) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The image ids a snapshot description names: `ami-` and the letters and digits after it.
fn named_images(description: &str) -> impl Iterator<Item = &str> {
    description.match_indices("ami-").map(move |(at, _)| {
        let rest = &description[at + 4..];
        let len = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        &description[at..at + 4 + len]
    })
}

/// The region's tc-ami snapshots by the image ids their descriptions name.
fn snapshots_by_named_image(inv: &Inventory) -> BTreeMap<&str, Vec<&str>> {
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in inv.resources.iter().filter(|r| r.kind == Kind::Snapshot) {
        for image in named_images(&s.name) {
            out.entry(image).or_default().push(&s.id);
        }
    }
    out
}

/// Each build's end in a region: the latest of its leftovers' ends.
fn build_ends<'a>(inv: &'a Inventory, policy: &Policy) -> BTreeMap<&'a str, BuildEnd> {
    let mut build_end: BTreeMap<&str, BuildEnd> = BTreeMap::new();
    for r in &inv.resources {
        let (Some(build), Some(scope)) =
            (launch_of(&r.tags), policy.scope_of(&r.tags, &inv.region))
        else {
            continue;
        };
        let end = BuildEnd::of(&r.tags, latest_time(r), scope.window);
        let entry = build_end.entry(build.as_str()).or_insert(end);
        *entry = entry.later(end);
    }
    build_end
}

/// The instances, security groups and key pairs of builds that ended without removing them
/// (killed, machine lost), and tc-ami snapshots no image uses, of the worker types in `policy`.
pub fn plan_leftovers(inventories: &[Inventory], policy: &Policy) -> Vec<Item> {
    let mut items = Vec::new();
    for inv in inventories {
        let used: BTreeSet<&str> = inv
            .images
            .iter()
            .flat_map(|i| i.snapshot_ids.iter().map(String::as_str))
            .collect();
        let images: BTreeSet<&str> = inv.images.iter().map(|i| i.id.as_str()).collect();
        // A build's leftovers are judged together, by the latest of their ends (their
        // `tc-ami:expires-at`, or their times plus the window), so that a group is never
        // deleted while its instance stays.
        let end_of = |r: &Resource, window: Duration| BuildEnd::of(&r.tags, latest_time(r), window);
        let build_end = build_ends(inv, policy);
        for r in &inv.resources {
            let Some(scope) = policy.scope_of(&r.tags, &inv.region) else {
                continue;
            };
            if r.kind == Kind::Image
                || r.state.as_deref() == Some(InstanceStateName::Terminated.as_str())
            {
                continue;
            }
            if r.kind == Kind::Snapshot
                && (used.contains(r.id.as_str())
                    || named_images(&r.name).any(|image| images.contains(image)))
            {
                // An image's snapshot: it goes (or stays) with the image.
                continue;
            }
            let created = latest_time(r);
            let end = match r.kind {
                // A snapshot belongs to an image, not to the build's instance.
                Kind::Snapshot => end_of(r, scope.window),
                _ => launch_of(&r.tags)
                    .and_then(|b| build_end.get(b.as_str()).copied())
                    .unwrap_or_else(|| end_of(r, scope.window)),
            };
            let (ended, window_seconds) = Why::ended(&end);
            let (action, why) = match end.keeps(policy.now) {
                Some(why) => (Action::Keep, why),
                None if r.kind == Kind::Snapshot => (
                    Action::Delete,
                    Why::NoImage {
                        ended,
                        window_seconds,
                    },
                ),
                None => (
                    Action::Delete,
                    Why::LeftByBuild {
                        ended,
                        window_seconds,
                    },
                ),
            };
            let why = for_debug_instance(&r.tags, why);
            items.push(Item {
                kind: r.kind,
                region: inv.region.clone(),
                id: r.id.clone(),
                name: r.name.clone(),
                worker_type: scope.worker_type.clone(),
                build_id: tag(&r.tags, BUILD_ID),
                state: r.state.clone(),
                created,
                age_seconds: age_seconds(created, policy.now),
                snapshot_ids: Vec::new(),
                action,
                why: vec![why],
            });
        }
    }
    items
}

/// A debug instance's resources are kept or removed by their TTL: say so, rather than speak
/// of a build.
fn for_debug_instance(tags: &BTreeMap<String, String>, why: Why) -> Why {
    if tags.contains_key(BUILD_ID) || !tags.contains_key(DEBUG_ID) {
        return why;
    }
    match why {
        Why::MayBeInProgress {
            until: Some(until),
            window_seconds: None,
        } => Why::DebugInstanceUntil { until },
        Why::LeftByBuild {
            ended: Some(ended),
            window_seconds: None,
        } => Why::DebugInstanceEnded { ended },
        other => other,
    }
}

/// The plan as a table: region, resource, name, age, action and why, one line each.
pub fn render_plan(plan: &Plan) -> String {
    let rows = plan.items.iter().map(|i| {
        let action = match (i.kind, i.action) {
            (_, Action::Keep) => "keep",
            (Kind::Instance, Action::Delete) => "terminate",
            (_, Action::Delete) => "delete",
        };
        [
            i.region.clone(),
            i.id.clone(),
            i.name.clone(),
            format_age(i.age_seconds),
            action.to_string(),
            i.why_text(),
        ]
    });
    table(
        &["REGION", "RESOURCE", "NAME", "AGE", "ACTION", "WHY"],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = "servo-win2016";
    const WEST: &str = "us-west-2";
    const EAST: &str = "us-east-1";
    const HOUR: i64 = 3600;

    fn now() -> DateTime<Utc> {
        parse_ec2_time("2026-11-24T12:00:00Z").unwrap()
    }

    fn ago(seconds: i64) -> DateTime<Utc> {
        now() - chrono::Duration::seconds(seconds)
    }

    fn tags(wt: &str, build: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (WORKER_TYPE.to_string(), wt.to_string()),
            (BUILD_ID.to_string(), build.to_string()),
        ])
    }

    /// A tc-ami image of `wt`, `hours` old, with one snapshot per block device.
    fn image(id: &str, wt: &str, hours: i64, snapshots: &[&str]) -> Image {
        Image {
            id: id.into(),
            name: format!("tc-ami-{wt}-{id}"),
            state: "available".into(),
            creation_date: Some(ago(hours * HOUR)),
            owner_id: "123456789012".into(),
            root_device_name: Some("/dev/sda1".into()),
            snapshot_ids: snapshots.iter().map(|s| s.to_string()).collect(),
            tags: tags(wt, &format!("build-{id}")),
            state_reason: None,
        }
    }

    fn scope(wt: &str, regions: &[&str], window: Duration) -> (String, WorkerScope) {
        (
            wt.to_string(),
            WorkerScope {
                worker_type: wt.into(),
                regions: regions.iter().map(|r| r.to_string()).collect(),
                window,
                password_secret_prefix: None,
            },
        )
    }

    fn policy(keep: usize) -> Policy {
        Policy {
            keep,
            keep_deployments: 3,
            now: now(),
            scopes: BTreeMap::from([scope(W, &[WEST, EAST], Duration::from_secs(2 * 3600))]),
        }
    }

    fn inv(region: &str, images: Vec<Image>, resources: Vec<Resource>) -> Inventory {
        Inventory {
            region: region.into(),
            images,
            resources,
        }
    }

    /// `Protected::add_live` with one image per region.
    fn add_live(protected: &mut Protected, pool: &str, images: &BTreeMap<String, String>) {
        let images = images
            .iter()
            .map(|(r, i)| (r.clone(), BTreeSet::from([i.clone()])))
            .collect();
        protected.add_live(pool, &images);
    }

    /// Kept by the fallback: created `hours` ago, younger than the 2h window of `policy`.
    fn young_by_window(hours: i64) -> Why {
        Why::MayBeInProgress {
            until: Some(ago(hours * HOUR) + chrono::Duration::hours(2)),
            window_seconds: Some(7200),
        }
    }

    fn deleted(plan: &Plan) -> Vec<&str> {
        plan.to_delete().map(|i| i.id.as_str()).collect()
    }

    fn item<'a>(plan: &'a Plan, id: &str) -> &'a Item {
        plan.items.iter().find(|i| i.id == id).unwrap()
    }

    /// Ten images a day apart, `ami-0` newest, each with its own snapshot.
    fn ten_days(region: &str) -> Vec<Image> {
        (0..10)
            .map(|n| {
                image(
                    &format!("ami-{region}-{n}"),
                    W,
                    24 * (n + 1),
                    &[&format!("snap-{region}-{n}")],
                )
            })
            .collect()
    }

    #[test]
    fn keeps_the_newest_per_region_and_deletes_the_rest() {
        let plan = plan_cleanup(
            &[
                inv(WEST, ten_days(WEST), vec![]),
                inv(EAST, ten_days(EAST)[..2].to_vec(), vec![]),
            ],
            &Protected::default(),
            &policy(3),
        );
        // Each region counts for itself: the east's two images are both kept.
        let kept: Vec<&str> = plan
            .items
            .iter()
            .filter(|i| !i.deletes())
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(
            kept,
            [
                "ami-us-east-1-0",
                "ami-us-east-1-1",
                "ami-us-west-2-0",
                "ami-us-west-2-1",
                "ami-us-west-2-2"
            ]
        );
        assert_eq!(deleted(&plan).len(), 7);
        assert_eq!(
            item(&plan, "ami-us-west-2-1").why,
            [Why::Newest { rank: 2, of: 3 }]
        );
        let old = item(&plan, "ami-us-west-2-9");
        assert_eq!(old.action, Action::Delete);
        assert_eq!(old.snapshot_ids, ["snap-us-west-2-9"]);
        assert_eq!(old.age_seconds, Some(10 * 24 * 3600));
        // Sorted by region, then newest first.
        assert_eq!(plan.items[0].region, EAST);
        assert_eq!(plan.items[2].id, "ami-us-west-2-0");
        assert_eq!(plan.items.last().unwrap().id, "ami-us-west-2-9");
        let s = plan.summary();
        assert_eq!((s.images_kept, s.images_deleted), (5, 7));
        assert_eq!(s.image_snapshots_deleted, 7);
    }

    #[test]
    fn live_and_rollback_targets_are_kept_whatever_their_age_and_worker_type() {
        let mut protected = Protected::default();
        add_live(
            &mut protected,
            "proj-servo/win2016",
            &BTreeMap::from([
                (WEST.into(), "ami-us-west-2-7".into()),
                (EAST.into(), "ami-other".into()),
            ]),
        );
        protected.add_rollback_target(
            "proj-servo/win2016",
            &BTreeMap::from([(WEST.into(), "ami-us-west-2-9".into())]),
        );
        // Another pool, of another worker type, runs one of W's images.
        add_live(
            &mut protected,
            "proj-servo/win2016-staging",
            &BTreeMap::from([(WEST.into(), "ami-us-west-2-8".into())]),
        );
        let plan = plan_cleanup(&[inv(WEST, ten_days(WEST), vec![])], &protected, &policy(1));
        assert_eq!(
            item(&plan, "ami-us-west-2-7").why,
            [Why::Live {
                pool: "proj-servo/win2016".into()
            }]
        );
        assert_eq!(
            item(&plan, "ami-us-west-2-8").why,
            [Why::Live {
                pool: "proj-servo/win2016-staging".into()
            }]
        );
        assert_eq!(
            item(&plan, "ami-us-west-2-9").why,
            [Why::RollbackTarget {
                pool: "proj-servo/win2016".into()
            }]
        );
        assert_eq!(
            deleted(&plan),
            [1, 2, 3, 4, 5, 6].map(|n| format!("ami-us-west-2-{n}"))
        );
        // Live and newest at once: both reasons shown.
        add_live(
            &mut protected,
            "proj-servo/win2016",
            &BTreeMap::from([(WEST.into(), "ami-us-west-2-0".into())]),
        );
        let plan = plan_cleanup(&[inv(WEST, ten_days(WEST), vec![])], &protected, &policy(1));
        assert_eq!(
            item(&plan, "ami-us-west-2-0").why_text(),
            "live in proj-servo/win2016; newest 1 of 1"
        );
    }

    #[test]
    fn keep_zero_still_keeps_live_rollback_and_young_images() {
        let mut images = ten_days(WEST);
        images.push(image("ami-young", W, 1, &["snap-young"]));
        let mut protected = Protected::default();
        add_live(
            &mut protected,
            "p",
            &BTreeMap::from([(WEST.into(), "ami-us-west-2-3".into())]),
        );
        let plan = plan_cleanup(&[inv(WEST, images, vec![])], &protected, &policy(0));
        assert_eq!(deleted(&plan).len(), 9);
        assert_eq!(item(&plan, "ami-young").why, [young_by_window(1)]);
        assert!(!item(&plan, "ami-us-west-2-3").deletes());
    }

    #[test]
    fn images_younger_than_the_window_are_kept() {
        let mut images = vec![
            image("ami-a", W, 0, &[]),
            image("ami-b", W, 1, &[]),
            image("ami-c", W, 3, &[]),
        ];
        // A pending image of a build in progress: not among the newest (not available), but
        // young; one in the future (clock skew) counts as young too.
        images[0].state = "pending".into();
        images.push(Image {
            creation_date: Some(now() + chrono::Duration::seconds(60)),
            ..image("ami-future", W, 0, &[])
        });
        let plan = plan_cleanup(
            &[inv(WEST, images, vec![])],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(deleted(&plan), ["ami-c"]);
        assert_eq!(item(&plan, "ami-a").why, [young_by_window(0)]);
        assert_eq!(item(&plan, "ami-future").age_seconds, Some(0));
        // Exactly the window old: a build that started then has ended.
        let edge = image("ami-edge", W, 2, &[]);
        let plan = plan_cleanup(
            &[inv(WEST, vec![edge], vec![])],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(deleted(&plan), ["ami-edge"]);
    }

    #[test]
    fn the_window_covers_the_whole_build() {
        let wt = crate::config::parse_worker_type(
            W,
            std::path::Path::new("w.toml"),
            "worker_pool_id = \"proj-servo/win2016\"\nbuild_region = \"us-west-2\"\ninstance_type = \"c5.4xlarge\"\nbuild_timeout = \"90m\"\nimage_timeout = \"60m\"\n",
            Some("Windows_Server-2016-English-Full-Base-*"),
            std::path::Path::new("."),
        )
        .unwrap();
        assert_eq!(
            in_flight_window(&wt),
            Duration::from_secs(90 * 60 + 120 * 60)
        );
    }

    #[test]
    fn unavailable_images_do_not_count_among_the_newest() {
        let mut images = ten_days(WEST);
        images[0].state = "failed".into();
        let plan = plan_cleanup(
            &[inv(WEST, images, vec![])],
            &Protected::default(),
            &policy(2),
        );
        let failed = item(&plan, "ami-us-west-2-0");
        assert!(failed.deletes());
        assert_eq!(
            failed.why_text(),
            "not live, not a rollback target, not in the 3 newest deployments, not among the 2 newest (failed) (no tc-ami:expires-at: older than this machine's 2h window); 1 snapshot"
        );
        assert!(!item(&plan, "ami-us-west-2-1").deletes());
        assert!(!item(&plan, "ami-us-west-2-2").deletes());
        assert!(item(&plan, "ami-us-west-2-3").deletes());
    }

    #[test]
    fn unknown_age_is_kept() {
        let mut a = image("ami-a", W, 100, &[]);
        a.creation_date = None;
        let mut b = image("ami-b", W, 100, &[]);
        b.creation_date = None;
        b.tags
            .insert(CREATED_AT.into(), "2026-11-20T12:00:00Z".into());
        let plan = plan_cleanup(
            &[inv(WEST, vec![a, b], vec![])],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(item(&plan, "ami-a").why, [Why::UnknownAge]);
        assert_eq!(item(&plan, "ami-a").age_seconds, None);
        // The build's created-at tag stands in for a missing creation date.
        assert!(item(&plan, "ami-b").deletes());
        assert_eq!(item(&plan, "ami-b").age_seconds, Some(4 * 24 * 3600));
    }

    #[test]
    fn other_worker_types_and_images_tc_ami_did_not_build_are_never_candidates() {
        let mut untagged = image("ami-mine", W, 100, &["snap-mine"]);
        untagged.tags.clear();
        let mut no_build_id = image("ami-nobuild", W, 100, &[]);
        no_build_id.tags.remove(BUILD_ID);
        let mut no_worker_type = image("ami-nowt", W, 100, &[]);
        no_worker_type.tags.remove(WORKER_TYPE);
        let images = vec![
            image("ami-staging", "servo-win2016-staging", 100, &[]),
            image("ami-gone", "a-removed-worker-type", 100, &[]),
            untagged,
            no_build_id,
            no_worker_type,
            image("ami-w", W, 100, &[]),
        ];
        let plan = plan_cleanup(
            &[inv(WEST, images, vec![])],
            &Protected::default(),
            &policy(0),
        );
        let listed: Vec<&str> = plan.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(listed, ["ami-w"]);
        // A region that is not one of the worker type's: nothing there is touched.
        let plan = plan_cleanup(
            &[inv(
                "eu-central-1",
                vec![image("ami-eu", W, 100, &[])],
                vec![],
            )],
            &Protected::default(),
            &policy(0),
        );
        assert!(plan.items.is_empty());
    }

    #[test]
    fn the_snapshots_of_every_block_device_go_with_the_image() {
        let img = image("ami-0123", W, 100, &["snap-root", "snap-d", "snap-e"]);
        // A tc-ami snapshot that names the image but is not in its block device mappings (a
        // copy still being made, or a mapping EC2 dropped); one naming a longer id is not it.
        let described = Resource {
            kind: Kind::Snapshot,
            id: "snap-described".into(),
            name: "Copied for DestinationAmi ami-0123 from SourceAmi ami-9".into(),
            state: None,
            created: Some(ago(100 * HOUR)),
            tags: tags(W, "build-ami-0123"),
        };
        let other = Resource {
            id: "snap-other".into(),
            name: "Created by CreateImage(i-1) for ami-01234".into(),
            ..described.clone()
        };
        let plan = plan_cleanup(
            &[inv(WEST, vec![img], vec![described, other])],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(
            item(&plan, "ami-0123").snapshot_ids,
            ["snap-d", "snap-described", "snap-e", "snap-root"]
        );
        // `snap-other` names an image that does not exist: it is used by no image.
        assert_eq!(
            item(&plan, "snap-other").why,
            [Why::NoImage {
                ended: Some(ago(98 * HOUR)),
                window_seconds: Some(7200)
            }]
        );
        assert!(!plan.items.iter().any(|i| i.id == "snap-described"));
        assert_eq!(plan.summary().image_snapshots_deleted, 4);
    }

    #[test]
    fn a_snapshot_an_image_that_stays_uses_is_never_deleted() {
        // Someone registered their own image from a tc-ami snapshot; a kept tc-ami image shares
        // another; a tc-ami snapshot names both the kept image and the old one.
        let mut theirs = image("ami-theirs", W, 100, &["snap-a"]);
        theirs.tags.clear();
        let old = image("ami-old", W, 100, &["snap-a", "snap-b", "snap-own"]);
        let kept = image("ami-kept", W, 1, &["snap-b"]);
        let described = Resource {
            kind: Kind::Snapshot,
            id: "snap-c".into(),
            name: "Copied for DestinationAmi ami-kept from SourceAmi ami-old".into(),
            state: None,
            created: Some(ago(100 * HOUR)),
            tags: tags(W, "b"),
        };
        let plan = plan_cleanup(
            &[inv(WEST, vec![theirs, old, kept], vec![described])],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(deleted(&plan), ["ami-old"]);
        assert_eq!(item(&plan, "ami-old").snapshot_ids, ["snap-own"]);
    }

    fn resource(kind: Kind, id: &str, wt: &str, hours: i64) -> Resource {
        Resource {
            kind,
            id: id.into(),
            name: format!("tc-ami-{wt}-b"),
            state: (kind == Kind::Instance).then(|| "running".into()),
            created: Some(ago(hours * HOUR)),
            tags: tags(wt, &format!("build-{id}")),
        }
    }

    fn of_build(mut r: Resource, build: &str) -> Resource {
        r.tags.insert(BUILD_ID.into(), build.into());
        r
    }

    #[test]
    fn leftovers_older_than_the_window_are_removed_younger_ones_kept() {
        let mut terminated = resource(Kind::Instance, "i-done", W, 5);
        terminated.state = Some("terminated".into());
        let mut no_time = resource(Kind::KeyPair, "key-notime", W, 5);
        no_time.created = None;
        // EC2's time says old, but the build started recently (created-at tag): kept.
        let mut retagged = resource(Kind::SecurityGroup, "sg-recent", W, 5);
        retagged
            .tags
            .insert(CREATED_AT.into(), "2026-11-24T11:30:00Z".into());
        let resources = vec![
            of_build(resource(Kind::Instance, "i-old", W, 5), "b-old"),
            of_build(resource(Kind::SecurityGroup, "sg-old", W, 5), "b-old"),
            of_build(resource(Kind::KeyPair, "key-old", W, 5), "b-old"),
            // The group and key pair of a build whose instance is young stay with it.
            of_build(resource(Kind::Instance, "i-b1", W, 1), "b1"),
            of_build(resource(Kind::SecurityGroup, "sg-b1", W, 5), "b1"),
            of_build(resource(Kind::KeyPair, "key-b1", W, 5), "b1"),
            resource(Kind::Instance, "i-young", W, 1),
            resource(Kind::KeyPair, "key-young", W, 1),
            resource(Kind::Instance, "i-staging", "servo-win2016-staging", 5),
            terminated,
            no_time,
            retagged,
        ];
        let plan = plan_cleanup(
            &[inv(WEST, vec![], resources)],
            &Protected::default(),
            &policy(3),
        );
        assert_eq!(deleted(&plan), ["i-old", "sg-old", "key-old"]);
        assert_eq!(
            item(&plan, "i-old").why_text(),
            "left by a build that ended (no tc-ami:expires-at: older than this machine's 2h window)"
        );
        assert_eq!(item(&plan, "key-young").why, [young_by_window(1)]);
        assert_eq!(item(&plan, "key-notime").why, [Why::UnknownAge]);
        assert!(!item(&plan, "sg-recent").deletes());
        assert!(!item(&plan, "sg-b1").deletes() && !item(&plan, "key-b1").deletes());
        // Its own age; kept for its build's instance.
        assert_eq!(item(&plan, "sg-b1").age_seconds, Some(5 * 3600));
        assert!(
            !plan
                .items
                .iter()
                .any(|i| i.id == "i-staging" || i.id == "i-done")
        );
        let s = plan.summary();
        assert_eq!((s.instances, s.security_groups, s.key_pairs), (1, 1, 1));
        assert_eq!(s.leftovers_kept, 7);
        assert_eq!(
            s.deletions_text(),
            "1 instance, 1 security group, 1 key pair"
        );
    }

    #[test]
    fn snapshots_used_by_any_image_are_not_leftovers() {
        // An image of someone else (no tc-ami tags) registered from a tc-ami snapshot.
        let mut theirs = image("ami-theirs", W, 100, &["snap-shared"]);
        theirs.tags.clear();
        let resources = vec![
            resource(Kind::Snapshot, "snap-shared", W, 100),
            resource(Kind::Snapshot, "snap-orphan", W, 100),
            resource(Kind::Snapshot, "snap-young", W, 1),
        ];
        let plan = plan_cleanup(
            &[inv(WEST, vec![theirs], resources)],
            &Protected::default(),
            &policy(3),
        );
        assert_eq!(deleted(&plan), ["snap-orphan"]);
        assert!(!plan.items.iter().any(|i| i.id == "snap-shared"));
        assert_eq!(plan.summary().deletions_text(), "1 unused snapshot");
    }

    #[test]
    fn only_the_selected_worker_types_are_cleaned() {
        // `-w servo-win2016`: the staging worker type's images and leftovers are not touched,
        // even in a region both use.
        let images = vec![
            image("ami-w", W, 100, &[]),
            image("ami-s", "servo-win2016-staging", 100, &[]),
        ];
        let resources = vec![resource(
            Kind::KeyPair,
            "key-s",
            "servo-win2016-staging",
            100,
        )];
        let plan = plan_cleanup(
            &[inv(WEST, images.clone(), resources.clone())],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(deleted(&plan), ["ami-w"]);
        // Both selected: both cleaned, each with its own window.
        let mut both = policy(0);
        both.scopes.extend([scope(
            "servo-win2016-staging",
            &[WEST],
            Duration::from_secs(200 * 3600),
        )]);
        let plan = plan_cleanup(
            &[inv(WEST, images, resources)],
            &Protected::default(),
            &both,
        );
        assert_eq!(deleted(&plan), ["ami-w"]);
        assert_eq!(plan.items.len(), 3);
    }

    #[test]
    fn newest_ties_are_broken_by_name_then_id() {
        let mut a = image("ami-a", W, 100, &[]);
        let mut b = image("ami-b", W, 100, &[]);
        a.name = "tc-ami-w-2".into();
        b.name = "tc-ami-w-1".into();
        let plan = plan_cleanup(
            &[inv(WEST, vec![b.clone(), a.clone()], vec![])],
            &Protected::default(),
            &policy(1),
        );
        assert_eq!(deleted(&plan), ["ami-b"]);
        let plan = plan_cleanup(
            &[inv(WEST, vec![a, b], vec![])],
            &Protected::default(),
            &policy(1),
        );
        assert_eq!(deleted(&plan), ["ami-b"]);
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(format_age(None), "?");
        assert_eq!(format_age(Some(0)), "0s");
        assert_eq!(format_age(Some(42)), "42s");
        assert_eq!(format_age(Some(750)), "12m30s");
        assert_eq!(format_age(Some(3600)), "1h");
        assert_eq!(format_age(Some(5 * 3600 + 12 * 60 + 7)), "5h12m");
        assert_eq!(format_age(Some(3 * 86400 + 4 * 3600 + 59)), "3d4h");
        assert_eq!(format_age(Some(40 * 86400 + 59)), "40d");
    }

    #[test]
    fn the_table_lines_up() {
        let mut protected = Protected::default();
        add_live(
            &mut protected,
            "proj-servo/win2016",
            &BTreeMap::from([(WEST.into(), "ami-1".into())]),
        );
        let mut old = image("ami-22", W, 50, &["snap-2", "snap-3"]);
        old.tags
            .insert(EXPIRES_AT.into(), "2026-11-22T13:00:00Z".into());
        let mut instance = resource(Kind::Instance, "i-0abc", W, 5);
        instance
            .tags
            .insert(EXPIRES_AT.into(), "2026-11-24T08:30:00Z".into());
        let plan = plan_cleanup(
            &[inv(
                WEST,
                vec![image("ami-1", W, 30, &["snap-1"]), old],
                vec![instance, resource(Kind::KeyPair, "key-0abc", W, 5)],
            )],
            &protected,
            &policy(0),
        );
        let table = render_plan(&plan);
        assert_eq!(
            table,
            "\
REGION     RESOURCE  NAME                         AGE   ACTION     WHY
us-west-2  ami-1     tc-ami-servo-win2016-ami-1   1d6h  keep       live in proj-servo/win2016
us-west-2  ami-22    tc-ami-servo-win2016-ami-22  2d2h  delete     not live, not a rollback target, not in the 3 newest deployments; 2 snapshots
us-west-2  i-0abc    tc-ami-servo-win2016-b       5h    terminate  left by a build that ended (its tc-ami:expires-at 2026-11-24T08:30:00Z has passed)
us-west-2  key-0abc  tc-ami-servo-win2016-b       5h    delete     left by a build that ended (no tc-ami:expires-at: older than this machine's 2h window)
"
        );
    }

    fn expiring(mut tags_of: BTreeMap<String, String>, at: &str) -> BTreeMap<String, String> {
        tags_of.insert(EXPIRES_AT.into(), at.into());
        tags_of
    }

    #[test]
    fn expires_at_parses_rfc3339_and_ignores_anything_else() {
        let t = |v: &str| parse_expires_at(&BTreeMap::from([(EXPIRES_AT.into(), v.into())]));
        assert_eq!(
            t("2026-11-24T15:10:01Z"),
            Some(parse_ec2_time("2026-11-24T15:10:01Z").unwrap())
        );
        // Another offset is the same instant; a trailing space from a hand edit is fine.
        assert_eq!(
            t("2026-11-24T16:10:01+01:00 "),
            Some(parse_ec2_time("2026-11-24T15:10:01Z").unwrap())
        );
        for bad in ["", "tomorrow", "2026-11-24", "1732460000"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
        assert_eq!(parse_expires_at(&BTreeMap::new()), None);
        let start = parse_ec2_time("2026-11-24T21:40:01Z").unwrap();
        let end = expires_at(start, Duration::from_secs(210 * 60)).unwrap();
        assert_eq!(format_expires_at(end), "2026-11-25T01:10:01Z");
        // Past what a date can hold: no end rather than a panic.
        assert_eq!(expires_at(start, Duration::MAX), None);
        assert_eq!(expires_at(start, Duration::from_secs(u64::MAX / 2)), None);
    }

    #[test]
    fn the_window_never_overflows() {
        let mut wt = crate::config::parse_worker_type(
            W,
            std::path::Path::new("w.toml"),
            "worker_pool_id = \"proj-servo/win2016\"\nbuild_region = \"us-west-2\"\ninstance_type = \"c5.4xlarge\"\n",
            Some("Windows_Server-2016-English-Full-Base-*"),
            std::path::Path::new("."),
        )
        .unwrap();
        wt.image_timeout = Duration::MAX;
        assert_eq!(in_flight_window(&wt), Duration::MAX);
        // Without an end, an image of unknown end is kept (never deleted by mistake).
        let mut p = policy(0);
        p.scopes.get_mut(W).unwrap().window = Duration::MAX;
        let plan = plan_cleanup(
            &[inv(WEST, vec![image("ami-a", W, 100_000, &[])], vec![])],
            &Protected::default(),
            &p,
        );
        assert_eq!(
            item(&plan, "ami-a").why,
            [Why::MayBeInProgress {
                until: None,
                window_seconds: Some(u64::MAX)
            }]
        );
    }

    #[test]
    fn the_expires_at_tag_wins_over_this_machines_window_both_ways() {
        // Built with long timeouts: its build may run until 14:00, although this machine's
        // window (2h) says a 3-hour-old image is done.
        let mut long = image("ami-long", W, 3, &[]);
        long.tags = expiring(long.tags, "2026-11-24T14:00:00Z");
        // Built with short timeouts: its build ended at 11:30, although it is younger than
        // this machine's window.
        let mut short = image("ami-short", W, 1, &[]);
        short.tags = expiring(short.tags, "2026-11-24T11:30:00Z");
        // An unreadable tag: the window decides, and the reason says so.
        let mut garbled = image("ami-garbled", W, 1, &[]);
        garbled.tags = expiring(garbled.tags, "soon");
        let plan = plan_cleanup(
            &[inv(WEST, vec![long, short, garbled], vec![])],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(
            item(&plan, "ami-long").why,
            [Why::MayBeInProgress {
                until: Some(parse_ec2_time("2026-11-24T14:00:00Z").unwrap()),
                window_seconds: None
            }]
        );
        assert_eq!(
            item(&plan, "ami-long").why_text(),
            "may belong to a build in progress (until 2026-11-24T14:00:00Z, its tc-ami:expires-at)"
        );
        assert!(item(&plan, "ami-short").deletes());
        assert_eq!(
            item(&plan, "ami-short").why_text(),
            "not live, not a rollback target, not in the 3 newest deployments; 0 snapshots"
        );
        assert_eq!(item(&plan, "ami-garbled").why, [young_by_window(1)]);
        assert_eq!(
            item(&plan, "ami-garbled").why_text(),
            "may belong to a build in progress (no tc-ami:expires-at: younger than this machine's 2h window)"
        );
        // Exactly at its end, the build is over.
        let mut edge = image("ami-edge", W, 1, &[]);
        edge.tags = expiring(edge.tags, "2026-11-24T12:00:00Z");
        let plan = plan_cleanup(
            &[inv(WEST, vec![edge], vec![])],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(deleted(&plan), ["ami-edge"]);
    }

    #[test]
    fn a_kept_failed_build_stays_until_its_expires_at_then_goes_whole() {
        // `build --keep-on-failure=TTL` tags the instance, its group and key pair with a later
        // expires-at; the volume's snapshot-less build made no image.
        let kept = |at: &str| {
            ["i-kept", "sg-kept", "key-kept"]
                .into_iter()
                .zip([Kind::Instance, Kind::SecurityGroup, Kind::KeyPair])
                .map(|(id, kind)| {
                    let mut r = of_build(resource(kind, id, W, 30), "b-kept");
                    r.tags = expiring(r.tags, at);
                    r
                })
                .collect::<Vec<_>>()
        };
        let plan = plan_cleanup(
            &[inv(WEST, vec![], kept("2026-11-25T00:00:00Z"))],
            &Protected::default(),
            &policy(0),
        );
        assert!(deleted(&plan).is_empty());
        assert_eq!(plan.summary().leftovers_kept, 3);
        let plan = plan_cleanup(
            &[inv(WEST, vec![], kept("2026-11-24T11:59:59Z"))],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(deleted(&plan), ["i-kept", "sg-kept", "key-kept"]);
        assert_eq!(
            item(&plan, "i-kept").why,
            [Why::LeftByBuild {
                ended: Some(parse_ec2_time("2026-11-24T11:59:59Z").unwrap()),
                window_seconds: None
            }]
        );
        // Only the instance was re-tagged: its group and key pair wait with it.
        let mut resources = kept("2026-11-24T10:00:00Z");
        resources[0].tags = expiring(resources[0].tags.clone(), "2026-11-25T00:00:00Z");
        let plan = plan_cleanup(
            &[inv(WEST, vec![], resources)],
            &Protected::default(),
            &policy(0),
        );
        assert!(deleted(&plan).is_empty(), "{:?}", deleted(&plan));
        // A tagged leftover and an untagged one of the same build: the later end wins.
        let mut tagged = of_build(resource(Kind::Instance, "i-t", W, 30), "b-mixed");
        tagged.tags = expiring(tagged.tags, "2026-11-24T11:00:00Z");
        let untagged = of_build(resource(Kind::KeyPair, "key-u", W, 1), "b-mixed");
        let plan = plan_cleanup(
            &[inv(WEST, vec![], vec![tagged, untagged])],
            &Protected::default(),
            &policy(0),
        );
        assert!(deleted(&plan).is_empty());
        assert_eq!(item(&plan, "i-t").why, [young_by_window(1)]);
    }

    #[test]
    fn build_ends_compare_with_unknown_and_endless_ones() {
        let t = |h: i64| BuildEnd::Tagged(ago(h * HOUR));
        let endless = BuildEnd::Window {
            created: now(),
            window: Duration::MAX,
        };
        assert_eq!(t(1).later(t(2)), t(1));
        assert_eq!(t(2).later(t(1)), t(1));
        assert_eq!(BuildEnd::Unknown.later(t(2)), t(2));
        assert_eq!(t(2).later(BuildEnd::Unknown), t(2));
        assert_eq!(t(2).later(endless), endless);
        assert_eq!(endless.later(t(2)), endless);
        assert_eq!(BuildEnd::Unknown.keeps(now()), Some(Why::UnknownAge));
        assert_eq!(t(1).keeps(now()), None);
    }

    fn pool_def(lcs: &[(&str, &str)]) -> Value {
        serde_json::json!({
            "workerPoolId": "proj-servo/win2016",
            "config": {"launchConfigs": lcs.iter().map(|(region, image)| serde_json::json!({
                "region": region, "launchConfig": {"ImageId": image}
            })).collect::<Vec<_>>()}
        })
    }

    fn record(seq: u64, before: &str, after: &str) -> crate::history::Deployment {
        crate::history::Deployment {
            seq,
            time: ago(100 * HOUR - seq as i64),
            who: "me".into(),
            kind: crate::history::Kind::Deploy,
            worker_type: W.into(),
            before: BTreeMap::from([(WEST.to_string(), before.to_string())]),
            after: BTreeMap::from([(WEST.to_string(), after.to_string())]),
            deployment_id: None,
            undoes: None,
            undoes_outside_change: false,
            from: None,
            tried: None,
            unverified: false,
        }
    }

    #[test]
    fn a_pool_needs_every_launch_config_its_rollback_target_and_its_newest_deployments() {
        // Production on build 2 everywhere, plus a canary on build 3 in us-west-2.
        let def = pool_def(&[(WEST, "ami-2"), (EAST, "ami-2e"), (WEST, "ami-3")]);
        let mut history = History {
            records: (1..=5)
                .map(|n| record(n, &format!("ami-d{}", n - 1), &format!("ami-d{n}")))
                .collect(),
        };
        history.records[4].after = BTreeMap::from([
            (WEST.into(), "ami-2".into()),
            (EAST.into(), "ami-2e".into()),
        ]);
        let needs = pool_needs(POOL_ID, vec![W.into()], &def, Some(&history), 3);
        assert_eq!(
            needs.live,
            BTreeMap::from([
                (EAST.to_string(), BTreeSet::from(["ami-2e".to_string()])),
                (
                    WEST.to_string(),
                    BTreeSet::from(["ami-2".to_string(), "ami-3".to_string()])
                ),
            ])
        );
        assert_eq!(needs.regions, BTreeSet::from([EAST.into(), WEST.into()]));
        // The rollback target is what #5 replaced; the three newest records: #5, #4, #3.
        assert_eq!(
            needs.rollback_target,
            Some(BTreeMap::from([(WEST.to_string(), "ami-d4".to_string())]))
        );
        assert_eq!(
            needs.deployments.iter().map(|d| d.seq).collect::<Vec<_>>(),
            [5, 4, 3]
        );
        assert!(needs.history_read);
        assert!(needs.names_any(&BTreeSet::from(["ami-3".to_string()])));
        assert!(!needs.names_any(&BTreeSet::from(["ami-d1".to_string()])));

        let protected = Protected::from_pools(&[needs]);
        let images: Vec<Image> = ["ami-2", "ami-3", "ami-d1", "ami-d2", "ami-d3", "ami-d4"]
            .iter()
            .map(|id| image(id, W, 100, &[]))
            .collect();
        let plan = plan_cleanup(&[inv(WEST, images, vec![])], &protected, &policy(0));
        assert_eq!(deleted(&plan), ["ami-d2", "ami-d1"]);
        assert_eq!(
            item(&plan, "ami-3").why,
            [Why::Live {
                pool: POOL_ID.into()
            }]
        );
        assert_eq!(
            item(&plan, "ami-2").why_text(),
            format!("live in {POOL_ID}; deployed by #5 of {POOL_ID}")
        );
        assert_eq!(
            item(&plan, "ami-d4").why_text(),
            format!("rollback target of {POOL_ID}; deployed by #4 of {POOL_ID}")
        );
        assert_eq!(
            item(&plan, "ami-d3").why_text(),
            format!("deployed by #3 of {POOL_ID}")
        );

        // Fewer deployments kept; and a pool whose history could not be read.
        let needs = pool_needs(POOL_ID, vec![], &def, Some(&history), 1);
        assert_eq!(needs.deployments.len(), 1);
        let unread = pool_needs(POOL_ID, vec![], &def, None, 3);
        assert!(!unread.history_read);
        assert_eq!(unread.rollback_target, None);
        assert!(unread.deployments.is_empty());
    }

    const POOL_ID: &str = "proj-servo/win2016";

    #[test]
    fn what_changed_between_two_reads_is_named_per_image() {
        let def = pool_def(&[(WEST, "ami-1")]);
        let before = Protected::from_pools(&[pool_needs(POOL_ID, vec![], &def, None, 3)]);
        let def = pool_def(&[(WEST, "ami-1"), (WEST, "ami-2")]);
        let after = Protected::from_pools(&[pool_needs(POOL_ID, vec![], &def, None, 3)]);
        assert_eq!(before, before.clone());
        assert_ne!(before, after);
        let candidates = BTreeSet::from(["ami-1".to_string(), "ami-2".to_string()]);
        assert_eq!(
            before.changes(&after, &candidates),
            [format!("ami-2: now live in {POOL_ID}")]
        );
        assert_eq!(
            after.changes(&before, &candidates),
            [format!("ami-2: no longer live in {POOL_ID}")]
        );
        // Only the candidates are named: an image tc-ami did not build is of no interest.
        assert!(
            before
                .changes(&after, &BTreeSet::from(["ami-1".to_string()]))
                .is_empty()
        );

        let images = vec![image("ami-1", W, 100, &[]), image("ami-2", W, 100, &[])];
        let old = plan_cleanup(&[inv(WEST, images.clone(), vec![])], &before, &policy(0));
        let new = plan_cleanup(&[inv(WEST, images, vec![])], &after, &policy(0));
        let changed = new.changed_since(&old);
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].0.id, "ami-2");
        assert_eq!(changed[0].0.action, Action::Keep);
        assert_eq!(changed[0].1, Some(Action::Delete));
        assert!(old.changed_since(&old).is_empty());
    }

    #[test]
    fn password_secrets_go_once_none_of_their_builds_images_stays() {
        let mut p = policy(0);
        p.scopes.get_mut(W).unwrap().password_secret_prefix = Some("pw/w".into());
        let copy = |id: &str, source: &str, build: &str| {
            let mut i = image(id, W, 100, &[]);
            i.tags.insert(BUILD_ID.into(), build.into());
            i.tags.insert(SOURCE_IMAGE_ID.into(), source.into());
            i
        };
        let source = |id: &str, build: &str| {
            let mut i = image(id, W, 100, &[]);
            i.tags.insert(BUILD_ID.into(), build.into());
            i
        };
        let inventories = [
            inv(
                WEST,
                vec![source("ami-a", "b-a"), source("ami-b", "b-b")],
                vec![],
            ),
            inv(
                EAST,
                vec![
                    copy("ami-a-copy", "ami-a", "b-a"),
                    copy("ami-b-copy", "ami-b", "b-b"),
                    // Its source was deregistered by an earlier run.
                    copy("ami-c-copy", "ami-c", "b-c"),
                ],
                vec![],
            ),
        ];
        // b-b's copy is live in us-east-1: its password stays, though its source goes.
        let mut protected = Protected::default();
        add_live(
            &mut protected,
            POOL_ID,
            &BTreeMap::from([(EAST.into(), "ami-b-copy".into())]),
        );
        let plan = plan_cleanup(&inventories, &protected, &p);
        assert!(item(&plan, "ami-b").deletes());
        let names: Vec<&str> = plan.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pw/w/ami-a", "pw/w/ami-c"]);
        assert_eq!(
            plan.secrets[0].images,
            [
                (WEST.to_string(), "ami-a".to_string()),
                (EAST.to_string(), "ami-a-copy".to_string())
            ]
        );
        assert_eq!(plan.secrets[0].build_id, "b-a");
        assert_eq!(plan.summary().password_secrets, 2);
        assert_eq!(
            plan.summary().deletions_text(),
            "4 images (0 snapshots, 2 password secrets)"
        );
        // A worker type that prints its passwords has no secrets to remove.
        let plan = plan_cleanup(&inventories, &protected, &policy(0));
        assert!(plan.secrets.is_empty());
    }

    #[test]
    fn candidates_are_the_images_of_the_worker_types_cleaned_in_their_regions() {
        let mut theirs = image("ami-theirs", W, 100, &[]);
        theirs.tags.clear();
        let inventories = [
            inv(
                WEST,
                vec![
                    image("ami-w", W, 100, &[]),
                    image("ami-s", "servo-win2016-staging", 100, &[]),
                    theirs,
                ],
                vec![],
            ),
            inv("eu-central-1", vec![image("ami-eu", W, 100, &[])], vec![]),
        ];
        assert_eq!(
            candidate_images(&inventories, &policy(0)),
            BTreeSet::from(["ami-w".to_string()])
        );
    }

    #[test]
    fn a_debug_instance_goes_with_its_group_and_key_pair_once_its_ttl_has_passed() {
        // `tc-ami debug-instance`: tc-ami:debug-id instead of a build id, expires-at = launch
        // + TTL on all three.
        let debug = |at: &str| {
            ["i-dbg", "sg-dbg", "key-dbg"]
                .into_iter()
                .zip([Kind::Instance, Kind::SecurityGroup, Kind::KeyPair])
                .map(|(id, kind)| {
                    let mut r = resource(kind, id, W, 30);
                    r.tags.remove(BUILD_ID);
                    r.tags.insert(DEBUG_ID.into(), "d-1".into());
                    r.tags = expiring(r.tags, at);
                    r
                })
                .collect::<Vec<_>>()
        };
        let plan = plan_cleanup(
            &[inv(WEST, vec![], debug("2026-11-24T13:00:00Z"))],
            &Protected::default(),
            &policy(0),
        );
        assert!(deleted(&plan).is_empty());
        assert_eq!(plan.summary().leftovers_kept, 3);
        assert_eq!(
            item(&plan, "i-dbg").why_text(),
            "a debug instance's, until 2026-11-24T13:00:00Z (its tc-ami:expires-at)"
        );
        let plan = plan_cleanup(
            &[inv(WEST, vec![], debug("2026-11-24T11:00:00Z"))],
            &Protected::default(),
            &policy(0),
        );
        assert_eq!(deleted(&plan), ["i-dbg", "sg-dbg", "key-dbg"]);
        assert_eq!(
            item(&plan, "key-dbg").why_text(),
            "a debug instance's, whose TTL ended at 2026-11-24T11:00:00Z (its tc-ami:expires-at)"
        );
        // Only builds make images: an image tagged with a debug id is never a candidate.
        let mut odd = image("ami-odd", W, 100, &[]);
        odd.tags.remove(BUILD_ID);
        odd.tags.insert(DEBUG_ID.into(), "d-1".into());
        let inventories = [inv(WEST, vec![odd], vec![])];
        assert!(candidate_images(&inventories, &policy(0)).is_empty());
        assert!(
            plan_cleanup(&inventories, &Protected::default(), &policy(0))
                .items
                .is_empty()
        );
    }
}
