//! The worker pool definition and the change a deploy makes to it (pure).
//!
//! What deploy changes (the README's "What changes in the pool"):
//! - `config.launchConfigs[i].launchConfig.ImageId` := the image for that launch config's region;
//! - every `workerConfig.genericWorker.config.deploymentId` the pool carries := one new string;
//! - a launch config whose content changes loses `workerManager.launchConfigId`, so that the
//!   service gives it a new id and archives the old one (keeping the old id is refused, 409);
//! - the fields the service adds on GET and refuses on update are not posted back;
//! - nothing else changes, and key order is kept, so the diff shows only what changed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// The fields GET returns that the update schema refuses (`additionalProperties: false`).
pub const SERVER_ONLY_FIELDS: [&str; 9] = [
    "currentCapacity",
    "requestedCount",
    "runningCount",
    "stoppingCount",
    "stoppedCount",
    "requestedCapacity",
    "runningCapacity",
    "stoppingCapacity",
    "stoppedCapacity",
];

/// Fields the service sets itself; allowed on update and ignored, so left out of diffs.
pub const SERVER_MANAGED_FIELDS: [&str; 2] = ["created", "lastModified"];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PoolError {
    #[error(
        "worker pool {0} has no config.launchConfigs list; tc-ami patches AWS-provider pools only"
    )]
    NoLaunchConfigs(String),
    #[error(
        "worker pool {0} has an empty config.launchConfigs list: there is nothing to deploy an image to"
    )]
    EmptyLaunchConfigs(String),
    #[error("worker pool {pool}: launchConfigs[{index}] has no `region` string")]
    NoRegion { pool: String, index: usize },
    #[error(
        "worker pool {pool} has launch configs in {region} but no image was given for it; pass --image {region}=AMI (images given for: {given})"
    )]
    NoImageForRegion {
        pool: String,
        region: String,
        given: String,
    },
}

/// The definition as tc-ami compares and posts it: the GET response without the server-only
/// and server-managed fields, keys in the order the service gave them.
pub fn definition(live: &Value) -> Value {
    let mut def = live.clone();
    if let Some(obj) = def.as_object_mut() {
        for f in SERVER_ONLY_FIELDS
            .iter()
            .chain(SERVER_MANAGED_FIELDS.iter())
        {
            obj.shift_remove(*f);
        }
    }
    def
}

/// The regions of the pool's launch configs, sorted, without duplicates.
pub fn pool_regions(pool_id: &str, def: &Value) -> Result<Vec<String>, PoolError> {
    let lcs = launch_configs(pool_id, def)?;
    let mut regions = BTreeSet::new();
    for (index, lc) in lcs.iter().enumerate() {
        let region = lc["region"].as_str().ok_or(PoolError::NoRegion {
            pool: pool_id.to_string(),
            index,
        })?;
        regions.insert(region.to_string());
    }
    Ok(regions.into_iter().collect())
}

fn launch_configs<'a>(pool_id: &str, def: &'a Value) -> Result<&'a Vec<Value>, PoolError> {
    let lcs = def["config"]["launchConfigs"]
        .as_array()
        .ok_or_else(|| PoolError::NoLaunchConfigs(pool_id.to_string()))?;
    if lcs.is_empty() {
        return Err(PoolError::EmptyLaunchConfigs(pool_id.to_string()));
    }
    Ok(lcs)
}

/// The region → ImageId of the live pool (the first launch config of each region wins; they
/// normally agree).
pub fn live_images(def: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for lc in def["config"]["launchConfigs"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let (Some(region), Some(image)) = (
            lc["region"].as_str(),
            lc["launchConfig"]["ImageId"].as_str(),
        ) {
            out.entry(region.to_string())
                .or_insert_with(|| image.to_string());
        }
    }
    out
}

/// Every launch config's region and ImageId, in order, duplicates kept: what the pool may
/// launch (a canary launch config on another image counts as much as the first one).
pub fn launch_config_images(def: &Value) -> Vec<(String, Option<String>)> {
    def["config"]["launchConfigs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|lc| {
            let region = lc["region"].as_str()?;
            let image = lc["launchConfig"]["ImageId"].as_str().map(str::to_string);
            Some((region.to_string(), image))
        })
        .collect()
}

/// The deploymentIds the pool carries (usually one value).
pub fn deployment_ids(def: &Value) -> Vec<String> {
    let mut ids: Vec<String> = def["config"]["launchConfigs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|lc| lc["workerConfig"]["genericWorker"]["config"]["deploymentId"].as_str())
        .map(str::to_string)
        .collect();
    ids.dedup();
    ids
}

/// A readable deployment id: the image of the pool's first launch config and the UTC time.
pub fn new_deployment_id(image: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    format!("{image}-{}", now.format("%Y%m%dT%H%M%SZ"))
}

#[derive(Debug, Clone, PartialEq)]
pub struct Patched {
    /// The definition to post.
    pub after: Value,
    /// Whether anything changes at all.
    pub changed: bool,
    /// Indexes of the launch configs whose content changed (they lose their launchConfigId).
    pub changed_launch_configs: Vec<usize>,
    /// The deploymentId set, when the pool carries one and something changed.
    pub deployment_id: Option<String>,
}

/// The launch config as the service hashes it for its id: without `workerManager`.
fn content(lc: &Value) -> Value {
    let mut c = lc.clone();
    if let Some(o) = c.as_object_mut() {
        o.shift_remove("workerManager");
    }
    c
}

/// Patches `def` (from [`definition`]) to run `images` (region → AMI). When no ImageId
/// changes, nothing changes (not even the deploymentId), so `diff` can say "up to date".
/// `deployment_id` makes the new deploymentId from the image of the first launch config.
pub fn patch_pool(
    pool_id: &str,
    def: &Value,
    images: &BTreeMap<String, String>,
    deployment_id: impl FnOnce(&str) -> String,
) -> Result<Patched, PoolError> {
    let regions = pool_regions(pool_id, def)?;
    if let Some(missing) = regions.iter().find(|r| !images.contains_key(*r)) {
        return Err(PoolError::NoImageForRegion {
            pool: pool_id.to_string(),
            region: missing.clone(),
            given: if images.is_empty() {
                "none".into()
            } else {
                images.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        });
    }
    let mut after = def.clone();
    let lcs = after["config"]["launchConfigs"]
        .as_array_mut()
        .ok_or_else(|| PoolError::NoLaunchConfigs(pool_id.to_string()))?;
    let before: Vec<Value> = lcs.iter().map(content).collect();
    if !set_images(lcs, images) {
        return Ok(Patched {
            after: def.clone(),
            changed: false,
            changed_launch_configs: vec![],
            deployment_id: None,
        });
    }
    let deployment_id = set_deployment_id(lcs, deployment_id);
    let mut changed_launch_configs = Vec::new();
    for (i, lc) in lcs.iter_mut().enumerate() {
        if content(lc) != before[i] {
            changed_launch_configs.push(i);
            drop_launch_config_id(lc);
        }
    }
    Ok(Patched {
        after,
        changed: true,
        changed_launch_configs,
        deployment_id,
    })
}

/// Sets each launch config's ImageId to its region's image; whether any changed.
fn set_images(lcs: &mut [Value], images: &BTreeMap<String, String>) -> bool {
    let mut changed = false;
    for lc in lcs.iter_mut() {
        let region = lc["region"].as_str().unwrap_or_default().to_string();
        let image = &images[&region];
        if lc["launchConfig"]["ImageId"].as_str() != Some(image.as_str()) {
            changed = true;
            set_key(
                lc,
                &["launchConfig", "ImageId"],
                Value::String(image.clone()),
            );
        }
    }
    changed
}

/// When the pool carries a deploymentId, sets one new one (made from the first launch
/// config's image) everywhere it is carried, and returns it.
fn set_deployment_id(
    lcs: &mut [Value],
    deployment_id: impl FnOnce(&str) -> String,
) -> Option<String> {
    let carries = |lc: &Value| {
        lc["workerConfig"]["genericWorker"]["config"]
            .get("deploymentId")
            .is_some()
    };
    if !lcs.iter().any(carries) {
        return None;
    }
    let first_image = lcs[0]["launchConfig"]["ImageId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let id = deployment_id(&first_image);
    for lc in lcs.iter_mut().filter(|lc| carries(lc)) {
        set_key(
            lc,
            &["workerConfig", "genericWorker", "config", "deploymentId"],
            Value::String(id.clone()),
        );
    }
    Some(id)
}

/// Sets a nested key in place (its position among its siblings is kept).
fn set_key(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for key in &path[..path.len() - 1] {
        if !cur.get(*key).is_some_and(Value::is_object) {
            cur[*key] = Value::Object(Map::new());
        }
        cur = &mut cur[*key];
    }
    cur[path[path.len() - 1]] = value;
}

fn drop_launch_config_id(lc: &mut Value) {
    let Some(obj) = lc.as_object_mut() else {
        return;
    };
    let empty = match obj.get_mut("workerManager").and_then(Value::as_object_mut) {
        Some(wm) => {
            wm.shift_remove("launchConfigId");
            wm.is_empty()
        }
        None => false,
    };
    if empty {
        obj.shift_remove("workerManager");
    }
}

/// The body of `updateWorkerPool`: the definition without the fields the service refuses.
pub fn update_payload(def: &Value) -> Value {
    definition(def)
}

/// Checks that the pool the service now holds is what was pushed, as JSON values: launch
/// configs are matched by content (the service reorders them and their keys, and assigns ids
/// to those posted without one); a launch config posted with an id must keep it. Returns a
/// description of the first difference.
pub fn verify_pushed(pushed: &Value, live: &Value) -> Result<(), String> {
    let pushed = definition(pushed);
    let live = definition(live);
    let strip_lcs = |v: &Value| {
        let mut v = v.clone();
        if let Some(c) = v.get_mut("config").and_then(Value::as_object_mut) {
            c.shift_remove("launchConfigs");
        }
        if let Some(o) = v.as_object_mut() {
            o.shift_remove("workerPoolId");
        }
        v
    };
    if strip_lcs(&pushed) != strip_lcs(&live) {
        return Err(
            "the pool's fields other than its launch configs differ from what was pushed".into(),
        );
    }
    let lcs = |v: &Value| {
        v["config"]["launchConfigs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let (want, got) = (lcs(&pushed), lcs(&live));
    if want.len() != got.len() {
        return Err(format!(
            "{} launch configs were pushed, the pool has {}",
            want.len(),
            got.len()
        ));
    }
    let canon = |lc: &Value| -> Value {
        let mut c = lc.clone();
        drop_launch_config_id(&mut c);
        c
    };
    let mut remaining: Vec<Value> = got.iter().map(canon).collect();
    for lc in &want {
        let c = canon(lc);
        let Some(pos) = remaining.iter().position(|g| *g == c) else {
            return Err(format!(
                "the launch config for {} with ImageId {} is not in the pool as pushed",
                lc["region"], lc["launchConfig"]["ImageId"]
            ));
        };
        remaining.remove(pos);
        if let Some(id) = lc["workerManager"]["launchConfigId"].as_str()
            && !got
                .iter()
                .any(|g| g["workerManager"]["launchConfigId"].as_str() == Some(id))
        {
            return Err(format!(
                "launch config id {id} was pushed but is not in the pool"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn images(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(r, i)| (r.to_string(), i.to_string()))
            .collect()
    }

    fn dep(image: &str) -> String {
        format!("{image}-20261124T220000Z")
    }

    /// A pool as the service returns it: jsonb key order, counts, injected ids, two regions,
    /// launch configs not in region order, an unknown extra key, legacy capacityPerInstance.
    fn live() -> Value {
        json!({
            "owner": "servo-ops@example.com",
            "config": {
                "lifecycle": {"registrationTimeout": 3600, "reregistrationTimeout": 345600},
                "maxCapacity": 8,
                "minCapacity": 0,
                "scalingRatio": 1,
                "launchConfigs": [
                    {
                        "region": "us-west-2",
                        "workerConfig": {"genericWorker": {"config": {"deploymentId": "old-1", "wstAudience": "communitytc"}}},
                        "launchConfig": {"ImageId": "ami-west-old", "InstanceType": "c5.4xlarge", "SubnetId": "subnet-1", "FutureEc2Field": {"kept": [1, 2]}},
                        "workerManager": {"launchConfigId": "lc-aaaaaaaaaaaaaaaaaaaa"},
                        "capacityPerInstance": 1
                    },
                    {
                        "region": "us-east-1",
                        "workerConfig": {"genericWorker": {"config": {"deploymentId": "old-1"}}},
                        "launchConfig": {"ImageId": "ami-east-old", "InstanceType": "c5.4xlarge"},
                        "workerManager": {"launchConfigId": "explicit-east", "initialWeight": 2}
                    },
                    {
                        "region": "us-west-2",
                        "workerConfig": {"genericWorker": {"config": {"deploymentId": "old-1"}}},
                        "launchConfig": {"ImageId": "ami-west-old", "InstanceType": "m5.4xlarge"},
                        "additionalUserData": {"x": 1}
                    }
                ]
            },
            "created": "2026-01-01T00:00:00.000Z",
            "providerId": "aws",
            "description": "Servo Windows",
            "emailOnError": false,
            "workerPoolId": "proj-servo/win2016",
            "lastModified": "2026-11-01T00:00:00.000Z",
            "currentCapacity": 0, "requestedCount": 0, "runningCount": 0, "stoppingCount": 0,
            "stoppedCount": 0, "requestedCapacity": 0, "runningCapacity": 0, "stoppingCapacity": 0,
            "stoppedCapacity": 0
        })
    }

    #[test]
    fn definition_drops_what_update_refuses_and_keeps_key_order() {
        let def = definition(&live());
        let keys: Vec<&str> = def
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            vec![
                "owner",
                "config",
                "providerId",
                "description",
                "emailOnError",
                "workerPoolId"
            ]
        );
    }

    #[test]
    fn patch_sets_images_deployment_id_and_drops_changed_ids() {
        let def = definition(&live());
        let p = patch_pool(
            "proj-servo/win2016",
            &def,
            &images(&[("us-west-2", "ami-west-new"), ("us-east-1", "ami-east-new")]),
            dep,
        )
        .unwrap();
        assert!(p.changed);
        assert_eq!(
            p.deployment_id.as_deref(),
            Some("ami-west-new-20261124T220000Z")
        );
        assert_eq!(p.changed_launch_configs, vec![0, 1, 2]);
        let lcs = p.after["config"]["launchConfigs"].as_array().unwrap();
        assert_eq!(lcs[0]["launchConfig"]["ImageId"], "ami-west-new");
        assert_eq!(lcs[1]["launchConfig"]["ImageId"], "ami-east-new");
        assert_eq!(lcs[2]["launchConfig"]["ImageId"], "ami-west-new");
        for lc in lcs {
            assert_eq!(
                lc["workerConfig"]["genericWorker"]["config"]["deploymentId"],
                "ami-west-new-20261124T220000Z"
            );
            assert!(lc["workerManager"].get("launchConfigId").is_none(), "{lc}");
        }
        // The only-id workerManager disappears; one with other fields keeps them.
        assert!(lcs[0].get("workerManager").is_none());
        assert_eq!(lcs[1]["workerManager"], json!({"initialWeight": 2}));
        // Everything else is untouched, in its order.
        assert_eq!(lcs[0]["capacityPerInstance"], 1);
        assert_eq!(lcs[2]["additionalUserData"], json!({"x": 1}));
        assert_eq!(
            lcs[0]["workerConfig"]["genericWorker"]["config"]["wstAudience"],
            "communitytc"
        );
        let lc_keys: Vec<&str> = lcs[0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            lc_keys,
            vec![
                "region",
                "workerConfig",
                "launchConfig",
                "capacityPerInstance"
            ]
        );
        let lc_keys: Vec<&str> = lcs[0]["launchConfig"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            lc_keys,
            vec!["ImageId", "InstanceType", "SubnetId", "FutureEc2Field"]
        );
        assert_eq!(
            lcs[0]["launchConfig"]["FutureEc2Field"],
            json!({"kept": [1, 2]})
        );
        assert_eq!(p.after["config"]["lifecycle"], def["config"]["lifecycle"]);
    }

    #[test]
    fn nothing_changes_when_the_images_are_live() {
        let def = definition(&live());
        let p = patch_pool(
            "proj-servo/win2016",
            &def,
            &images(&[("us-west-2", "ami-west-old"), ("us-east-1", "ami-east-old")]),
            dep,
        )
        .unwrap();
        assert!(!p.changed);
        assert_eq!(p.after, def);
        assert_eq!(p.deployment_id, None);
    }

    #[test]
    fn one_region_changing_renews_the_deployment_id_everywhere() {
        let def = definition(&live());
        let p = patch_pool(
            "proj-servo/win2016",
            &def,
            &images(&[("us-west-2", "ami-west-old"), ("us-east-1", "ami-east-new")]),
            dep,
        )
        .unwrap();
        assert!(p.changed);
        // The west launch configs change only by their deploymentId, and so lose their id too.
        assert_eq!(p.changed_launch_configs, vec![0, 1, 2]);
        assert_eq!(
            p.deployment_id.as_deref(),
            Some("ami-west-old-20261124T220000Z")
        );
    }

    #[test]
    fn pools_without_deployment_id_get_none_and_keep_unchanged_ids() {
        let mut def = definition(&live());
        for lc in def["config"]["launchConfigs"].as_array_mut().unwrap() {
            lc.as_object_mut().unwrap().remove("workerConfig");
        }
        let p = patch_pool(
            "proj-servo/win2016",
            &def,
            &images(&[("us-west-2", "ami-west-old"), ("us-east-1", "ami-east-new")]),
            dep,
        )
        .unwrap();
        assert_eq!(p.deployment_id, None);
        assert_eq!(p.changed_launch_configs, vec![1]);
        let lcs = p.after["config"]["launchConfigs"].as_array().unwrap();
        assert_eq!(
            lcs[0]["workerManager"]["launchConfigId"],
            "lc-aaaaaaaaaaaaaaaaaaaa"
        );
        assert!(lcs[0]["workerConfig"].is_null(), "no workerConfig invented");
    }

    #[test]
    fn a_region_without_an_image_is_an_error() {
        let def = definition(&live());
        let err = patch_pool(
            "proj-servo/win2016",
            &def,
            &images(&[("us-west-2", "ami-1")]),
            dep,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "worker pool proj-servo/win2016 has launch configs in us-east-1 but no image was given for it; pass --image us-east-1=AMI (images given for: us-west-2)"
        );
    }

    #[test]
    fn pools_without_launch_configs_are_errors() {
        let empty = json!({"config": {"launchConfigs": []}});
        assert_eq!(
            patch_pool("p/w", &empty, &images(&[]), dep).unwrap_err(),
            PoolError::EmptyLaunchConfigs("p/w".into())
        );
        let none = json!({"config": {}});
        assert_eq!(
            pool_regions("p/w", &none).unwrap_err(),
            PoolError::NoLaunchConfigs("p/w".into())
        );
        let no_region = json!({"config": {"launchConfigs": [{"launchConfig": {"ImageId": "x"}}]}});
        assert!(matches!(
            pool_regions("p/w", &no_region),
            Err(PoolError::NoRegion { index: 0, .. })
        ));
    }

    #[test]
    fn live_images_and_deployment_ids() {
        let def = definition(&live());
        assert_eq!(
            live_images(&def),
            images(&[("us-west-2", "ami-west-old"), ("us-east-1", "ami-east-old")])
        );
        assert_eq!(deployment_ids(&def), vec!["old-1"]);
    }

    #[test]
    fn every_launch_config_image_counts_not_only_the_first_per_region() {
        let mut def = definition(&live());
        let lcs = def["config"]["launchConfigs"].as_array_mut().unwrap();
        // A canary in us-west-2 on another image, and a launch config without an ImageId.
        let mut canary = lcs[0].clone();
        canary["launchConfig"]["ImageId"] = json!("ami-west-canary");
        lcs.push(canary);
        let mut bare = lcs[1].clone();
        bare["launchConfig"] = json!({});
        lcs.push(bare);
        assert_eq!(
            launch_config_images(&def),
            [
                ("us-west-2", Some("ami-west-old")),
                ("us-east-1", Some("ami-east-old")),
                ("us-west-2", Some("ami-west-old")),
                ("us-west-2", Some("ami-west-canary")),
                ("us-east-1", None),
            ]
            .map(|(r, i)| (r.to_string(), i.map(str::to_string)))
        );
        // "The" image per region, for the commands that need one, is still the first.
        assert_eq!(live_images(&def)["us-west-2"], "ami-west-old");
    }

    #[test]
    fn verification_ignores_order_and_assigned_ids() {
        let def = definition(&live());
        let p = patch_pool(
            "proj-servo/win2016",
            &def,
            &images(&[("us-west-2", "ami-w"), ("us-east-1", "ami-e")]),
            dep,
        )
        .unwrap();
        // The service: launch configs reversed, ids assigned, keys reordered, counts added.
        let mut served = p.after.clone();
        let lcs = served["config"]["launchConfigs"].as_array_mut().unwrap();
        lcs.reverse();
        for (i, lc) in lcs.iter_mut().enumerate() {
            set_key(
                lc,
                &["workerManager", "launchConfigId"],
                json!(format!("lc-new{i}")),
            );
        }
        served["runningCount"] = json!(0);
        served["lastModified"] = json!("2026-11-24T22:00:00.000Z");
        let reordered: Value =
            serde_json::from_str(&serde_json::to_string(&served).unwrap()).unwrap();
        assert_eq!(verify_pushed(&p.after, &reordered), Ok(()));

        let mut wrong = served.clone();
        wrong["config"]["launchConfigs"][0]["launchConfig"]["ImageId"] = json!("ami-other");
        assert!(
            verify_pushed(&p.after, &wrong)
                .unwrap_err()
                .contains("is not in the pool as pushed")
        );
        let mut wrong = served.clone();
        wrong["description"] = json!("changed");
        assert!(verify_pushed(&p.after, &wrong).is_err());
    }

    #[test]
    fn update_payload_has_no_server_fields() {
        let payload = update_payload(&live());
        for f in SERVER_ONLY_FIELDS
            .iter()
            .chain(SERVER_MANAGED_FIELDS.iter())
        {
            assert!(payload.get(*f).is_none(), "{f}");
        }
        assert_eq!(payload["workerPoolId"], "proj-servo/win2016");
    }
}
