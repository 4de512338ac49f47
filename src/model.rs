//! Plain data about EC2 resources, independent of the SDK's types, so that the pure parts
//! (base AMI choice, cleanup planning) can be tested with values made in a test.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    /// `pending`, `available`, `failed`, …
    pub state: String,
    pub creation_date: Option<DateTime<Utc>>,
    pub owner_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_device_name: Option<String>,
    /// Snapshot ids of every EBS block device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub snapshot_ids: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
}

impl Image {
    pub fn is_available(&self) -> bool {
        self.state == "available"
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: String,
    /// EC2's StateReason code, e.g. `Client.InstanceInitiatedShutdown`.
    pub state_reason: Option<String>,
}

/// Parses EC2's `CreationDate` (`2026-11-24T21:40:01.000Z`).
pub fn parse_ec2_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}
