//! Carrying out a cleanup plan ([`crate::cleanup`]): listing what each region holds, then
//! deleting, every region at once, with the removals every command shares, and removing the
//! password secrets of the builds whose images are all gone. Never cancelled half-way: an
//! interrupt stops new deletions from starting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use futures::StreamExt;
use futures::future::join_all;

use crate::cleanup::{Item, Plan, SecretRemoval};
use crate::ec2::Ec2;
use crate::interrupt::Cancel;
use crate::model::inventory::{Inventory, Kind};
use crate::model::tags;
use crate::ops::access::delete_group_when_free;
use crate::ops::images::{Snapshots, delete_snapshot_when_free, remove_image};
use crate::ops::instances::{not_terminated, terminate_and_wait};
use crate::taskcluster::{SecretsApi, status_of};
use crate::wait::POLL_INTERVAL;

/// Images removed at once per region: enough to hide each call's latency, few enough to stay
/// under EC2's request rate limits (throttled calls are retried by the SDK).
const IMAGE_CONCURRENCY: usize = 8;

/// Everything in `region` the plan needs, listed with one call per kind (every page): the
/// instances, groups and key pairs of builds and of debug instances alike.
pub async fn inventory(ec2: &Ec2, region: &str) -> Result<Inventory> {
    let launches = [tags::BUILD_ID, tags::DEBUG_ID];
    let (images, snapshots, instances, groups, key_pairs) = tokio::try_join!(
        ec2.list_own_images(region),
        ec2.list_own_snapshots_tagged(region, tags::BUILD_ID),
        ec2.list_instances_tagged(region, &launches),
        ec2.list_security_groups_tagged(region, &launches),
        ec2.list_key_pairs_tagged(region, &launches),
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
#[derive(Debug, Clone)]
pub enum Undone {
    Failed(String),
    /// Not started: interrupted, or something it depends on failed.
    Skipped(String),
}

impl Undone {
    pub fn text(&self) -> &str {
        match self {
            Undone::Failed(s) | Undone::Skipped(s) => s,
        }
    }
}

/// (region, id) → what became of each planned deletion.
pub type Results = BTreeMap<(String, String), Result<(), Undone>>;

/// Carries out the plan's deletions, every region at once. A second Ctrl-C hears what is not
/// deleted yet.
pub async fn execute(ec2: &Ec2, plan: &Plan, cancel: &Cancel) -> Results {
    let results = Arc::new(Mutex::new(Results::new()));
    let _report = {
        let results = results.clone();
        let planned: Vec<(String, String, String)> = plan
            .to_delete()
            .map(|i| (i.region.clone(), i.id.clone(), i.kind.label().to_string()))
            .collect();
        cancel.on_stop_now(move || {
            let done = results.lock().unwrap_or_else(|e| e.into_inner());
            let left: Vec<String> = planned
                .iter()
                .filter(|(r, id, _)| !matches!(done.get(&(r.clone(), id.clone())), Some(Ok(()))))
                .map(|(r, id, kind)| format!("{kind} {id} in {r}"))
                .collect();
            (!left.is_empty()).then(|| {
                let shown = left.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
                let more = left.len().saturating_sub(10);
                format!(
                    "not deleted yet: {} of {} planned ({shown}{}); run the same `tc-ami cleanup` again to finish",
                    left.len(),
                    planned.len(),
                    if more > 0 { format!(", and {more} more") } else { String::new() }
                )
            })
        })
    };
    let regions: BTreeSet<&str> = plan.to_delete().map(|i| i.region.as_str()).collect();
    join_all(regions.into_iter().map(|region| {
        let items: Vec<&Item> = plan.to_delete().filter(|i| i.region == region).collect();
        let run = RegionRun {
            ec2,
            region,
            cancel,
            results: &results,
        };
        async move { run.execute(items).await }
    }))
    .await;
    let results = results.lock().unwrap_or_else(|e| e.into_inner());
    results.clone()
}

/// What became of a password secret the plan removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOutcome {
    /// Removed, or there was none.
    Removed,
    /// Not tried: one of its build's image deletions did not happen (the next run finds it).
    Skipped,
    /// 403: the client lacks `secrets:set:<name>`.
    NotAllowed,
    Failed(String),
}

impl SecretOutcome {
    pub fn label(&self) -> &'static str {
        match self {
            SecretOutcome::Removed => "removed",
            SecretOutcome::Skipped => "skipped",
            SecretOutcome::NotAllowed => "not-allowed",
            SecretOutcome::Failed(_) => "failed",
        }
    }
}

/// Removes the password secrets of the plan whose images were all deleted (also after an
/// interrupt: once the images are gone, nothing else names the secret).
pub async fn remove_password_secrets<'a>(
    secrets: &SecretsApi,
    plan: &'a Plan,
    results: &Results,
) -> Vec<(&'a SecretRemoval, SecretOutcome)> {
    join_all(plan.secrets.iter().map(|s| async move {
        let done = s
            .images
            .iter()
            .all(|key| matches!(results.get(key), Some(Ok(()))));
        let outcome = if !done {
            SecretOutcome::Skipped
        } else {
            match secrets.remove(&s.name).await {
                Ok(()) => SecretOutcome::Removed,
                Err(e) if status_of(&e) == Some(403) => SecretOutcome::NotAllowed,
                Err(e) => SecretOutcome::Failed(format!("{e:#}")),
            }
        };
        (s, outcome)
    }))
    .await
}

/// The deletions in one region.
struct RegionRun<'a> {
    ec2: &'a Ec2,
    region: &'a str,
    cancel: &'a Cancel,
    results: &'a Mutex<Results>,
}

fn failed(e: anyhow::Error) -> Undone {
    Undone::Failed(format!("{e:#}"))
}

impl RegionRun<'_> {
    fn record(&self, item: &Item, r: Result<(), Undone>) {
        self.results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((self.region.to_string(), item.id.clone()), r);
    }

    fn interrupted(&self) -> Option<Undone> {
        self.cancel
            .interrupted()
            .map(|i| Undone::Skipped(format!("not started: {i}")))
    }

    /// Images, a few at a time, while the leftovers of killed builds go in their order.
    async fn execute(&self, items: Vec<&Item>) {
        let of_kind = |kind: Kind| -> Vec<&Item> {
            items.iter().copied().filter(|i| i.kind == kind).collect()
        };
        let images = futures::stream::iter(of_kind(Kind::Image))
            .map(|item| async move {
                let r = match self.interrupted() {
                    Some(skip) => Err(skip),
                    None => remove_image(
                        self.ec2,
                        self.region,
                        &item.id,
                        Snapshots::Listed(&item.snapshot_ids),
                    )
                    .await
                    .map(drop)
                    .map_err(failed),
                };
                self.record(item, r);
            })
            .buffer_unordered(IMAGE_CONCURRENCY)
            .collect::<Vec<()>>();
        let leftovers = async {
            let not_terminated = self.instances(&of_kind(Kind::Instance)).await;
            self.groups(&of_kind(Kind::SecurityGroup), &not_terminated)
                .await;
            self.key_pairs(&of_kind(Kind::KeyPair)).await;
            self.snapshots(&of_kind(Kind::Snapshot)).await;
        };
        tokio::join!(images, leftovers);
    }

    /// Terminates the instances, all at once, and waits for them; returns the builds whose
    /// instance is not terminated (their groups cannot go).
    async fn instances(&self, instances: &[&Item]) -> BTreeSet<String> {
        let mut not_done = BTreeSet::new();
        if instances.is_empty() {
            return not_done;
        }
        if let Some(skip) = self.interrupted() {
            for i in instances {
                not_done.insert(i.build_id.clone());
                self.record(i, Err(skip.clone()));
            }
            return not_done;
        }
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let outcome = terminate_and_wait(self.ec2, self.region, &ids, POLL_INTERVAL).await;
        for i in instances {
            let r = match &outcome {
                Err(e) => Err(Undone::Failed(format!("{e:#}"))),
                Ok(left) => match left.get(&i.id) {
                    Some(state) => Err(Undone::Failed(not_terminated(state))),
                    None => Ok(()),
                },
            };
            if r.is_err() {
                not_done.insert(i.build_id.clone());
            }
            self.record(i, r);
        }
        not_done
    }

    async fn groups(&self, groups: &[&Item], not_terminated: &BTreeSet<String>) {
        for group in groups {
            let r = if let Some(skip) = self.interrupted() {
                Err(skip)
            } else if not_terminated.contains(&group.build_id) {
                Err(Undone::Skipped(format!(
                    "not deleted: the instance of build {} was not terminated",
                    group.build_id
                )))
            } else {
                delete_group_when_free(self.ec2, self.region, &group.id)
                    .await
                    .map_err(failed)
            };
            self.record(group, r);
        }
    }

    async fn key_pairs(&self, keys: &[&Item]) {
        for key in keys {
            let r = match self.interrupted() {
                Some(skip) => Err(skip),
                // Deleted by name: that is how instances refer to it.
                None => self
                    .ec2
                    .delete_key_pair(self.region, &key.name)
                    .await
                    .map_err(failed),
            };
            self.record(key, r);
        }
    }

    async fn snapshots(&self, snapshots: &[&Item]) {
        for snap in snapshots {
            let r = match self.interrupted() {
                Some(skip) => Err(skip),
                None => delete_snapshot_when_free(self.ec2, self.region, &snap.id)
                    .await
                    .map_err(failed),
            };
            self.record(snap, r);
        }
    }
}
