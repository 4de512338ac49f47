//! What a region holds of tc-ami's, as listed: the input of cleanup planning.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Image;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Image,
    Instance,
    SecurityGroup,
    KeyPair,
    Snapshot,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Instance => "instance",
            Kind::SecurityGroup => "security group",
            Kind::KeyPair => "key pair",
            Kind::Snapshot => "snapshot",
        }
    }
}

/// A build resource as listed (instance, security group, key pair, snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub kind: Kind,
    /// `i-…`, `sg-…`, `key-…`, `snap-…`.
    pub id: String,
    /// The key pair or group name, the instance's `Name` tag, the snapshot's description.
    pub name: String,
    /// Instances: `running`, `stopped`, …; snapshots: `completed`, …
    pub state: Option<String>,
    /// EC2's own creation time (LaunchTime, CreateTime, StartTime), when it gives one.
    pub created: Option<DateTime<Utc>>,
    pub tags: BTreeMap<String, String>,
}

/// What one region holds, as listed.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub region: String,
    /// Every image the account owns in the region, tc-ami's or not (a snapshot one of them
    /// uses is never a leftover).
    pub images: Vec<Image>,
    /// Instances (not terminated), security groups, key pairs and snapshots that carry
    /// tc-ami's build tag.
    pub resources: Vec<Resource>,
}
