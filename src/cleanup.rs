//! Cleanup planning (pure): which of tc-ami's images to deregister, with every snapshot of
//! every block device, and which leftovers of interrupted builds to remove, each with why.
//!
//! The rules, in the order they protect:
//! - only what tc-ami made is ever a candidate: images, instances, security groups, key pairs
//!   and snapshots carrying both `tc-ami:build-id` and `tc-ami:worker-type`, of a worker type in
//!   the [`Policy`] and in one of that worker type's regions;
//! - an image live in any pool, or the rollback target of any pool ([`Protected`]), is kept,
//!   whatever its worker type;
//! - the `keep` newest available images of each worker type in each region are kept;
//! - anything younger than [`in_flight_window`] is kept: it may belong to a build in progress;
//! - anything whose age cannot be told is kept.
//!
//! The rest is deleted. An image goes with the snapshots of all its block devices and the
//! tc-ami snapshots whose description names it; a tc-ami snapshot that no image uses is a
//! leftover too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::WorkerType;
use crate::duration::{format_age, format_duration};
use crate::model::inventory::{Inventory, Kind, Resource};
use crate::model::tags::{BUILD_ID, CREATED_AT, WORKER_TYPE};
use crate::model::{Image, ImageState, InstanceStateName, parse_ec2_time};
use crate::text::table;

/// How many of the newest images per worker type and region `cleanup` keeps by default.
pub const DEFAULT_KEEP: usize = 3;

/// How long after it started a build may still be running: `build_timeout` for the guest,
/// then `image_timeout` for the image and `image_timeout` again for its copies. An image or a
/// build resource younger than this may belong to a build in progress; one that is older
/// belongs to a build that has ended (or was killed).
pub fn in_flight_window(wt: &WorkerType) -> Duration {
    wt.build_timeout + wt.image_timeout * 2
}

/// One worker type whose resources the cleanup may delete.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerScope {
    pub worker_type: String,
    /// Its build and copy regions and the regions of its live pool.
    pub regions: BTreeSet<String>,
    /// [`in_flight_window`] of the worker type.
    pub window: Duration,
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// The newest available images kept per worker type and region.
    pub keep: usize,
    pub now: DateTime<Utc>,
    /// The worker types cleaned up, by name. Anything of another worker type is left alone.
    pub scopes: BTreeMap<String, WorkerScope>,
}

impl Policy {
    /// The scope a resource in `region` with these tags falls in: it carries tc-ami's build
    /// tags, of a worker type cleaned up, in one of that worker type's regions.
    fn scope_of(&self, tags: &BTreeMap<String, String>, region: &str) -> Option<&WorkerScope> {
        tags.get(BUILD_ID)?;
        let scope = self.scopes.get(tags.get(WORKER_TYPE)?)?;
        scope.regions.contains(region).then_some(scope)
    }
}

/// Why something is kept or deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Why {
    /// Kept: an image of the pool's live launch configs.
    Live { pool: String },
    /// Kept: an image of the deployment before the live one (what `rollback` puts back).
    RollbackTarget { pool: String },
    /// Kept: among the `of` newest available images of its worker type in its region.
    Newest { rank: usize, of: usize },
    /// Kept: younger than the window, it may belong to a build in progress.
    MayBeInProgress { window_seconds: u64 },
    /// Kept: no creation time, so no age.
    UnknownAge,
    /// Deleted: an image that is none of the above.
    Old { keep: usize, state: String },
    /// Deleted: an instance, group or key pair of a build that has ended.
    LeftByBuild { window_seconds: u64 },
    /// Deleted: a tc-ami snapshot that no image uses.
    NoImage { window_seconds: u64 },
}

impl Why {
    pub fn keeps(&self) -> bool {
        matches!(
            self,
            Why::Live { .. }
                | Why::RollbackTarget { .. }
                | Why::Newest { .. }
                | Why::MayBeInProgress { .. }
                | Why::UnknownAge
        )
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let window = |s: &u64| format_duration(Duration::from_secs(*s));
        match self {
            Why::Live { pool } => write!(f, "live in {pool}"),
            Why::RollbackTarget { pool } => write!(f, "rollback target of {pool}"),
            Why::Newest { rank, of } => write!(f, "newest {rank} of {of}"),
            Why::MayBeInProgress { window_seconds } => write!(
                f,
                "younger than {}: may belong to a build in progress",
                window(window_seconds)
            ),
            Why::UnknownAge => write!(f, "no creation time: age unknown"),
            Why::Old { keep, state } => {
                write!(f, "not live, not a rollback target")?;
                if *keep > 0 {
                    write!(f, ", not among the {keep} newest")?;
                }
                if state != ImageState::Available.as_str() {
                    write!(f, " ({state})")?;
                }
                Ok(())
            }
            Why::LeftByBuild { window_seconds } => write!(
                f,
                "left by a build that ended (older than {})",
                window(window_seconds)
            ),
            Why::NoImage { window_seconds } => write!(
                f,
                "used by no image (older than {})",
                window(window_seconds)
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

/// Images that must stay, whatever the worker type: image id → why.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    by_image: BTreeMap<String, BTreeSet<Why>>,
}

impl Protected {
    /// The images of a pool's live launch configs (region → image id).
    pub fn add_live(&mut self, pool: &str, images: &BTreeMap<String, String>) {
        for id in images.values() {
            self.add(id, Why::Live { pool: pool.into() });
        }
    }

    /// The images `rollback` would put back into a pool (region → image id).
    pub fn add_rollback_target(&mut self, pool: &str, images: &BTreeMap<String, String>) {
        for id in images.values() {
            self.add(id, Why::RollbackTarget { pool: pool.into() });
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
}

/// The whole plan: every candidate, kept or deleted, sorted by region, kind, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub items: Vec<Item>,
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

    /// `3 images (4 snapshots), 1 instance, 1 security group, 1 key pair`.
    pub fn deletions_text(&self) -> String {
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let mut parts = Vec::new();
        if self.images_deleted > 0 {
            parts.push(format!(
                "{} ({})",
                count(self.images_deleted, "image"),
                count(self.image_snapshots_deleted, "snapshot")
            ));
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
        let mut s = Summary::default();
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
}

fn age_seconds(created: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<u64> {
    created.map(|c| (now - c).num_seconds().max(0) as u64)
}

/// Kept while younger than the window (or of unknown age): the reason, if any.
fn too_young(created: Option<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) -> Option<Why> {
    match created {
        None => Some(Why::UnknownAge),
        // A time in the future (clock skew) counts as young.
        Some(c) if now < c || (now - c).to_std().unwrap_or_default() < window => {
            Some(Why::MayBeInProgress {
                window_seconds: window.as_secs(),
            })
        }
        Some(_) => None,
    }
}

fn tag_time(tags: &BTreeMap<String, String>) -> Option<DateTime<Utc>> {
    tags.get(CREATED_AT).and_then(|t| parse_ec2_time(t))
}

fn tag(tags: &BTreeMap<String, String>, key: &str) -> String {
    tags.get(key).cloned().unwrap_or_default()
}

/// The plan for tc-ami's images and the leftovers of interrupted builds in `inventories`.
pub fn plan_cleanup(inventories: &[Inventory], protected: &Protected, policy: &Policy) -> Plan {
    let mut items = plan_images(inventories, protected, policy);
    items.extend(plan_leftovers(inventories, policy));
    items.sort_by(|a, b| {
        (&a.region, a.kind)
            .cmp(&(&b.region, b.kind))
            .then_with(|| b.created.cmp(&a.created))
            .then_with(|| b.name.cmp(&a.name))
            .then_with(|| b.id.cmp(&a.id))
    });
    Plan { items }
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
        .filter_map(|i| Some((i, policy.scope_of(&i.tags, &inv.region)?)))
        .collect();
    let newest = newest_images(&candidates, policy);
    // Snapshots of tc-ami that name an image in their description ("Created by
    // CreateImage(i-…) for ami-…", "Copied for DestinationAmi ami-…") go with it.
    let named = snapshots_by_named_image(inv);
    let naming = |image: &str| named.get(image).into_iter().flatten().copied();

    let mut items = Vec::new();
    for (image, scope) in candidates {
        let created = image.creation_date.or_else(|| tag_time(&image.tags));
        let mut why = protected.reasons(&image.id);
        why.extend(newest.get(image.id.as_str()).cloned());
        why.extend(too_young(created, policy.now, scope.window));
        let action = if why.is_empty() {
            why.push(Why::Old {
                keep: policy.keep,
                state: image.state.to_string(),
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
        // A build's leftovers are judged together, by the most recent of their times (EC2's
        // and the build's start), so that a group is never deleted while its instance stays.
        let mut build_time: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
        for r in &inv.resources {
            let (Some(build), Some(t)) = (r.tags.get(BUILD_ID), latest_time(r)) else {
                continue;
            };
            let entry = build_time.entry(build.as_str()).or_insert(t);
            *entry = (*entry).max(t);
        }
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
            let created = match r.kind {
                // A snapshot belongs to an image, not to the build's instance.
                Kind::Snapshot => latest_time(r),
                _ => r
                    .tags
                    .get(BUILD_ID)
                    .and_then(|b| build_time.get(b.as_str()).copied())
                    .or_else(|| latest_time(r)),
            };
            let window_seconds = scope.window.as_secs();
            let (action, why) = match too_young(created, policy.now, scope.window) {
                Some(why) => (Action::Keep, why),
                None if r.kind == Kind::Snapshot => {
                    (Action::Delete, Why::NoImage { window_seconds })
                }
                None => (Action::Delete, Why::LeftByBuild { window_seconds }),
            };
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
            },
        )
    }

    fn policy(keep: usize) -> Policy {
        Policy {
            keep,
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
        protected.add_live(
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
        protected.add_live(
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
        protected.add_live(
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
        protected.add_live(
            "p",
            &BTreeMap::from([(WEST.into(), "ami-us-west-2-3".into())]),
        );
        let plan = plan_cleanup(&[inv(WEST, images, vec![])], &protected, &policy(0));
        assert_eq!(deleted(&plan).len(), 9);
        assert_eq!(
            item(&plan, "ami-young").why,
            [Why::MayBeInProgress {
                window_seconds: 7200
            }]
        );
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
        assert_eq!(
            item(&plan, "ami-a").why,
            [Why::MayBeInProgress {
                window_seconds: 7200
            }]
        );
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
            "not live, not a rollback target, not among the 2 newest (failed); 1 snapshot"
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
                window_seconds: 7200
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
            "left by a build that ended (older than 2h)"
        );
        assert_eq!(
            item(&plan, "key-young").why,
            [Why::MayBeInProgress {
                window_seconds: 7200
            }]
        );
        assert_eq!(item(&plan, "key-notime").why, [Why::UnknownAge]);
        assert!(!item(&plan, "sg-recent").deletes());
        assert!(!item(&plan, "sg-b1").deletes() && !item(&plan, "key-b1").deletes());
        assert_eq!(item(&plan, "sg-b1").age_seconds, Some(3600));
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
        protected.add_live(
            "proj-servo/win2016",
            &BTreeMap::from([(WEST.into(), "ami-1".into())]),
        );
        let plan = plan_cleanup(
            &[inv(
                WEST,
                vec![
                    image("ami-1", W, 30, &["snap-1"]),
                    image("ami-22", W, 50, &["snap-2", "snap-3"]),
                ],
                vec![resource(Kind::Instance, "i-0abc", W, 5)],
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
us-west-2  ami-22    tc-ami-servo-win2016-ami-22  2d2h  delete     not live, not a rollback target; 2 snapshots
us-west-2  i-0abc    tc-ami-servo-win2016-b       5h    terminate  left by a build that ended (older than 2h)
"
        );
    }
}
