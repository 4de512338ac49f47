//! The AMI build plan (pure): every name, tag and setting of a build, decided before anything
//! is created. [`crate::ops::build`] carries it out.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::cleanup::{expires_at, format_expires_at, in_flight_window};
use crate::config::{PasswordDestination, WorkerType};
use crate::model::tags::{
    BASE_IMAGE_ID, BASE_IMAGE_NAME, BUILD_ID, CREATED_AT, EXPIRES_AT, NAME, SOURCE_REGION,
    USER_DATA_SHA256, VERSION, WORKER_TYPE,
};
use crate::model::{Image, Tags};
use crate::user_data::user_data_sha256;

/// Everything a build will create, named and tagged before anything is created.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub build_id: String,
    pub worker_type: String,
    pub region: String,
    /// Copy destinations, without `region`.
    pub copy_regions: Vec<String>,
    pub base: Image,
    pub key_name: String,
    pub group_name: String,
    pub image_name: String,
    pub description: String,
    pub instance_type: String,
    pub root_volume_gb: Option<i32>,
    pub user_data: String,
    pub user_data_sha256: String,
    /// On the key pair, group, instance and volume; with [`BuildPlan::image_tags`], the build
    /// id, worker type, start and `tc-ami:expires-at` (the start + `build_timeout` +
    /// 2 × `image_timeout`: until then the build may be running, and `cleanup` keeps it all).
    pub resource_tags: Tags,
    /// On the image, its snapshots and its copies.
    pub image_tags: Tags,
    pub share_with_accounts: Vec<String>,
    pub password: PasswordDestination,
    pub build_timeout: Duration,
    pub image_timeout: Duration,
}

/// A build id that sorts by time and is unique: `20261124T214001Z-3f9a2c`.
pub fn new_build_id(now: DateTime<Utc>, random: u32) -> String {
    format!(
        "{}-{:06x}",
        now.format("%Y%m%dT%H%M%SZ"),
        random & 0xff_ffff
    )
}

pub fn plan_build(
    wt: &WorkerType,
    base: &Image,
    user_data: String,
    now: DateTime<Utc>,
    build_id: &str,
) -> BuildPlan {
    let stem = format!("tc-ami-{}-{}", wt.name, build_id);
    let created_at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let user_data_sha256 = user_data_sha256(&user_data);
    let mut common: Tags = vec![
        (BUILD_ID.into(), build_id.into()),
        (WORKER_TYPE.into(), wt.name.clone()),
        (CREATED_AT.into(), created_at),
    ];
    // Without it (timeouts past what a date holds), cleanup falls back to its own window.
    if let Some(end) = expires_at(now, in_flight_window(wt)) {
        common.push((EXPIRES_AT.into(), format_expires_at(end)));
    }
    let mut resource_tags = common.clone();
    resource_tags.push((
        NAME.into(),
        format!("tc-ami build {} {}", wt.name, build_id),
    ));
    let mut image_tags = common;
    image_tags.extend([
        (NAME.to_string(), format!("{} {}", wt.name, build_id)),
        (BASE_IMAGE_ID.to_string(), base.id.clone()),
        (BASE_IMAGE_NAME.to_string(), base.name.clone()),
        (USER_DATA_SHA256.to_string(), user_data_sha256.clone()),
        (VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string()),
        (SOURCE_REGION.to_string(), wt.build_region.clone()),
    ]);
    BuildPlan {
        build_id: build_id.to_string(),
        worker_type: wt.name.clone(),
        region: wt.build_region.clone(),
        copy_regions: wt.regions.clone(),
        base: base.clone(),
        key_name: stem.clone(),
        group_name: stem.clone(),
        image_name: stem,
        description: format!(
            "{} for Taskcluster pool {}, from {} ({}), built by tc-ami {}",
            wt.name,
            wt.worker_pool_id,
            base.name,
            base.id,
            env!("CARGO_PKG_VERSION")
        ),
        instance_type: wt.instance_type.clone(),
        root_volume_gb: wt.root_volume_gb,
        user_data,
        user_data_sha256,
        resource_tags,
        image_tags,
        share_with_accounts: wt.share_with_accounts.clone(),
        password: wt.password.clone(),
        build_timeout: wt.build_timeout,
        image_timeout: wt.image_timeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_worker_type;

    use std::path::Path;

    fn wt() -> WorkerType {
        parse_worker_type(
            "servo-win2016",
            Path::new("w.toml"),
            "worker_pool_id = \"proj-servo/win2016\"\nbuild_region = \"us-west-2\"\ninstance_type = \"c5.4xlarge\"\nregions = [\"us-east-1\"]\n",
            Some("Windows_Server-2016-English-Full-Base-*"),
            Path::new("."),
        )
        .unwrap()
    }

    fn base() -> Image {
        Image {
            id: "ami-0123".into(),
            name: "Windows_Server-2016-English-Full-Base-2026.11.12".into(),
            state: "available".into(),
            creation_date: None,
            owner_id: "801119661308".into(),
            root_device_name: Some("/dev/sda1".into()),
            snapshot_ids: vec![],
            tags: Default::default(),
            state_reason: None,
        }
    }

    #[test]
    fn build_ids_sort_by_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T21:40:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(new_build_id(t, 0x3f9a2c), "20261124T214001Z-3f9a2c");
        assert_eq!(new_build_id(t, 0xff3f9a2c), "20261124T214001Z-3f9a2c");
    }

    #[test]
    fn plan_names_and_tags_everything() {
        let t = DateTime::parse_from_rfc3339("2026-11-24T21:40:01Z")
            .unwrap()
            .with_timezone(&Utc);
        let plan = plan_build(
            &wt(),
            &base(),
            "<powershell>\nx\n</powershell>".into(),
            t,
            "20261124T214001Z-3f9a2c",
        );
        assert_eq!(
            plan.key_name,
            "tc-ami-servo-win2016-20261124T214001Z-3f9a2c"
        );
        assert_eq!(plan.image_name, plan.key_name);
        assert_eq!(plan.copy_regions, vec!["us-east-1"]);
        let tag = |tags: &Tags, k: &str| {
            tags.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            tag(&plan.resource_tags, BUILD_ID).as_deref(),
            Some("20261124T214001Z-3f9a2c")
        );
        assert_eq!(
            tag(&plan.resource_tags, CREATED_AT).as_deref(),
            Some("2026-11-24T21:40:01Z")
        );
        // The defaults: 90m for the guest, 60m for the image and 60m for the copies.
        for tags in [&plan.resource_tags, &plan.image_tags] {
            assert_eq!(
                tag(tags, EXPIRES_AT).as_deref(),
                Some("2026-11-25T01:10:01Z")
            );
        }
        assert_eq!(
            crate::cleanup::parse_expires_at(&plan.image_tags.iter().cloned().collect()),
            Some(t + chrono::Duration::minutes(210))
        );
        assert_eq!(
            tag(&plan.image_tags, BASE_IMAGE_ID).as_deref(),
            Some("ami-0123")
        );
        assert_eq!(
            tag(&plan.image_tags, USER_DATA_SHA256),
            Some(crate::user_data::sha256_hex(
                b"<powershell>\nx\n</powershell>"
            ))
        );
        assert_eq!(
            tag(&plan.image_tags, WORKER_TYPE).as_deref(),
            Some("servo-win2016")
        );
        assert!(tag(&plan.image_tags, VERSION).is_some());
        // EC2 image names: 3-128 characters of letters, digits, ()[] ./-'@_
        assert!(plan.image_name.len() <= 128);
        assert!(
            plan.image_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(c))
        );
    }

    #[test]
    fn timeouts_past_what_a_date_holds_leave_the_expires_at_tag_out() {
        let mut wt = wt();
        wt.build_timeout = Duration::MAX;
        let t = DateTime::parse_from_rfc3339("2026-11-24T21:40:01Z")
            .unwrap()
            .with_timezone(&Utc);
        let plan = plan_build(&wt, &base(), "x".into(), t, "b");
        assert!(plan.image_tags.iter().all(|(k, _)| k != EXPIRES_AT));
        assert!(plan.resource_tags.iter().any(|(k, _)| k == CREATED_AT));
    }
}
