//! The EC2 listings `cleanup` makes beyond [`crate::ec2`]: everything the account owns in a
//! region, every page (the SDK's paginators). SDK types in, model data out; no decisions.

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::ec2::{Ec2, call, filter, image_from_sdk, live_instances, tags_map};
use crate::model::inventory::{Kind, Resource};
use crate::model::{Image, tags};

/// The largest page EC2 serves for these Describe calls.
const PAGE: i32 = 1000;

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

impl Ec2 {
    /// Every image the account owns in `region`, whatever its tags, all pages.
    pub async fn list_own_images(&self, region: &str) -> Result<Vec<Image>> {
        let pages = self
            .client(region)
            .describe_images()
            .owners("self")
            .max_results(PAGE)
            .into_paginator()
            .send();
        let pages = call("DescribeImages", region, "owner self", pages.try_collect()).await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.images())
            .map(image_from_sdk)
            .collect())
    }

    /// The account's snapshots in `region` that carry the tag key `key`, all pages.
    pub async fn list_own_snapshots_tagged(
        &self,
        region: &str,
        key: &str,
    ) -> Result<Vec<Resource>> {
        let pages = self
            .client(region)
            .describe_snapshots()
            .owner_ids("self")
            .filters(filter("tag-key", &[key]))
            .max_results(PAGE)
            .into_paginator()
            .send();
        let pages = call("DescribeSnapshots", region, key, pages.try_collect()).await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.snapshots())
            .map(|s| Resource {
                kind: Kind::Snapshot,
                id: s.snapshot_id().unwrap_or_default().to_string(),
                name: s.description().unwrap_or_default().to_string(),
                state: s.state().map(|s| s.as_str().to_string()),
                created: time(s.start_time()),
                tags: tags_map(s.tags()),
            })
            .collect())
    }

    /// Instances in `region` that carry one of the tag keys `keys` and are not terminated, all
    /// pages.
    pub async fn list_instances_tagged(
        &self,
        region: &str,
        keys: &[&str],
    ) -> Result<Vec<Resource>> {
        let pages = self
            .client(region)
            .describe_instances()
            .filters(filter("tag-key", keys))
            .filters(live_instances())
            .max_results(PAGE)
            .into_paginator()
            .send();
        let target = keys.join(" ");
        let pages = call("DescribeInstances", region, &target, pages.try_collect()).await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.reservations())
            .flat_map(|r| r.instances())
            .map(|i| {
                let tags = tags_map(i.tags());
                Resource {
                    kind: Kind::Instance,
                    id: i.instance_id().unwrap_or_default().to_string(),
                    name: tags.get(tags::NAME).cloned().unwrap_or_default(),
                    state: i
                        .state()
                        .and_then(|s| s.name())
                        .map(|n| n.as_str().to_string()),
                    created: time(i.launch_time()),
                    tags,
                }
            })
            .collect())
    }

    /// Security groups in `region` that carry one of the tag keys `keys`, all pages. EC2 gives
    /// groups no creation time: the build's `tc-ami:created-at` tag tells their age.
    pub async fn list_security_groups_tagged(
        &self,
        region: &str,
        keys: &[&str],
    ) -> Result<Vec<Resource>> {
        let pages = self
            .client(region)
            .describe_security_groups()
            .filters(filter("tag-key", keys))
            .max_results(PAGE)
            .into_paginator()
            .send();
        let target = keys.join(" ");
        let pages = call(
            "DescribeSecurityGroups",
            region,
            &target,
            pages.try_collect(),
        )
        .await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.security_groups())
            .map(|g| Resource {
                kind: Kind::SecurityGroup,
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                state: None,
                created: None,
                tags: tags_map(g.tags()),
            })
            .collect())
    }

    /// Key pairs in `region` that carry one of the tag keys `keys` (DescribeKeyPairs has no
    /// pages): one call per key, since moto 5.2.5 matches a `tag-key` filter of several values
    /// only when the key pair's keys are a subset or superset of them (EC2 ORs the values).
    pub async fn list_key_pairs_tagged(
        &self,
        region: &str,
        keys: &[&str],
    ) -> Result<Vec<Resource>> {
        let mut out: Vec<Resource> = Vec::new();
        for key in keys {
            let req = self
                .client(region)
                .describe_key_pairs()
                .filters(filter("tag-key", &[key]));
            let listed = call("DescribeKeyPairs", region, key, req.send()).await?;
            for k in listed.key_pairs() {
                let id = k.key_pair_id().unwrap_or_default();
                if out.iter().any(|r| r.id == id) {
                    continue;
                }
                out.push(Resource {
                    kind: Kind::KeyPair,
                    id: id.to_string(),
                    name: k.key_name().unwrap_or_default().to_string(),
                    state: None,
                    created: time(k.create_time()),
                    tags: tags_map(k.tags()),
                });
            }
        }
        Ok(out)
    }
}
