//! Rendering the change to a worker pool (pure): a unified diff of pretty JSON, as git and
//! terraform show it, and an RFC 6902 JSON Patch for machines.

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

pub const DEFAULT_CONTEXT: usize = 3;

/// Pretty JSON with two-space indent, keys in the order given (no sorting: the service's
/// order is kept so that only what changed shows).
pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A unified diff of `before` → `after` with `context` lines, `a/…` and `b/…` headers naming
/// `label`; empty when they are equal. `color` adds ANSI colours (red, green, cyan hunks).
pub fn unified_diff(
    before: &Value,
    after: &Value,
    label: &str,
    context: usize,
    color: bool,
) -> String {
    let (a, b) = (pretty(before), pretty(after));
    if a == b {
        return String::new();
    }
    let diff = TextDiff::from_lines(&a, &b);
    let mut out = String::new();
    let paint = |code: &str, text: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    out.push_str(&paint(
        "1",
        &format!("--- a/{label} (live)\n+++ b/{label} (to push)\n"),
    ));
    // More context than both texts have lines shows the same; the cap keeps `similar`'s
    // arithmetic (it doubles the radius) from overflowing on `-U 18446744073709551615`.
    let context = context.min(a.lines().count() + b.lines().count());
    for hunk in diff.unified_diff().context_radius(context).iter_hunks() {
        out.push_str(&paint("36", &format!("{}", hunk.header())));
        out.push('\n');
        for change in hunk.iter_changes() {
            let line = change.value();
            let line = line.strip_suffix('\n').unwrap_or(line);
            match change.tag() {
                ChangeTag::Delete => out.push_str(&paint("31", &format!("-{line}"))),
                ChangeTag::Insert => out.push_str(&paint("32", &format!("+{line}"))),
                ChangeTag::Equal => out.push_str(&format!(" {line}")),
            }
            out.push('\n');
        }
    }
    out
}

/// The RFC 6902 operations that turn `before` into `after`.
pub fn json_patch(before: &Value, after: &Value) -> Value {
    serde_json::to_value(json_patch::diff(before, after)).unwrap_or(Value::Array(vec![]))
}

/// Whether to colour output written to a stream: only on a terminal, and never with NO_COLOR
/// set to anything non-empty (https://no-color.org).
pub fn use_color(is_terminal: bool, no_color: Option<&str>) -> bool {
    is_terminal && no_color.is_none_or(str::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(image: &str) -> Value {
        json!({
            "workerPoolId": "proj-servo/win2016",
            "config": {
                "minCapacity": 0,
                "maxCapacity": 8,
                "launchConfigs": [
                    {"region": "us-west-2", "launchConfig": {"ImageId": image, "InstanceType": "c5.4xlarge", "SubnetId": "subnet-1", "KeyName": "k", "Placement": {"AvailabilityZone": "us-west-2a"}}},
                ],
                "lifecycle": {"registrationTimeout": 3600}
            },
            "description": "Servo Windows workers",
            "owner": "servo-ops@example.com"
        })
    }

    #[test]
    fn equal_pools_have_no_diff() {
        assert_eq!(
            unified_diff(&pool("ami-1"), &pool("ami-1"), "p", 3, false),
            ""
        );
        assert_eq!(json_patch(&pool("ami-1"), &pool("ami-1")), json!([]));
    }

    #[test]
    fn any_context_is_shown_without_overflow() {
        let (a, b) = (json!({"a": 1, "b": 2}), json!({"a": 1, "b": 3}));
        assert_eq!(
            unified_diff(&a, &b, "p", usize::MAX, false),
            unified_diff(&a, &b, "p", 10, false)
        );
    }

    #[test]
    fn shows_only_the_changed_line_with_context() {
        let d = unified_diff(
            &pool("ami-old"),
            &pool("ami-new"),
            "proj-servo/win2016",
            3,
            false,
        );
        let expected = "\
--- a/proj-servo/win2016 (live)
+++ b/proj-servo/win2016 (to push)
@@ -7,7 +7,7 @@
       {
         \"region\": \"us-west-2\",
         \"launchConfig\": {
-          \"ImageId\": \"ami-old\",
+          \"ImageId\": \"ami-new\",
           \"InstanceType\": \"c5.4xlarge\",
           \"SubnetId\": \"subnet-1\",
           \"KeyName\": \"k\",
";
        assert_eq!(d, expected);
        let one = unified_diff(&pool("ami-old"), &pool("ami-new"), "p", 1, false);
        assert_eq!(one.lines().filter(|l| l.starts_with(' ')).count(), 2);
    }

    #[test]
    fn colours_on_request() {
        let d = unified_diff(&pool("ami-old"), &pool("ami-new"), "p", 3, true);
        assert!(d.contains("\x1b[31m-          \"ImageId\": \"ami-old\",\x1b[0m"));
        assert!(d.contains("\x1b[32m+          \"ImageId\": \"ami-new\",\x1b[0m"));
        assert!(!unified_diff(&pool("ami-old"), &pool("ami-new"), "p", 3, false).contains('\x1b'));
    }

    #[test]
    fn patch_names_the_paths() {
        let p = json_patch(&pool("ami-old"), &pool("ami-new"));
        assert_eq!(
            p,
            json!([{"op": "replace", "path": "/config/launchConfigs/0/launchConfig/ImageId", "value": "ami-new"}])
        );
    }

    #[test]
    fn no_color_rules() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some("")));
        assert!(!use_color(true, Some("1")));
        assert!(!use_color(false, None));
    }
}
