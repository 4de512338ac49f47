//! The EC2 calls `tc-ami debug-instance` makes beyond [`crate::ec2`]: the RDP rule of its
//! security group and describing debug instances. SDK types in, model data out; no decisions.

use anyhow::Result;
use aws_sdk_ec2::types::{IpPermission, IpRange, Ipv6Range};
use chrono::{DateTime, Utc};

use crate::debug_instance::{Cidr, DebugInstance};
use crate::ec2::{Ec2, call, filter, live_instances, tags_map};
use crate::model::tags;

/// The largest page DescribeInstances serves.
const PAGE: i32 = 1000;

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
}

fn debug_instance(region: &str, i: &aws_sdk_ec2::types::Instance) -> DebugInstance {
    let tags = tags_map(i.tags());
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    DebugInstance {
        instance_id: i.instance_id().unwrap_or_default().to_string(),
        region: region.to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        debug_id: tags.get(tags::DEBUG_ID).cloned(),
        worker_type: tags.get(tags::WORKER_TYPE).cloned(),
        address: nonempty(i.public_dns_name()).or_else(|| nonempty(i.public_ip_address())),
        launched: time(i.launch_time()),
        expires_at: crate::cleanup::parse_expires_at(&tags),
        key_name: nonempty(i.key_name()),
        security_groups: i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
    }
}

impl Ec2 {
    /// Admits TCP `port` from `cidr` (and nothing else) into the security group.
    pub async fn authorize_tcp_from(
        &self,
        region: &str,
        group_id: &str,
        port: u16,
        cidr: &Cidr,
    ) -> Result<()> {
        let mut rule = IpPermission::builder()
            .ip_protocol("tcp")
            .from_port(i32::from(port))
            .to_port(i32::from(port));
        let description = "RDP, tc-ami debug-instance";
        rule = if cidr.ipv6 {
            rule.ipv6_ranges(
                Ipv6Range::builder()
                    .cidr_ipv6(&cidr.text)
                    .description(description)
                    .build(),
            )
        } else {
            rule.ip_ranges(
                IpRange::builder()
                    .cidr_ip(&cidr.text)
                    .description(description)
                    .build(),
            )
        };
        let req = self
            .client(region)
            .authorize_security_group_ingress()
            .group_id(group_id)
            .ip_permissions(rule.build());
        let target = format!("{group_id} tcp/{port} from {}", cidr.text);
        call("AuthorizeSecurityGroupIngress", region, &target, req.send()).await?;
        Ok(())
    }

    /// The debug instances in `region` (tagged `tc-ami:debug-id`, not terminated), all pages.
    pub async fn list_debug_instances(&self, region: &str) -> Result<Vec<DebugInstance>> {
        let pages = self
            .client(region)
            .describe_instances()
            .filters(filter("tag-key", &[tags::DEBUG_ID]))
            .filters(live_instances())
            .max_results(PAGE)
            .into_paginator()
            .send();
        let pages = call(
            "DescribeInstances",
            region,
            tags::DEBUG_ID,
            pages.try_collect(),
        )
        .await?;
        Ok(pages
            .iter()
            .flat_map(|p| p.reservations())
            .flat_map(|r| r.instances())
            .map(|i| debug_instance(region, i))
            .collect())
    }

    /// The instance `id` in `region`, whatever its tags (`debug_id` None: not a debug
    /// instance); None when EC2 does not know it there.
    pub async fn find_instance(&self, region: &str, id: &str) -> Result<Option<DebugInstance>> {
        Ok(self
            .describe_sdk_instance(region, id)
            .await?
            .as_ref()
            .map(|i| debug_instance(region, i)))
    }
}
