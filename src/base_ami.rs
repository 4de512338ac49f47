//! Choosing the base AMI: the newest available image whose name matches the pattern.

use crate::model::Image;

/// Glob match as EC2's `name` filter does it: `*` any run of characters, `?` one character,
/// everything else literal and case-sensitive.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut star_ni) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            star_ni = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            star_ni += 1;
            ni = star_ni;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The newest available image whose name matches `pattern`. Newest by creation date; on a
/// tie, the greater name (dated names sort by date), then the greater id, so that the choice
/// never depends on the order EC2 listed them in. Images without a creation date lose to
/// any with one.
pub fn choose_base_ami<'a>(images: &'a [Image], pattern: &str) -> Option<&'a Image> {
    images
        .iter()
        .filter(|i| i.is_available() && glob_match(pattern, &i.name))
        .max_by(|a, b| {
            a.creation_date
                .cmp(&b.creation_date)
                .then_with(|| a.name.cmp(&b.name))
                .then_with(|| a.id.cmp(&b.id))
        })
}

/// Why nothing was chosen, for the error message: how many matched but were not available.
pub fn unavailable_matches<'a>(images: &'a [Image], pattern: &str) -> Vec<&'a Image> {
    images
        .iter()
        .filter(|i| !i.is_available() && glob_match(pattern, &i.name))
        .collect()
}

/// Whether `current` is a newer base than the one a live image was built from (pure):
/// `built_from_id` is the live image's `tc-ami:base-image-id` tag, `built_from` that image as
/// described (None when it is gone). `status` and `auto` both ask it.
pub fn newer_base<'a>(
    current: &'a Image,
    built_from_id: Option<&str>,
    built_from: Option<&Image>,
) -> Option<&'a Image> {
    match (built_from_id, built_from) {
        (Some(id), _) if id == current.id => None,
        (_, Some(old)) if old.creation_date >= current.creation_date => None,
        (None, None) => None,
        _ => Some(current),
    }
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

    const P: &str = "Windows_Server-2016-English-Full-Base-*";

    #[test]
    fn glob() {
        assert!(glob_match(
            P,
            "Windows_Server-2016-English-Full-Base-2026.11.12"
        ));
        assert!(!glob_match(
            P,
            "Windows_Server-2016-English-Core-Base-2026.11.12"
        ));
        assert!(!glob_match(
            P,
            "windows_server-2016-english-full-base-2026.11.12"
        ));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "abcd"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
    }

    #[test]
    fn newest_available_match_wins() {
        let images = vec![
            image(
                "ami-old",
                "Windows_Server-2016-English-Full-Base-2026.09.10",
                "2026-09-10T08:00:00.000Z",
                "available",
            ),
            image(
                "ami-new",
                "Windows_Server-2016-English-Full-Base-2026.11.12",
                "2026-11-12T08:00:00.000Z",
                "available",
            ),
            image(
                "ami-mid",
                "Windows_Server-2016-English-Full-Base-2026.10.08",
                "2026-10-08T08:00:00.000Z",
                "available",
            ),
            image(
                "ami-core",
                "Windows_Server-2016-English-Core-Base-2026.11.20",
                "2026-11-20T08:00:00.000Z",
                "available",
            ),
            image(
                "ami-pending",
                "Windows_Server-2016-English-Full-Base-2026.11.22",
                "2026-11-22T08:00:00.000Z",
                "pending",
            ),
            image(
                "ami-failed",
                "Windows_Server-2016-English-Full-Base-2026.11.23",
                "2026-11-23T08:00:00.000Z",
                "failed",
            ),
        ];
        assert_eq!(choose_base_ami(&images, P).unwrap().id, "ami-new");
        let unavailable: Vec<_> = unavailable_matches(&images, P)
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(unavailable, vec!["ami-pending", "ami-failed"]);
    }

    #[test]
    fn order_of_listing_does_not_matter_and_ties_are_stable() {
        let a = image(
            "ami-b",
            "Windows_Server-2016-English-Full-Base-2026.11.12",
            "2026-11-12T08:00:00.000Z",
            "available",
        );
        let b = image(
            "ami-a",
            "Windows_Server-2016-English-Full-Base-2026.11.12",
            "2026-11-12T08:00:00.000Z",
            "available",
        );
        let c = image(
            "ami-c",
            "Windows_Server-2016-English-Full-Base-2026.11.11",
            "2026-11-12T08:00:00.000Z",
            "available",
        );
        let one = vec![a.clone(), b.clone(), c.clone()];
        let two = vec![c, b, a];
        assert_eq!(choose_base_ami(&one, P).unwrap().id, "ami-b");
        assert_eq!(choose_base_ami(&two, P).unwrap().id, "ami-b");
    }

    #[test]
    fn dates_compare_as_times_not_text() {
        let images = vec![
            image(
                "ami-1",
                "Windows_Server-2016-English-Full-Base-x",
                "2026-11-12T23:00:00.000+00:00",
                "available",
            ),
            image(
                "ami-2",
                "Windows_Server-2016-English-Full-Base-y",
                "2026-11-13T01:00:00.000+03:00",
                "available",
            ),
        ];
        // 01:00+03:00 is 22:00Z on the 12th: older than ami-1.
        assert_eq!(choose_base_ami(&images, P).unwrap().id, "ami-1");
    }

    #[test]
    fn undated_images_lose() {
        let images = vec![
            image(
                "ami-undated",
                "Windows_Server-2016-English-Full-Base-z",
                "",
                "available",
            ),
            image(
                "ami-dated",
                "Windows_Server-2016-English-Full-Base-a",
                "2017-01-01T00:00:00.000Z",
                "available",
            ),
        ];
        assert_eq!(choose_base_ami(&images, P).unwrap().id, "ami-dated");
    }

    #[test]
    fn nothing_matches() {
        let images = vec![image(
            "ami-1",
            "Linux",
            "2026-01-01T00:00:00.000Z",
            "available",
        )];
        assert!(choose_base_ami(&images, P).is_none());
        assert!(choose_base_ami(&[], P).is_none());
    }

    fn dated(id: &str, date: &str) -> Image {
        Image {
            id: id.into(),
            name: format!("Windows-{date}"),
            state: "available".into(),
            creation_date: parse_ec2_time(date),
            owner_id: "801119661308".into(),
            root_device_name: None,
            snapshot_ids: vec![],
            tags: Default::default(),
            state_reason: None,
        }
    }

    #[test]
    fn newer_base_rules() {
        let current = dated("ami-new", "2026-11-12T00:00:00Z");
        let old = dated("ami-old", "2026-10-01T00:00:00Z");
        assert_eq!(newer_base(&current, Some("ami-new"), None), None);
        assert_eq!(
            newer_base(&current, Some("ami-old"), Some(&old)).map(|i| i.id.as_str()),
            Some("ami-new")
        );
        // The base it was built from is gone (Amazon retires old images): the current is newer.
        assert_eq!(
            newer_base(&current, Some("ami-gone"), None).map(|i| i.id.as_str()),
            Some("ami-new")
        );
        // Built from a base newer than what the pattern picks now: not "newer".
        let newest = dated("ami-newest", "2026-12-01T00:00:00Z");
        assert_eq!(
            newer_base(&current, Some("ami-newest"), Some(&newest)),
            None
        );
        // Not built by tc-ami (no tag): unknown, not claimed.
        assert_eq!(newer_base(&current, None, None), None);
    }
}
