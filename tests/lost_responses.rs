//! Lost responses: EC2 applies a create call, then its answer is lost (a 500, or the connection
//! closed before a byte). The SDK retries; what the retry gets depends on the call
//! (sandbox/EC2.md, "Lost responses"): the same resource (RunInstances and CopyImage, by their
//! ClientToken), or a "duplicate" error (CreateImage, CreateKeyPair, CreateSecurityGroup),
//! after which tc-ami takes what its own lost call made (the names are the build's alone).
//! Either way the build succeeds with exactly one of each resource. When the retry fails too,
//! the build fails and its teardown's sweeps find what the lost call made: nothing is left.

mod support;

use serde_json::json;
use support::*;

const CREATES: [&str; 5] = [
    "RunInstances",
    "CreateImage",
    "CopyImage",
    "CreateKeyPair",
    "CreateSecurityGroup",
];

/// One build with the next `action` call applied and its answer lost as `kind`; with
/// `then_denied`, the SDK's retry of it is refused (403, not retried).
fn build_with_lost(ec2: &Ec2, cfg: &Config, action: &str, kind: &str, then_denied: bool) {
    ec2.server.post("/_sandbox/reset", json!({}));
    let (next, kinds) = if then_denied {
        (2, json!([kind, "denied"]))
    } else {
        (1, json!([kind]))
    };
    ec2.configure(json!({"faults": {"next": next, "actions": [action], "kinds": kinds}}));
    let run = TcAmi::new(ec2, None, cfg).run(&["--json", "build", "-w", "w"]);
    let case = format!(
        "{action} with {kind}{}",
        if then_denied { ", then denied" } else { "" }
    );
    let stats = ec2.stats();
    assert_eq!(
        stats["faulted"][action], next,
        "{case}: the answer lost (and the retry denied): {stats}"
    );
    if then_denied {
        run.assert_code(1);
        assert!(
            run.error_line().contains("build failed while"),
            "{case}: {}",
            run.stderr
        );
        assert!(
            run.error_line().contains("UnauthorizedOperation"),
            "{case}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("LEFT BEHIND"),
            "{case}: {}",
            run.stderr
        );
        ec2.assert_nothing_left();
        return;
    }
    assert_eq!(run.code, 0, "{case}: {}", run.stderr);
    let images = run.json()["images"].clone();
    assert_eq!(
        images.as_object().map(|o| o.len()),
        Some(2),
        "{case}: {images}"
    );
    ec2.assert_nothing_left_but_images();
    let ours: Vec<String> = ec2
        .all("images")
        .into_iter()
        .filter(|(_, i)| i["seeded"] != true)
        .map(|(r, i)| format!("{r} {}", i["id"]))
        .collect();
    assert_eq!(ours.len(), 2, "{case}: one image and one copy: {ours:?}");
    let instances = ec2.all("instances");
    assert_eq!(instances.len(), 1, "{case}: one instance: {instances:?}");
}

#[test]
fn a_lost_create_answer_is_retried_or_taken_over() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "regions = [\"us-east-1\"]");
    for action in CREATES {
        for kind in ["lost-500", "lost-connection"] {
            build_with_lost(&ec2, &cfg, action, kind, false);
        }
    }
}

#[test]
fn a_lost_create_answer_whose_retry_fails_is_swept() {
    let ec2 = Ec2::start(json!({}));
    let cfg = Config::new();
    cfg.worker_type("w", POOL, "regions = [\"us-east-1\"]");
    for action in CREATES {
        for kind in ["lost-500", "lost-connection"] {
            build_with_lost(&ec2, &cfg, action, kind, true);
        }
    }
}
