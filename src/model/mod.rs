//! The model: plain data about EC2 resources that every layer shares, made in tests as easily
//! as from EC2's answers: images and instances with their typed states (the SDK's own enums),
//! the tag vocabulary ([`tags`]), the EC2 error codes tc-ami acts on ([`codes`]) and what a
//! region holds ([`inventory`]). Nothing here does I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};

pub mod codes;
pub mod inventory;
pub mod tags;

pub use aws_sdk_ec2::types::{ImageState, InstanceStateName};

/// Tags as EC2 takes them, in order: (key, value).
pub type Tags = Vec<(String, String)>;

fn as_str<S: Serializer, T: AsRef<str>>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_ref())
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Image {
    pub id: String,
    pub name: String,
    #[serde(serialize_with = "as_str")]
    pub state: ImageState,
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
        self.state == ImageState::Available
    }

    /// Failed for good: it will never be available.
    pub fn has_failed(&self) -> bool {
        matches!(
            self.state,
            ImageState::Failed | ImageState::Error | ImageState::Deregistered | ImageState::Invalid
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceStateName,
    /// EC2's StateReason code, e.g. `Client.InstanceInitiatedShutdown`.
    pub state_reason: Option<String>,
}

impl Instance {
    /// "the instance i-… is terminated (Server.SpotInstanceTermination)"
    pub fn gone_text(&self) -> String {
        format!(
            "the instance {} is {}{}",
            self.id,
            self.state,
            self.state_reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )
    }
}

/// The states of an instance that is not terminated (EC2's `instance-state-name` filter).
pub const LIVE_INSTANCE_STATES: [InstanceStateName; 5] = [
    InstanceStateName::Pending,
    InstanceStateName::Running,
    InstanceStateName::Stopping,
    InstanceStateName::Stopped,
    InstanceStateName::ShuttingDown,
];

/// Parses EC2's `CreationDate` (`2026-11-24T21:40:01.000Z`).
pub fn parse_ec2_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}
