//! Pools managed as code by tc-admin (pure): recognising them by their description, and
//! replacing old image ids by new ones in the files that declare them, byte for byte.
//!
//! tc-admin prefixes the description of every resource it manages. Its default prefix is
//! `AppConfig.description_prefix` in taskcluster/tc-admin `tcadmin/appconfig.py`:
//! `"*DO NOT EDIT* - This resource is configured automatically.\n\n"`; earlier releases had
//! it as `DESCRIPTION_PREFIX` in `tcadmin/resources/util.py`, whose `description_converter`
//! tested `value.startswith("*DO NOT EDIT*")`. A project can set its own prefix.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use similar::TextDiff;

/// tc-admin's default description prefix (`tcadmin/appconfig.py`, `description_prefix`).
pub const TC_ADMIN_DEFAULT_PREFIX: &str =
    "*DO NOT EDIT* - This resource is configured automatically.\n\n";

/// The start of tc-admin's default prefix, which marks a managed description.
pub const TC_ADMIN_MARKER: &str = "*DO NOT EDIT*";

/// Whether `description` marks a resource managed by tc-admin: it starts with `prefix`
/// (trailing whitespace ignored; an empty prefix matches nothing), by default
/// [`TC_ADMIN_MARKER`].
pub fn is_managed(description: &str, prefix: Option<&str>) -> bool {
    let prefix = prefix.unwrap_or(TC_ADMIN_MARKER).trim_end();
    !prefix.is_empty() && description.starts_with(prefix)
}

/// Whether a worker pool definition's `description` marks it as managed by tc-admin.
pub fn pool_is_managed(def: &Value, prefix: Option<&str>) -> bool {
    def["description"]
        .as_str()
        .is_some_and(|d| is_managed(d, prefix))
}

/// Old image id → new image id: for each launch config of the pool definition `before`, its
/// `ImageId` → the image `images` gives its region, when that differs. An error when one old id
/// would get two different new ids (it is live in two regions that get different images), since
/// a file could then not say which.
pub fn image_replacements(
    before: &Value,
    images: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let launch_configs = before["config"]["launchConfigs"].as_array();
    for lc in launch_configs.into_iter().flatten() {
        let (Some(region), Some(old)) = (
            lc["region"].as_str(),
            lc["launchConfig"]["ImageId"].as_str(),
        ) else {
            continue;
        };
        let Some(new) = images.get(region).filter(|n| n.as_str() != old) else {
            continue;
        };
        match map.get(old) {
            Some(other) if other != new => {
                return Err(format!(
                    "image {old} is live in regions that get different images ({other} and {new})"
                ));
            }
            _ => {
                map.insert(old.to_string(), new.clone());
            }
        }
    }
    Ok(map)
}

/// One replacement: the 1-based line it is on, and the old and new id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub line: usize,
    pub old: String,
    pub new: String,
}

/// The text after the replacements, and each replacement in the order of the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replaced {
    pub text: String,
    pub changes: Vec<Change>,
}

/// Characters that continue an id (Taskcluster's and EC2's id alphabet): an old id next to
/// one of them is part of a longer token and is left alone.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// Replaces each old id of `ids` (old → new) by its new id wherever it stands as a whole
/// token, in one pass over the original text (a new id is never replaced again); every other
/// byte is kept. Empty old ids and ids mapped to themselves are ignored.
pub fn replace_image_ids(text: &str, ids: &BTreeMap<String, String>) -> Replaced {
    let mut hits: Vec<(usize, &str, &str)> = Vec::new();
    for (old, new) in ids.iter().filter(|(o, n)| !o.is_empty() && o != n) {
        for (at, _) in text.match_indices(old.as_str()) {
            let before = text[..at].chars().next_back();
            let after = text[at + old.len()..].chars().next();
            if !before.is_some_and(is_token_char) && !after.is_some_and(is_token_char) {
                hits.push((at, old, new));
            }
        }
    }
    hits.sort();
    let (mut out, mut changes) = (String::new(), Vec::new());
    let (mut copied, mut counted, mut line) = (0, 0, 1);
    for (at, old, new) in hits {
        if at < copied {
            continue; // overlaps a replacement already made
        }
        line += text[counted..at].matches('\n').count();
        counted = at;
        out.push_str(&text[copied..at]);
        out.push_str(new);
        copied = at + old.len();
        changes.push(Change {
            line,
            old: old.to_string(),
            new: new.to_string(),
        });
    }
    out.push_str(&text[copied..]);
    Replaced { text: out, changes }
}

/// A unified diff of a file's change, `a/PATH` and `b/PATH` headers, `context` lines around
/// each hunk; empty when nothing changes. `color` paints it as the pool diff is painted.
pub fn file_diff(path: &str, before: &str, after: &str, context: usize, color: bool) -> String {
    if before == after {
        return String::new();
    }
    let diff = TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(context)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string();
    if !color {
        return diff;
    }
    diff.lines()
        .map(|l| {
            let code = match l.as_bytes().first() {
                Some(b'-') | Some(b'+') if l.starts_with("---") || l.starts_with("+++") => "1",
                Some(b'-') => "31",
                Some(b'+') => "32",
                Some(b'@') => "36",
                _ => return format!("{l}\n"),
            };
            format!("\x1b[{code}m{l}\x1b[0m\n")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ids(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(o, n)| (o.to_string(), n.to_string()))
            .collect()
    }

    /// servo/taskcluster-config `config/worker-pools.yml` at commit c7462667 (verbatim: both
    /// pools on the same image), with a second region added to `win2016` for the test; its
    /// id is the one the same file held for us-west-2 at another commit (2646f467).
    const SERVO_POOLS: &str = "\
win2016-staging:
    kind: aws_windows
    min_capacity: 0
    max_capacity: 2
    regions:
        us-west-2: ami-040db55391fa01dd7
    capacity_per_instance_type:
        c5.xlarge: 1

win2016:
    kind: aws_windows
    min_capacity: 1
    max_capacity: 10
    regions:
        us-west-2: ami-040db55391fa01dd7
        us-east-1: ami-09fcb40b5d2426c46
    capacity_per_instance_type:
        c5.xlarge: 1

# These are managed in
# https://github.com/mozilla/community-tc-config/blob/master/config/projects.yml
docker:
    kind: externally-managed
docker-untrusted:
    kind: externally-managed
";

    #[test]
    fn recognises_tc_admin_descriptions() {
        let managed = format!("{TC_ADMIN_DEFAULT_PREFIX}Servo's Windows workers");
        assert!(is_managed(&managed, None));
        assert!(!is_managed("Servo's Windows workers", None));
        assert!(!is_managed(" *DO NOT EDIT*", None));
        assert!(!is_managed("", None));
        // A project's own prefix, given as tc-admin's test gives one (with its blank line).
        let custom = "I AM A PREFIX\n\nI am a description";
        assert!(is_managed(custom, Some("I AM A PREFIX\n\n")));
        assert!(!is_managed(&managed, Some("I AM A PREFIX\n\n")));
        assert!(!is_managed(custom, Some("  ")));
        let pool = json!({"description": managed, "owner": "servo-ops@example.com"});
        assert!(pool_is_managed(&pool, None));
        assert!(!pool_is_managed(&json!({"owner": "x"}), None));
    }

    #[test]
    fn replaces_every_whole_occurrence_and_nothing_else() {
        let r = replace_image_ids(
            SERVO_POOLS,
            &ids(&[
                ("ami-040db55391fa01dd7", "ami-0123456789abcdef0"),
                ("ami-09fcb40b5d2426c46", "ami-0fedcba9876543210"),
            ]),
        );
        let expected = SERVO_POOLS
            .replace("ami-040db55391fa01dd7", "ami-0123456789abcdef0")
            .replace("ami-09fcb40b5d2426c46", "ami-0fedcba9876543210");
        assert_eq!(r.text, expected);
        assert_eq!(r.text.len(), SERVO_POOLS.len());
        let lines: Vec<(usize, &str)> =
            r.changes.iter().map(|c| (c.line, c.old.as_str())).collect();
        assert_eq!(
            lines,
            vec![
                (6, "ami-040db55391fa01dd7"),
                (15, "ami-040db55391fa01dd7"),
                (16, "ami-09fcb40b5d2426c46"),
            ]
        );
        // Byte for byte: every line but the three is the same.
        for (i, (a, b)) in SERVO_POOLS.lines().zip(r.text.lines()).enumerate() {
            assert_eq!(a == b, ![6, 15, 16].contains(&(i + 1)), "line {}", i + 1);
        }
    }

    #[test]
    fn leaves_ids_inside_longer_tokens_alone() {
        // An 8-digit id that is the start of a 17-digit one, and ids inside other tokens.
        let text = "a: ami-040db553\nb: ami-040db55391fa01dd7\nc: xami-040db553\n\
                    d: ami-040db553-20261124T220000Z\ne: \"ami-040db553\",ami-040db553\n";
        let r = replace_image_ids(text, &ids(&[("ami-040db553", "ami-11112222")]));
        assert_eq!(
            r.text,
            "a: ami-11112222\nb: ami-040db55391fa01dd7\nc: xami-040db553\n\
             d: ami-040db553-20261124T220000Z\ne: \"ami-11112222\",ami-11112222\n"
        );
        let lines: Vec<usize> = r.changes.iter().map(|c| c.line).collect();
        assert_eq!(lines, vec![1, 5, 5]);
    }

    #[test]
    fn one_pass_no_chains_no_op_entries() {
        let text = "x: ami-aaaaaaaa\ny: ami-bbbbbbbb\n";
        let r = replace_image_ids(
            text,
            &ids(&[
                ("ami-aaaaaaaa", "ami-bbbbbbbb"),
                ("ami-bbbbbbbb", "ami-cccccccc"),
                ("", "ami-dddddddd"),
            ]),
        );
        assert_eq!(r.text, "x: ami-bbbbbbbb\ny: ami-cccccccc\n");
        assert_eq!(r.changes.len(), 2);
        let same = replace_image_ids(text, &ids(&[("ami-aaaaaaaa", "ami-aaaaaaaa")]));
        assert_eq!(same.text, text);
        assert!(same.changes.is_empty());
        let none = replace_image_ids(SERVO_POOLS, &ids(&[("ami-99999999", "ami-00000000")]));
        assert_eq!(none.text, SERVO_POOLS);
        assert!(none.changes.is_empty());
    }

    #[test]
    fn keeps_crlf_missing_final_newline_and_non_ascii() {
        let text = "r\u{e9}gion: ami-aaaaaaaa\r\n# \u{2014} note\r\nlast: ami-aaaaaaaa";
        let r = replace_image_ids(text, &ids(&[("ami-aaaaaaaa", "ami-bbbbbbbb")]));
        assert_eq!(
            r.text,
            "r\u{e9}gion: ami-bbbbbbbb\r\n# \u{2014} note\r\nlast: ami-bbbbbbbb"
        );
        assert_eq!(
            r.changes.iter().map(|c| c.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn replacements_per_launch_config_region() {
        let lc = |region: &str, image: &str| json!({"region": region, "launchConfig": {"ImageId": image}});
        let before = json!({"config": {"launchConfigs": [
            lc("us-west-2", "ami-aaaaaaaa"), lc("us-west-2", "ami-aaaaaaaa"),
            lc("us-east-1", "ami-bbbbbbbb"), lc("us-east-1", "ami-cccccccc"),
            lc("eu-west-1", "ami-dddddddd"), {"region": "eu-west-2"},
        ]}});
        let images = ids(&[
            ("us-west-2", "ami-11111111"),
            ("us-east-1", "ami-22222222"),
            ("eu-west-1", "ami-dddddddd"),
        ]);
        assert_eq!(
            image_replacements(&before, &images),
            Ok(ids(&[
                ("ami-aaaaaaaa", "ami-11111111"),
                ("ami-bbbbbbbb", "ami-22222222"),
                ("ami-cccccccc", "ami-22222222"),
            ]))
        );
        // The same old image in two regions that get different images.
        let shared = json!({"config": {"launchConfigs": [
            lc("us-west-2", "ami-aaaaaaaa"), lc("us-east-1", "ami-aaaaaaaa"),
        ]}});
        let err = image_replacements(&shared, &images).unwrap_err();
        assert_eq!(
            err,
            "image ami-aaaaaaaa is live in regions that get different images (ami-11111111 and ami-22222222)"
        );
        assert_eq!(image_replacements(&json!({}), &images), Ok(BTreeMap::new()));
    }

    #[test]
    fn diff_shows_the_changed_lines() {
        let r = replace_image_ids(
            SERVO_POOLS,
            &ids(&[("ami-09fcb40b5d2426c46", "ami-0fedcba9876543210")]),
        );
        let d = file_diff("config/worker-pools.yml", SERVO_POOLS, &r.text, 1, false);
        let expected = "\
--- a/config/worker-pools.yml
+++ b/config/worker-pools.yml
@@ -15,3 +15,3 @@
         us-west-2: ami-040db55391fa01dd7
-        us-east-1: ami-09fcb40b5d2426c46
+        us-east-1: ami-0fedcba9876543210
     capacity_per_instance_type:
";
        assert_eq!(d, expected);
        assert_eq!(file_diff("p", SERVO_POOLS, SERVO_POOLS, 3, false), "");
        let colored = file_diff("config/worker-pools.yml", SERVO_POOLS, &r.text, 1, true);
        assert!(colored.contains("\x1b[31m-        us-east-1: ami-09fcb40b5d2426c46\x1b[0m\n"));
        assert!(colored.contains("\x1b[32m+        us-east-1: ami-0fedcba9876543210\x1b[0m\n"));
        assert!(colored.contains("\x1b[1m--- a/config/worker-pools.yml\x1b[0m\n"));
        assert!(colored.contains("\x1b[36m@@ -15,3 +15,3 @@\x1b[0m\n"));
        assert!(colored.contains("\n         us-west-2: ami-040db55391fa01dd7\n"));
    }
}
