//! The EC2 calls `cleanup` makes beyond [`crate::ec2`]: listing what the account owns (every
//! page), and acting on many instances at once. SDK types in, plain data out; no decisions.

use std::collections::BTreeMap;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::cleanup::{Kind, Resource};
use crate::ec2::{Ec2, filter, image_from_sdk, sdk_error, tags_map};
use crate::model::Image;

/// The largest page EC2 serves for these Describe calls.
const PAGE: i32 = 1000;

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

impl Ec2 {
    /// Every image the account owns in `region`, whatever its tags, all pages.
    pub async fn list_own_images(&self, region: &str) -> Result<Vec<Image>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client(region)
                .describe_images()
                .owners("self")
                .max_results(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("DescribeImages", region, e))?;
            out.extend(page.images().iter().map(image_from_sdk));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// The account's snapshots in `region` that carry the tag key `key`, all pages.
    pub async fn list_own_snapshots_tagged(
        &self,
        region: &str,
        key: &str,
    ) -> Result<Vec<Resource>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client(region)
                .describe_snapshots()
                .owner_ids("self")
                .filters(filter("tag-key", &[key]))
                .max_results(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("DescribeSnapshots", region, e))?;
            out.extend(page.snapshots().iter().map(|s| Resource {
                kind: Kind::Snapshot,
                id: s.snapshot_id().unwrap_or_default().to_string(),
                name: s.description().unwrap_or_default().to_string(),
                state: s.state().map(|s| s.as_str().to_string()),
                created: time(s.start_time()),
                tags: tags_map(s.tags()),
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Instances in `region` that carry the tag key `key` and are not terminated, all pages.
    pub async fn list_instances_tagged(&self, region: &str, key: &str) -> Result<Vec<Resource>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client(region)
                .describe_instances()
                .filters(filter("tag-key", &[key]))
                .filters(filter(
                    "instance-state-name",
                    &["pending", "running", "stopping", "stopped", "shutting-down"],
                ))
                .max_results(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("DescribeInstances", region, e))?;
            out.extend(
                page.reservations()
                    .iter()
                    .flat_map(|r| r.instances())
                    .map(|i| {
                        let tags = tags_map(i.tags());
                        Resource {
                            kind: Kind::Instance,
                            id: i.instance_id().unwrap_or_default().to_string(),
                            name: tags.get("Name").cloned().unwrap_or_default(),
                            state: i
                                .state()
                                .and_then(|s| s.name())
                                .map(|n| n.as_str().to_string()),
                            created: time(i.launch_time()),
                            tags,
                        }
                    }),
            );
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Security groups in `region` that carry the tag key `key`, all pages. EC2 gives groups no
    /// creation time: the build's `tc-ami:created-at` tag tells their age.
    pub async fn list_security_groups_tagged(
        &self,
        region: &str,
        key: &str,
    ) -> Result<Vec<Resource>> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client(region)
                .describe_security_groups()
                .filters(filter("tag-key", &[key]))
                .max_results(PAGE)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| sdk_error("DescribeSecurityGroups", region, e))?;
            out.extend(page.security_groups().iter().map(|g| Resource {
                kind: Kind::SecurityGroup,
                id: g.group_id().unwrap_or_default().to_string(),
                name: g.group_name().unwrap_or_default().to_string(),
                state: None,
                created: None,
                tags: tags_map(g.tags()),
            }));
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Key pairs in `region` that carry the tag key `key` (DescribeKeyPairs has no pages).
    pub async fn list_key_pairs_tagged(&self, region: &str, key: &str) -> Result<Vec<Resource>> {
        let out = self
            .client(region)
            .describe_key_pairs()
            .filters(filter("tag-key", &[key]))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeKeyPairs", region, e))?;
        Ok(out
            .key_pairs()
            .iter()
            .map(|k| Resource {
                kind: Kind::KeyPair,
                id: k.key_pair_id().unwrap_or_default().to_string(),
                name: k.key_name().unwrap_or_default().to_string(),
                state: None,
                created: time(k.create_time()),
                tags: tags_map(k.tags()),
            })
            .collect())
    }

    /// Terminates these instances in one call.
    pub async fn terminate_instances(&self, region: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client(region)
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| sdk_error("TerminateInstances", region, e))?;
        Ok(())
    }

    /// The state of each of these instances that EC2 still knows, in one call.
    pub async fn instance_states(
        &self,
        region: &str,
        ids: &[String],
    ) -> Result<BTreeMap<String, String>> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let out = self
            .client(region)
            .describe_instances()
            .filters(filter(
                "instance-id",
                &ids.iter().map(String::as_str).collect::<Vec<_>>(),
            ))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstances", region, e))?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some((
                    i.instance_id()?.to_string(),
                    i.state()?.name()?.as_str().to_string(),
                ))
            })
            .collect())
    }
}
