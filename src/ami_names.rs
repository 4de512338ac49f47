//! Amazon's Windows AMI names, parsed (pure): which OS version, locale, edition and flavour an
//! image is, its families with their newest image, and, for a pattern, which image a build
//! would pick and why each other one loses.
//!
//! The grammar, from the names Amazon publishes (the `/aws/service/ami-windows-latest/…`
//! parameter names, and dated AMI names quoted in public repositories):
//! `[TPM-|EC2LaunchV2-]Windows_Server-<version>-<locale>-<edition>-<flavour>[-<YYYY.MM.DD>]`,
//! for example `Windows_Server-2016-English-Full-Base-2020.08.12`,
//! `Windows_Server-2012-R2_RTM-English-64Bit-SQL_2016_SP2_Standard-2020.08.12`,
//! `Windows_Server-2022-English-Full-EKS_Optimized-1.31-2025.04.14`,
//! `Windows_Server-2019-English-STIG-Core` (STIG images put the flavour before the edition).
//! A name that does not fit goes to the "other" group; parsing never fails.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::base_ami::{choose_base_ami, glob_match};
use crate::model::Image;

const STEM: &str = "Windows_Server-";
/// Prefixes Amazon puts before `Windows_Server-` for variants of a family.
const PREFIXES: [&str; 2] = ["EC2LaunchV2", "TPM"];
/// Tokens that continue a version (`2012-R2_RTM`, `2012-RTM`, `2012-R2`).
const VERSION_SUFFIXES: [&str; 3] = ["R2_RTM", "RTM", "R2"];

/// The edition word of a name: `Full` (with Desktop Experience), `Core`, `Nano`, or `64Bit`
/// (Windows Server 2012 names say `64Bit` where later ones say `Full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Edition {
    Full,
    Core,
    Nano,
    #[serde(rename = "64Bit")]
    Bit64,
}

impl Edition {
    /// The edition a name token stands for.
    pub fn from_token(token: &str) -> Option<Edition> {
        match token {
            "Full" => Some(Edition::Full),
            "Core" => Some(Edition::Core),
            "Nano" => Some(Edition::Nano),
            "64Bit" => Some(Edition::Bit64),
            _ => None,
        }
    }

    /// The token as Amazon writes it in names.
    pub fn as_str(self) -> &'static str {
        match self {
            Edition::Full => "Full",
            Edition::Core => "Core",
            Edition::Nano => "Nano",
            Edition::Bit64 => "64Bit",
        }
    }
}

impl fmt::Display for Edition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A family of images: everything in a name but its date. Sorts by version, locale,
/// edition, flavour, then prefix.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Family {
    /// `2016`, `2022`, `2012-R2_RTM`, `1909`, as the name writes it.
    pub version: String,
    /// `English`, `Japanese`, `Chinese_Traditional_Hong_Kong_SAR`, …
    pub locale: String,
    pub edition: Edition,
    /// `Base`, `SQL_2019_Standard`, `Containers`, `ECS_Optimized`, `EKS_Optimized-1.31`, …
    pub flavour: String,
    /// `TPM` or `EC2LaunchV2` when the name starts with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

impl Family {
    /// The glob (as in `base-ami.txt`) that selects this family's dated images.
    pub fn pattern(&self) -> String {
        let prefix = self
            .prefix
            .as_ref()
            .map(|p| format!("{p}-"))
            .unwrap_or_default();
        let (edition, flavour) = (self.edition.as_str(), self.flavour.as_str());
        let middle = if flavour == "STIG" {
            format!("STIG-{edition}")
        } else {
            format!("{edition}-{flavour}")
        };
        format!("{prefix}{STEM}{}-{}-{middle}-*", self.version, self.locale)
    }
}

/// What a parsed name says: its family and its date, when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmiName {
    pub family: Family,
    pub date: Option<NaiveDate>,
}

/// Parses an Amazon Windows AMI name; `None` when it does not follow the grammar.
pub fn parse_ami_name(name: &str) -> Option<AmiName> {
    let (prefix, rest) = split_prefix(name)?;
    let mut tokens: Vec<&str> = rest.split('-').collect();
    let date = match tokens.last() {
        Some(last) if date_shaped(last) => Some(parse_date(tokens.pop()?)?),
        _ => None,
    };
    if tokens.iter().any(|t| t.is_empty() || date_shaped(t)) {
        return None;
    }
    let (version, used) = parse_version(&tokens)?;
    let locale = *tokens.get(used)?;
    let locale_ok = locale.starts_with(|c: char| c.is_ascii_uppercase())
        && locale.chars().all(|c| c.is_ascii_alphabetic() || c == '_');
    if !locale_ok {
        return None;
    }
    let (edition, flavour) = parse_edition_flavour(&tokens[used + 1..])?;
    Some(AmiName {
        family: Family {
            version,
            locale: locale.to_string(),
            edition,
            flavour,
            prefix: prefix.map(str::to_string),
        },
        date,
    })
}

fn split_prefix(name: &str) -> Option<(Option<&str>, &str)> {
    if let Some(rest) = name.strip_prefix(STEM) {
        return Some((None, rest));
    }
    let (prefix, rest) = name.split_once('-')?;
    let rest = rest.strip_prefix(STEM)?;
    PREFIXES.contains(&prefix).then_some((Some(prefix), rest))
}

/// Whether a token is written like a date: `dddd.dd.dd`.
fn date_shaped(token: &str) -> bool {
    let b = token.as_bytes();
    b.len() == 10
        && b[4] == b'.'
        && b[7] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// `2020.08.12` as a date; `None` for a token that is not a real date.
fn parse_date(token: &str) -> Option<NaiveDate> {
    if !date_shaped(token) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| token[r].parse::<u32>().ok();
    NaiveDate::from_ymd_opt(n(0..4)? as i32, n(5..7)?, n(8..10)?)
}

/// The version and how many tokens it used: 4 digits (maybe `_RTM`, `_R2_RTM` glued on), then
/// any of `R2_RTM`, `RTM`, `R2`.
fn parse_version(tokens: &[&str]) -> Option<(String, usize)> {
    let first = *tokens.first()?;
    let digits_ok = first.len() >= 4 && first.as_bytes()[..4].iter().all(u8::is_ascii_digit);
    let tail = first.get(4..).filter(|_| digits_ok)?;
    if !tail.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let mut version = first.to_string();
    let mut used = 1;
    while let Some(t) = tokens.get(used).filter(|t| VERSION_SUFFIXES.contains(t)) {
        version.push('-');
        version.push_str(t);
        used += 1;
    }
    Some((version, used))
}

/// `Full-Base`, `Core-EKS_Optimized-1.31`, and the STIG order `STIG-Core`.
fn parse_edition_flavour(tokens: &[&str]) -> Option<(Edition, String)> {
    if let ["STIG", edition] = tokens {
        return Some((Edition::from_token(edition)?, "STIG".to_string()));
    }
    let (first, flavour) = tokens.split_first()?;
    let edition = Edition::from_token(first)?;
    if flavour.is_empty() {
        return None;
    }
    Some((edition, flavour.join("-")))
}

/// An image as a listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageSummary {
    pub id: String,
    pub name: String,
    pub creation_date: Option<DateTime<Utc>>,
}

impl From<&Image> for ImageSummary {
    fn from(i: &Image) -> Self {
        ImageSummary {
            id: i.id.clone(),
            name: i.name.clone(),
            creation_date: i.creation_date,
        }
    }
}

/// One family's images: how many, how many are available, and the newest a build could use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// `None` for the "other" group: names that do not follow the grammar.
    pub family: Option<Family>,
    pub count: usize,
    pub available: usize,
    /// The image [`choose_base_ami`] picks among the group's images; `None` when none is
    /// available.
    pub newest: Option<ImageSummary>,
}

/// Groups images by family (sorted), the "other" group last when there is one.
pub fn group_images(images: &[Image]) -> Vec<Group> {
    let mut by_family: BTreeMap<Option<Family>, Vec<Image>> = BTreeMap::new();
    for image in images {
        let family = parse_ami_name(&image.name).map(|n| n.family);
        by_family.entry(family).or_default().push(image.clone());
    }
    let mut groups: Vec<Group> = by_family
        .into_iter()
        .map(|(family, members)| Group {
            count: members.len(),
            available: members.iter().filter(|i| i.is_available()).count(),
            newest: choose_base_ami(&members, "*").map(ImageSummary::from),
            family,
        })
        .collect();
    // `None` sorts first in a BTreeMap; "other" reads better last.
    let other_first = groups.first().is_some_and(|g| g.family.is_none());
    groups.rotate_left(usize::from(other_first));
    groups
}

/// Why an image matching the pattern is or is not the one a build would start from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The newest available match: the build's base image.
    Picked,
    /// Not available (`pending`, `failed`, …), so never picked, however new.
    NotAvailable { state: String },
    /// Available, created before the picked image (or with no creation date).
    Older,
    /// Same creation date as the picked image, smaller name.
    SameDateLowerName,
    /// Same creation date and name as the picked image, smaller (or equal) id.
    SameDateAndNameLowerId,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Picked => f.write_str("picked: the newest available match"),
            Verdict::NotAvailable { state } => write!(f, "{state}: not available"),
            Verdict::Older => f.write_str("older than the picked image"),
            Verdict::SameDateLowerName => {
                f.write_str("same creation date as the picked image, lower name")
            }
            Verdict::SameDateAndNameLowerId => {
                f.write_str("same creation date and name as the picked image, lower id")
            }
        }
    }
}

/// A matching image and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub image: ImageSummary,
    pub state: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The images whose name matches `pattern`, newest first (creation date, then name, then id,
/// as [`choose_base_ami`] orders them), each with its verdict against the one it picks.
pub fn candidates(images: &[Image], pattern: &str) -> Vec<Candidate> {
    let picked = choose_base_ami(images, pattern);
    let mut matches: Vec<&Image> = images
        .iter()
        .filter(|i| glob_match(pattern, &i.name))
        .collect();
    matches.sort_by(|a, b| newest_first(a, b));
    matches
        .into_iter()
        .map(|image| Candidate {
            image: ImageSummary::from(image),
            state: image.state.as_str().to_string(),
            verdict: verdict(image, picked),
        })
        .collect()
}

fn newest_first(a: &Image, b: &Image) -> Ordering {
    (b.creation_date, &b.name, &b.id).cmp(&(a.creation_date, &a.name, &a.id))
}

fn verdict(image: &Image, picked: Option<&Image>) -> Verdict {
    if !image.is_available() {
        return Verdict::NotAvailable {
            state: image.state.as_str().to_string(),
        };
    }
    // Every available match loses to the picked one, so there is one when we get here.
    let Some(p) = picked else {
        return Verdict::Older;
    };
    if std::ptr::eq(image, p) {
        Verdict::Picked
    } else if image.creation_date != p.creation_date {
        Verdict::Older
    } else if image.name != p.name {
        Verdict::SameDateLowerName
    } else {
        Verdict::SameDateAndNameLowerId
    }
}

/// A creation time as listings show it: `2024-04-10T08:13:37Z`, or `-`.
fn created(date: Option<DateTime<Utc>>) -> String {
    date.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

/// The groups as a table, one row per family: its version, locale, edition and flavour (a
/// prefixed variant in parentheses), how many images (and how many of them are not available),
/// and the newest available image.
pub fn render_groups(groups: &[Group]) -> String {
    let rows = groups.iter().map(|g| {
        let family = match &g.family {
            Some(f) => {
                let flavour = match &f.prefix {
                    Some(p) => format!("{} ({p})", f.flavour),
                    None => f.flavour.clone(),
                };
                [
                    f.version.clone(),
                    f.locale.clone(),
                    f.edition.to_string(),
                    flavour,
                ]
            }
            None => [
                "(other names)".into(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        let count = match g.count - g.available {
            0 => g.count.to_string(),
            n => format!("{} ({n} not available)", g.count),
        };
        let (id, date, name) = match &g.newest {
            Some(i) => (i.id.clone(), created(i.creation_date), i.name.clone()),
            None => ("-".into(), "-".into(), "(none available)".into()),
        };
        family.into_iter().chain([count, id, date, name])
    });
    crate::text::table(
        &[
            "VERSION", "LOCALE", "EDITION", "FLAVOUR", "IMAGES", "NEWEST", "CREATED", "NAME",
        ],
        rows,
    )
}

/// The candidates as a table, newest first, each with its state and why it is or is not the
/// one a build would pick.
pub fn render_candidates(candidates: &[Candidate]) -> String {
    let rows = candidates.iter().map(|c| {
        [
            c.image.id.clone(),
            c.image.name.clone(),
            created(c.image.creation_date),
            c.state.clone(),
            c.verdict.to_string(),
        ]
    });
    crate::text::table(&["IMAGE", "NAME", "CREATED", "STATE", "WHY"], rows)
}

/// The candidate a build would pick, if any.
pub fn picked(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates.iter().find(|c| c.verdict == Verdict::Picked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_ec2_time;

    fn image(id: &str, name: &str, date: &str, state: &str) -> Image {
        Image {
            id: id.into(),
            name: name.into(),
            state: state.into(),
            creation_date: parse_ec2_time(date),
            owner_id: "801119661308".into(),
            root_device_name: Some("/dev/sda1".into()),
            snapshot_ids: vec![],
            tags: Default::default(),
            state_reason: None,
        }
    }

    fn family(version: &str, locale: &str, edition: Edition, flavour: &str) -> Family {
        Family {
            version: version.into(),
            locale: locale.into(),
            edition,
            flavour: flavour.into(),
            prefix: None,
        }
    }

    fn ymd(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, d)
    }

    /// Names quoted verbatim in public repositories (describe-images output, packer and
    /// terraform files): each with the family and date it must parse to.
    #[test]
    fn parses_real_dated_names() {
        use Edition::*;
        let cases = [
            (
                "Windows_Server-2016-English-Full-Base-2018.09.15",
                family("2016", "English", Full, "Base"),
                ymd(2018, 9, 15),
            ),
            (
                "Windows_Server-2019-English-Full-ContainersLatest-2020.08.12",
                family("2019", "English", Full, "ContainersLatest"),
                ymd(2020, 8, 12),
            ),
            (
                "Windows_Server-2016-English-Full-Containers-2016.10.18",
                family("2016", "English", Full, "Containers"),
                ymd(2016, 10, 18),
            ),
            (
                "Windows_Server-1909-English-Core-Base-2020.08.12",
                family("1909", "English", Core, "Base"),
                ymd(2020, 8, 12),
            ),
            (
                "Windows_Server-2016-English-Full-SQL_2019_Standard-2024.01.16",
                family("2016", "English", Full, "SQL_2019_Standard"),
                ymd(2024, 1, 16),
            ),
            (
                "Windows_Server-2012-R2_RTM-English-64Bit-SQL_2016_SP2_Enterprise-2020.05.13",
                family("2012-R2_RTM", "English", Bit64, "SQL_2016_SP2_Enterprise"),
                ymd(2020, 5, 13),
            ),
            (
                "Windows_Server-2019-English-Full-ECS_Optimized-2020.01.16",
                family("2019", "English", Full, "ECS_Optimized"),
                ymd(2020, 1, 16),
            ),
            (
                "Windows_Server-2022-English-Full-EKS_Optimized-1.31-2025.04.14",
                family("2022", "English", Full, "EKS_Optimized-1.31"),
                ymd(2025, 4, 14),
            ),
            (
                "Windows_Server-2022-English-Core-Base-2022.08.10",
                family("2022", "English", Core, "Base"),
                ymd(2022, 8, 10),
            ),
        ];
        for (name, fam, date) in cases {
            assert_eq!(
                parse_ami_name(name),
                Some(AmiName { family: fam, date }),
                "{name}"
            );
        }
    }

    /// Prefixed variants, other locales and editions, and undated names: the
    /// `/aws/service/ami-windows-latest/` parameter names (family without a date) and one
    /// dated EC2LaunchV2 name quoted in a packer file.
    #[test]
    fn parses_variants_locales_and_undated_names() {
        let n =
            parse_ami_name("EC2LaunchV2-Windows_Server-2019-English-Full-Base-2023.12.13").unwrap();
        assert_eq!(n.family.prefix.as_deref(), Some("EC2LaunchV2"));
        assert_eq!(n.family.flavour, "Base");
        assert_eq!(n.date, ymd(2023, 12, 13));
        let n = parse_ami_name("TPM-Windows_Server-2022-English-Full-SQL_2022_Standard").unwrap();
        assert_eq!(n.family.prefix.as_deref(), Some("TPM"));
        assert_eq!(n.date, None);
        let n =
            parse_ami_name("Windows_Server-2012-RTM-Chinese_Traditional_Hong_Kong_SAR-64Bit-Base")
                .unwrap();
        assert_eq!(n.family.version, "2012-RTM");
        assert_eq!(n.family.locale, "Chinese_Traditional_Hong_Kong_SAR");
        let n = parse_ami_name("Windows_Server-2019-Japanese-Full-SQL_2019_Enterprise").unwrap();
        assert_eq!(
            n.family,
            family("2019", "Japanese", Edition::Full, "SQL_2019_Enterprise")
        );
        let n = parse_ami_name("Windows_Server-2019-English-STIG-Core").unwrap();
        assert_eq!(
            (n.family.edition, n.family.flavour.as_str()),
            (Edition::Core, "STIG")
        );
        let n = parse_ami_name("Windows_Server-2012-R2-English-STIG-Full").unwrap();
        assert_eq!(n.family.version, "2012-R2");
        let n = parse_ami_name("EC2LaunchV2-Windows_Server-2012_R2_RTM-English-Full-Base").unwrap();
        assert_eq!(n.family.version, "2012_R2_RTM");
        let n = parse_ami_name("Windows_Server-2016-English-Nano-Base").unwrap();
        assert_eq!(n.family.edition, Edition::Nano);
    }

    #[test]
    fn other_names_do_not_parse() {
        for name in [
            // Real names outside the grammar (ami-windows-latest parameters, Amazon Linux).
            "Windows_Server-2016-English-Deep-Learning",
            "Windows_Server-2019-English-Tesla",
            "amzn2-x86_64-SQL_2019_Express",
            "amzn2-ami-hvm-2.0.20200520.1-x86_64-gp2",
            // What tc-ami itself names images, and broken shapes.
            "TC bootstrap",
            "Windows_Server-2016-English-Full",
            "Windows_Server-2016-English-Full-Base-2024.13.01",
            "Windows_Server-2016-English-Full-Base-2024.04.10-copy",
            "Windows_Server-2016-English-Full--Base",
            "Windows_Server-16-English-Full-Base",
            "Windows_Server-2016-english-Full-Base",
            "Custom-Windows_Server-2016-English-Full-Base",
            "",
        ] {
            assert_eq!(parse_ami_name(name), None, "{name}");
        }
    }

    #[test]
    fn family_patterns_select_the_family() {
        let names = [
            "Windows_Server-2016-English-Full-Base-2018.09.15",
            "Windows_Server-2022-English-Full-EKS_Optimized-1.31-2025.04.14",
            "EC2LaunchV2-Windows_Server-2019-English-Full-Base-2023.12.13",
            "TPM-Windows_Server-2016-English-Full-Base-2023.05.10",
        ];
        for name in names {
            let pattern = parse_ami_name(name).unwrap().family.pattern();
            assert!(glob_match(&pattern, name), "{pattern} vs {name}");
        }
        let stig = parse_ami_name("Windows_Server-2019-English-STIG-Core").unwrap();
        assert_eq!(
            stig.family.pattern(),
            "Windows_Server-2019-English-STIG-Core-*"
        );
        let base = parse_ami_name(names[0]).unwrap().family.pattern();
        assert_eq!(base, "Windows_Server-2016-English-Full-Base-*");
        // The Base pattern does not catch the Containers family, nor ContainersLatest
        // Containers.
        assert!(!glob_match(
            &base,
            "Windows_Server-2016-English-Full-Containers-2016.10.18"
        ));
        let containers = parse_ami_name("Windows_Server-2016-English-Full-Containers-2016.10.18")
            .unwrap()
            .family
            .pattern();
        assert!(!glob_match(
            &containers,
            "Windows_Server-2016-English-Full-ContainersLatest-2020.08.12"
        ));
    }

    /// Names seen verbatim in public repositories and Servo's `TC bootstrap` (the name
    /// commands/new-ami.py gives its images); ids, states and times are the test's own.
    fn listing() -> Vec<Image> {
        vec![
            image(
                "ami-b1",
                "Windows_Server-2016-English-Full-Base-2020.01.10",
                "2020-01-10T07:00:00.000Z",
                "available",
            ),
            image(
                "ami-b2",
                "Windows_Server-2016-English-Full-Base-2020.08.12",
                "2020-08-12T07:00:00.000Z",
                "available",
            ),
            image(
                "ami-b3",
                "Windows_Server-2016-English-Full-Base-2021.08.11",
                "2021-08-11T07:00:00.000Z",
                "pending",
            ),
            image(
                "ami-c1",
                "Windows_Server-2016-English-Full-Containers-2020.08.12",
                "2020-08-12T07:00:00.000Z",
                "available",
            ),
            image(
                "ami-s1",
                "Windows_Server-2016-English-Full-SQL_2019_Standard-2020.08.12",
                "2020-08-12T07:00:00.000Z",
                "failed",
            ),
            image(
                "ami-x1",
                "TC bootstrap",
                "2020-08-20T07:00:00.000Z",
                "available",
            ),
        ]
    }

    #[test]
    fn groups_count_and_show_the_newest_usable_image() {
        let groups = group_images(&listing());
        let flavours: Vec<Option<&str>> = groups
            .iter()
            .map(|g| g.family.as_ref().map(|f| f.flavour.as_str()))
            .collect();
        assert_eq!(
            flavours,
            vec![
                Some("Base"),
                Some("Containers"),
                Some("SQL_2019_Standard"),
                None
            ]
        );
        let base = &groups[0];
        assert_eq!((base.count, base.available), (3, 2));
        // The pending 2021.08.11 image is newer but not usable.
        assert_eq!(base.newest.as_ref().unwrap().id, "ami-b2");
        let sql = &groups[2];
        assert_eq!((sql.count, sql.available, sql.newest.clone()), (1, 0, None));
        assert_eq!(groups[3].count, 1);
        assert!(group_images(&[]).is_empty());
    }

    #[test]
    fn groups_sort_by_version_locale_edition_flavour() {
        let images = vec![
            // All three names are quoted in one public listing of Amazon's images.
            image(
                "ami-1",
                "Windows_Server-2022-English-Core-Base-2022.08.10",
                "",
                "available",
            ),
            image(
                "ami-2",
                "Windows_Server-2019-English-Core-Base-2022.08.10",
                "",
                "available",
            ),
            image(
                "ami-3",
                "Windows_Server-2022-English-Full-Base-2022.08.10",
                "",
                "available",
            ),
        ];
        let ids: Vec<String> = group_images(&images)
            .into_iter()
            .map(|g| g.newest.unwrap().id)
            .collect();
        assert_eq!(ids, vec!["ami-2", "ami-3", "ami-1"]);
    }

    #[test]
    fn candidates_mark_the_pick_and_say_why_the_others_lose() {
        let mut images = listing();
        // Same creation time as the pick: a lower name, and the same name with a lower id.
        images.push(image(
            "ami-b0",
            "Windows_Server-2016-English-Full-Base-2020.01.10",
            "2020-08-12T07:00:00.000Z",
            "available",
        ));
        images.push(image(
            "ami-a9",
            "Windows_Server-2016-English-Full-Base-2020.08.12",
            "2020-08-12T07:00:00.000Z",
            "available",
        ));
        let list = candidates(&images, "Windows_Server-2016-English-Full-Base-*");
        let got: Vec<(&str, &Verdict)> = list
            .iter()
            .map(|c| (c.image.id.as_str(), &c.verdict))
            .collect();
        let pending = Verdict::NotAvailable {
            state: "pending".into(),
        };
        assert_eq!(
            got,
            vec![
                ("ami-b3", &pending),
                ("ami-b2", &Verdict::Picked),
                ("ami-a9", &Verdict::SameDateAndNameLowerId),
                ("ami-b0", &Verdict::SameDateLowerName),
                ("ami-b1", &Verdict::Older),
            ]
        );
        // The pick is exactly choose_base_ami's.
        let picked = choose_base_ami(&images, "Windows_Server-2016-English-Full-Base-*").unwrap();
        assert_eq!(picked.id, "ami-b2");
        assert_eq!(list[0].verdict.to_string(), "pending: not available");
        assert_eq!(list[1].state, "available");
    }

    #[test]
    fn candidates_without_a_pick() {
        let list = candidates(
            &listing(),
            "Windows_Server-2016-English-Full-SQL_2019_Standard-*",
        );
        assert_eq!(list.len(), 1);
        assert_eq!(
            list[0].verdict,
            Verdict::NotAvailable {
                state: "failed".into()
            }
        );
        assert!(candidates(&listing(), "Windows_Server-2025-*").is_empty());
    }

    #[test]
    fn renders_groups_and_candidates_as_tables() {
        let mut images = listing();
        images.push(image(
            "ami-t1",
            "TPM-Windows_Server-2016-English-Full-Base-2020.08.12",
            "2020-08-12T07:00:00.000Z",
            "available",
        ));
        let text = render_groups(&group_images(&images));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "VERSION        LOCALE   EDITION  FLAVOUR            IMAGES               NEWEST  CREATED               NAME"
        );
        assert_eq!(
            lines[1],
            "2016           English  Full     Base               3 (1 not available)  ami-b2  2020-08-12T07:00:00Z  Windows_Server-2016-English-Full-Base-2020.08.12"
        );
        assert!(lines[2].starts_with("2016           English  Full     Base (TPM)         1  "));
        assert!(
            lines[4]
                .ends_with("1 (1 not available)  -       -                     (none available)"),
            "{}",
            lines[4]
        );
        assert!(lines[5].starts_with("(other names)                                       1  "));
        assert!(lines[5].ends_with("TC bootstrap"));
        assert_eq!(lines.len(), 6);

        let list = candidates(&images, "Windows_Server-2016-English-Full-Base-*");
        let text = render_candidates(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "IMAGE   NAME                                              CREATED               STATE      WHY",
                "ami-b3  Windows_Server-2016-English-Full-Base-2021.08.11  2021-08-11T07:00:00Z  pending    pending: not available",
                "ami-b2  Windows_Server-2016-English-Full-Base-2020.08.12  2020-08-12T07:00:00Z  available  picked: the newest available match",
                "ami-b1  Windows_Server-2016-English-Full-Base-2020.01.10  2020-01-10T07:00:00Z  available  older than the picked image",
            ]
        );
        assert_eq!(picked(&list).map(|c| c.image.id.as_str()), Some("ami-b2"));
        assert!(
            picked(&candidates(
                &images,
                "Windows_Server-2016-English-Full-SQL*"
            ))
            .is_none()
        );
    }

    #[test]
    fn serialises_for_json_output() {
        let list = candidates(&listing(), "Windows_Server-2016-English-Full-Base-*");
        let v = serde_json::to_value(&list[0]).unwrap();
        assert_eq!(v["verdict"], "not_available");
        assert_eq!(v["state"], "pending");
        assert_eq!(v["image"]["id"], "ami-b3");
        let g = serde_json::to_value(&group_images(&listing())[0]).unwrap();
        assert_eq!(g["family"]["edition"], "Full");
        assert!(g["family"].get("prefix").is_none());
    }
}
