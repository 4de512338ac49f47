//! Whether W's live image is stale, `tc-ami auto`'s decision (pure): from the facts about the
//! live image in W's build region, the base image a build would start from now, the SHA-256 of
//! the user data a build would launch with now and `--max-age`, either up to date or a rebuild
//! with every reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::base_ami::newer_base;
use crate::duration::format_age;
use crate::model::Image;
use crate::model::tags::{BASE_IMAGE_ID, BUILD_ID, CREATED_AT, USER_DATA_SHA256};

/// What `auto` knows when it decides.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// W's build region, where the live image is compared.
    pub region: &'a str,
    /// The pool's image in `region` (None: the pool has none there), and that image as
    /// described (None: it does not exist).
    pub live: Option<(&'a str, Option<&'a Image>)>,
    /// The base image a build would start from now.
    pub base: &'a Image,
    /// The image the live one's `tc-ami:base-image-id` names, as described (None: no tag, or
    /// it is gone).
    pub built_from: Option<&'a Image>,
    /// The SHA-256 of the user data a build would launch with now
    /// ([`crate::user_data::user_data_sha256`]).
    pub script_sha256: &'a str,
    pub max_age: Option<Duration>,
    pub now: DateTime<Utc>,
}

/// Why the live image is stale.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// The pool has no launch config in the build region.
    NoLiveImage { region: String },
    /// The pool names an image that does not exist (any more) in the build region.
    LiveImageMissing { image: String, region: String },
    /// The live image carries no `tc-ami:build-id`: made by hand or by another tool.
    NotBuiltByTcAmi { image: String },
    NewerBaseImage {
        base_image: String,
        base_image_name: String,
        /// The live image's `tc-ami:base-image-id`.
        built_from: String,
    },
    /// The live image's `tc-ami:user-data-sha256` differs from the current script's (or is
    /// missing: null).
    ScriptChanged {
        live_sha256: Option<String>,
        current_sha256: String,
    },
    /// Older than `--max-age` (its `tc-ami:created-at`, else its creation date); an age that
    /// cannot be told (null) counts as older.
    OlderThanMaxAge {
        image: String,
        age_seconds: Option<u64>,
        max_age_seconds: u64,
    },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NoLiveImage { region } => {
                write!(
                    f,
                    "no live image: the pool has no launch config in {region}"
                )
            }
            Reason::LiveImageMissing { image, region } => write!(
                f,
                "no live image: the pool's image {image} does not exist in {region}"
            ),
            Reason::NotBuiltByTcAmi { image } => write!(
                f,
                "live image not built by tc-ami: {image} has no {BUILD_ID} tag"
            ),
            Reason::NewerBaseImage {
                base_image,
                base_image_name,
                built_from,
            } => write!(
                f,
                "newer base image {base_image} ({base_image_name}) over {built_from}"
            ),
            Reason::ScriptChanged {
                live_sha256,
                current_sha256,
            } => write!(
                f,
                "script changed: user data sha256 {current_sha256} now, {} in the live image",
                live_sha256
                    .as_deref()
                    .unwrap_or("no tc-ami:user-data-sha256 tag")
            ),
            Reason::OlderThanMaxAge {
                image,
                age_seconds,
                max_age_seconds,
            } => write!(
                f,
                "older than max-age: {image} is {} old, --max-age {}",
                match age_seconds {
                    Some(_) => format_age(*age_seconds),
                    None => "of unknown age, counted as too".to_string(),
                },
                format_age(Some(*max_age_seconds))
            ),
        }
    }
}

/// Up to date, or a rebuild and why.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    UpToDate,
    Rebuild(Vec<Reason>),
}

impl Decision {
    pub fn reasons(&self) -> &[Reason] {
        match self {
            Decision::UpToDate => &[],
            Decision::Rebuild(reasons) => reasons,
        }
    }
}

/// The decision: every reason that applies, in a fixed order (what exists, who built it, the
/// base, the script, the age).
pub fn decide(f: &Facts<'_>) -> Decision {
    let region = f.region.to_string();
    let Some((id, described)) = f.live else {
        return Decision::Rebuild(vec![Reason::NoLiveImage { region }]);
    };
    let Some(image) = described else {
        return Decision::Rebuild(vec![Reason::LiveImageMissing {
            image: id.to_string(),
            region,
        }]);
    };
    let mut reasons = Vec::new();
    let tag = |k: &str| image.tags.get(k).cloned();
    if tag(BUILD_ID).is_none() {
        reasons.push(Reason::NotBuiltByTcAmi {
            image: id.to_string(),
        });
    } else {
        let built_from_id = tag(BASE_IMAGE_ID);
        if let Some(newer) = newer_base(f.base, built_from_id.as_deref(), f.built_from) {
            reasons.push(Reason::NewerBaseImage {
                base_image: newer.id.clone(),
                base_image_name: newer.name.clone(),
                built_from: built_from_id.unwrap_or_default(),
            });
        }
        let live_sha256 = tag(USER_DATA_SHA256);
        if live_sha256.as_deref() != Some(f.script_sha256) {
            reasons.push(Reason::ScriptChanged {
                live_sha256,
                current_sha256: f.script_sha256.to_string(),
            });
        }
    }
    if let Some(max) = f.max_age {
        let created = tag(CREATED_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(image.creation_date);
        let age = created.map(|c| (f.now - c).num_seconds().max(0) as u64);
        if age.is_none_or(|a| a > max.as_secs()) {
            reasons.push(Reason::OlderThanMaxAge {
                image: id.to_string(),
                age_seconds: age,
                max_age_seconds: max.as_secs(),
            });
        }
    }
    if reasons.is_empty() {
        Decision::UpToDate
    } else {
        Decision::Rebuild(reasons)
    }
}

/// The worker types `auto` runs on, from every worker type's name with its `promote_to`:
/// the ones given (`-w`, each once, in order), or with none given (`--all`) every one that
/// declares a `promote_to`, the staging ones. Never one that is another's `promote_to`: auto
/// deploys with nobody looking, and production is reached only by a person's `promote`.
pub fn auto_selection(
    all: &[(String, Option<String>)],
    given: &[String],
) -> Result<Vec<String>, String> {
    let production_of = |w: &str| {
        all.iter()
            .find(|(_, to)| to.as_deref() == Some(w))
            .map(|(from, _)| from.clone())
    };
    let mut chosen: Vec<String> = Vec::new();
    for w in given {
        if let Some(staging) = production_of(w) {
            return Err(format!(
                "`{w}` is the production worker type of `{staging}` (its promote_to): auto never deploys there; run `tc-ami auto -w {staging}`, then `tc-ami promote --from {staging} --to {w}`"
            ));
        }
        if !chosen.contains(w) {
            chosen.push(w.clone());
        }
    }
    if given.is_empty() {
        chosen = all
            .iter()
            .filter(|(_, to)| to.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        if chosen.is_empty() {
            return Err("--all: no worker type declares `promote_to` (auto --all runs on the staging worker types, those that name their production); name them with -w W".into());
        }
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_ec2_time;

    const SHA: &str = "5d41402abc4b2a76b9719d911017c592ba7816bf8f01cfea414140de5dae2223";

    fn image(id: &str, date: &str, tags: &[(&str, &str)]) -> Image {
        Image {
            id: id.into(),
            name: format!("Windows-{date}"),
            state: "available".into(),
            creation_date: parse_ec2_time(date),
            owner_id: "801119661308".into(),
            root_device_name: None,
            snapshot_ids: vec![],
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state_reason: None,
        }
    }

    fn ours(base: &str, sha: &str, created: &str) -> Image {
        image(
            "ami-live",
            created,
            &[
                (BUILD_ID, "20261101T000000Z-abcdef"),
                (BASE_IMAGE_ID, base),
                (USER_DATA_SHA256, sha),
                (CREATED_AT, created),
            ],
        )
    }

    fn facts<'a>(live: Option<(&'a str, Option<&'a Image>)>, base: &'a Image) -> Facts<'a> {
        Facts {
            region: "us-west-2",
            live,
            base,
            built_from: None,
            script_sha256: SHA,
            max_age: None,
            now: parse_ec2_time("2026-11-30T00:00:00Z").unwrap(),
        }
    }

    #[test]
    fn up_to_date_when_built_from_the_newest_base_and_the_current_script() {
        let base = image("ami-base", "2026-11-12T00:00:00Z", &[]);
        let live = ours("ami-base", SHA, "2026-11-20T00:00:00Z");
        let mut f = facts(Some(("ami-live", Some(&live))), &base);
        assert_eq!(decide(&f), Decision::UpToDate);
        // Within --max-age (ten days old, eleven allowed).
        f.max_age = Some(Duration::from_secs(11 * 86400));
        assert_eq!(decide(&f), Decision::UpToDate);
    }

    #[test]
    fn every_reason_is_given() {
        let base = image("ami-new", "2026-11-12T00:00:00Z", &[]);
        let old = image("ami-old", "2026-10-01T00:00:00Z", &[]);
        let live = ours("ami-old", "0000", "2026-11-20T00:00:00Z");
        let mut f = facts(Some(("ami-live", Some(&live))), &base);
        f.built_from = Some(&old);
        f.max_age = Some(Duration::from_secs(7 * 86400));
        let reasons = decide(&f).reasons().to_vec();
        assert_eq!(
            reasons,
            vec![
                Reason::NewerBaseImage {
                    base_image: "ami-new".into(),
                    base_image_name: "Windows-2026-11-12T00:00:00Z".into(),
                    built_from: "ami-old".into(),
                },
                Reason::ScriptChanged {
                    live_sha256: Some("0000".into()),
                    current_sha256: SHA.into(),
                },
                Reason::OlderThanMaxAge {
                    image: "ami-live".into(),
                    age_seconds: Some(10 * 86400),
                    max_age_seconds: 7 * 86400,
                },
            ]
        );
        let texts: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            texts[0],
            "newer base image ami-new (Windows-2026-11-12T00:00:00Z) over ami-old"
        );
        assert!(texts[1].starts_with("script changed: "), "{}", texts[1]);
        assert_eq!(
            texts[2],
            "older than max-age: ami-live is 10d old, --max-age 7d"
        );
        let json = serde_json::to_value(&reasons[0]).unwrap();
        assert_eq!(json["reason"], "newer_base_image");
        assert_eq!(json["base_image"], "ami-new");
    }

    #[test]
    fn a_base_newer_than_the_pick_or_gone_is_judged_as_status_does() {
        let base = image("ami-base", "2026-11-12T00:00:00Z", &[]);
        // The base it was built from is gone: the current one is newer.
        let live = ours("ami-gone", SHA, "2026-11-20T00:00:00Z");
        let f = facts(Some(("ami-live", Some(&live))), &base);
        assert!(matches!(
            decide(&f).reasons(),
            [Reason::NewerBaseImage { built_from, .. }] if built_from == "ami-gone"
        ));
        // Built from a base newer than what the pattern picks now: up to date.
        let newest = image("ami-newest", "2026-12-01T00:00:00Z", &[]);
        let live = ours("ami-newest", SHA, "2026-11-20T00:00:00Z");
        let mut f = facts(Some(("ami-live", Some(&live))), &base);
        f.built_from = Some(&newest);
        assert_eq!(decide(&f), Decision::UpToDate);
    }

    #[test]
    fn no_live_image_or_not_ours() {
        let base = image("ami-base", "2026-11-12T00:00:00Z", &[]);
        assert_eq!(
            decide(&facts(None, &base)).reasons(),
            [Reason::NoLiveImage {
                region: "us-west-2".into()
            }]
        );
        assert_eq!(
            decide(&facts(Some(("ami-x", None)), &base)).reasons(),
            [Reason::LiveImageMissing {
                image: "ami-x".into(),
                region: "us-west-2".into()
            }]
        );
        let foreign = image("ami-x", "2026-11-20T00:00:00Z", &[]);
        let d = decide(&facts(Some(("ami-x", Some(&foreign))), &base));
        assert_eq!(
            d.reasons(),
            [Reason::NotBuiltByTcAmi {
                image: "ami-x".into()
            }]
        );
        assert_eq!(
            d.reasons()[0].to_string(),
            "live image not built by tc-ami: ami-x has no tc-ami:build-id tag"
        );
        // A tc-ami image without the script's tag: the script cannot be shown unchanged.
        let untagged = image(
            "ami-live",
            "2026-11-20T00:00:00Z",
            &[(BUILD_ID, "b"), (BASE_IMAGE_ID, "ami-base")],
        );
        assert!(matches!(
            decide(&facts(Some(("ami-live", Some(&untagged))), &base)).reasons(),
            [Reason::ScriptChanged {
                live_sha256: None,
                ..
            }]
        ));
    }

    #[test]
    fn age_from_the_tag_else_the_creation_date_else_unknown() {
        let base = image("ami-base", "2026-11-12T00:00:00Z", &[]);
        let mut live = ours("ami-base", SHA, "2026-11-29T00:00:00Z");
        // The tag (one day) wins over the creation date (a month).
        live.creation_date = parse_ec2_time("2026-10-30T00:00:00Z");
        let mut f = facts(Some(("ami-live", Some(&live))), &base);
        f.max_age = Some(Duration::from_secs(2 * 86400));
        assert_eq!(decide(&f), Decision::UpToDate);
        let mut no_date = live.clone();
        no_date.tags.remove(CREATED_AT);
        no_date.creation_date = None;
        let mut f = facts(Some(("ami-live", Some(&no_date))), &base);
        f.max_age = Some(Duration::from_secs(2 * 86400));
        assert!(matches!(
            decide(&f).reasons(),
            [Reason::OlderThanMaxAge {
                age_seconds: None,
                ..
            }]
        ));
    }

    fn types(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(n, t)| (n.to_string(), t.map(str::to_string)))
            .collect()
    }

    #[test]
    fn auto_runs_on_the_given_or_the_staging_worker_types_never_on_production() {
        let all = types(&[("prod", None), ("staging", Some("prod")), ("other", None)]);
        let given = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(auto_selection(&all, &[]), Ok(vec!["staging".to_string()]));
        assert_eq!(
            auto_selection(&all, &given(&["other", "staging", "other"])),
            Ok(vec!["other".to_string(), "staging".to_string()])
        );
        let refused = auto_selection(&all, &given(&["staging", "prod"])).unwrap_err();
        assert!(refused.starts_with("`prod` is the production worker type of `staging`"));
        assert!(refused.contains("tc-ami promote --from staging --to prod"));
        let none = types(&[("a", None)]);
        assert!(
            auto_selection(&none, &[])
                .unwrap_err()
                .contains("no worker type declares")
        );
    }
}
