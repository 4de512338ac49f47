//! `diff` and `deploy` against moto, the guest simulator and the worker-manager emulator.

mod support;

use serde_json::json;
use support::*;

/// A Windows base image of the seed that is still pending (sandbox/seed/windows-amis.json).
const PENDING_AMI: &str = "ami-bbc33a8682d2d1a1d";

#[test]
fn deploy_builds_then_puts_the_images_in_every_launch_config() {
    let w = World::new();
    let (before, _) = w.pool();
    let run = w.tc_ami().run(&["--json", "deploy", "-w", "w", "--yes"]);
    run.assert_code(0);
    // The pool is read when the command starts, by the scope check before the build, after the
    // build (the diff is computed against it), right before the push (someone else's change
    // since the diff stops it) and after the push (its verification, which the rollout line
    // uses too).
    assert_eq!(w.pool_reads(), 5);
    let doc = run.json();
    assert_eq!(doc["pushed"], true);
    assert_eq!(doc["changed"], true);
    let west = doc["images"]["us-west-2"].as_str().unwrap().to_string();
    let east = doc["images"]["us-east-1"].as_str().unwrap().to_string();
    let deployment_id = doc["deploymentId"].as_str().unwrap().to_string();
    assert!(deployment_id.contains(&west), "readable: {deployment_id}");

    let (active, all) = w.pool();
    assert_eq!(active.len(), 4);
    for lc in &active {
        let want = if lc["configuration"]["region"] == "us-west-2" {
            &west
        } else {
            &east
        };
        assert_eq!(image_of(lc), want);
        assert_eq!(deployment_id_of(lc), deployment_id);
        assert!(
            !before
                .iter()
                .any(|b| b["launchConfigId"] == lc["launchConfigId"]),
            "new launch config ids"
        );
    }
    // The old launch configs are archived, so their workers are retired.
    for b in &before {
        let old = all
            .iter()
            .find(|l| l["launchConfigId"] == b["launchConfigId"])
            .unwrap();
        assert_eq!(old["isArchived"], true);
    }
    // The JSON document describes the change as a patch too, never the secrets.
    assert!(doc["patch"].as_array().unwrap().iter().any(|op| {
        op["path"]
            .as_str()
            .unwrap()
            .ends_with("/launchConfig/ImageId")
    }));
    run.assert_hides(OPERATOR_TOKEN);

    // Reviewing again: nothing to change.
    let run = w.tc_ami().run(&["diff", "-w", "w"]);
    run.assert_code(0);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("is up to date"), "{}", run.stderr);
}

#[test]
fn diff_shows_the_change_exits_2_and_changes_nothing() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap();
    let run = w.tc_ami().run(&["diff", "-w", "w"]);
    run.assert_code(2);
    let out = &run.stdout;
    assert!(
        out.starts_with(&format!(
            "diff tc-ami {}/api/worker-manager/v1/worker-pool/{POOL}\n",
            w.tc.server.url
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("--- a/{POOL} (live)\n+++ b/{POOL} (to push)\n")),
        "{out}"
    );
    assert!(
        out.contains("-          \"ImageId\": \"ami-00000000000a2016a\","),
        "{out}"
    );
    assert!(
        out.contains(&format!("+          \"ImageId\": \"{west}\",")),
        "{out}"
    );
    assert!(
        out.contains("-          \"launchConfigId\": \"lc-"),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no colour when not a terminal");
    // Only changed lines and their context: no count fields, no created/lastModified.
    assert!(
        !out.contains("runningCount") && !out.contains("lastModified"),
        "{out}"
    );
    assert_eq!(w.updates(), 0);

    // One line of context.
    let run = w.tc_ami().run(&["diff", "-w", "w", "-U", "1"]);
    run.assert_code(2);
    assert!(
        run.stdout.lines().filter(|l| l.starts_with(' ')).count()
            < out.lines().filter(|l| l.starts_with(' ')).count()
    );

    // --json: one document with the RFC 6902 patch.
    let run = w
        .tc_ami()
        .run(&["--json", "diff", "-w", "w", "--image", west]);
    run.assert_code(2);
    let doc = run.json();
    assert_eq!(doc["workerPoolId"], POOL);
    assert_eq!(doc["changed"], true);
    assert!(doc["before"].is_object() && doc["after"].is_object());
    let ops = doc["patch"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|op| op["op"] == "replace" && op["value"] == west),
        "{ops:?}"
    );
    assert!(
        ops.iter()
            .any(|op| op["op"] == "remove"
                && op["path"].as_str().unwrap().ends_with("/launchConfigId")),
        "{ops:?}"
    );
    assert_eq!(w.updates(), 0);
}

#[test]
fn dry_run_changes_nothing() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap();
    let (before, _) = w.pool();
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", west, "--dry-run"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains(west),
        "the diff is shown: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("dry run: nothing pushed"),
        "{}",
        run.stderr
    );
    assert_eq!(w.updates(), 0);
    assert_eq!(w.pool().0, before);
}

#[test]
fn without_a_terminal_or_yes_nothing_is_pushed() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap();
    let run = w.tc_ami().run(&["deploy", "-w", "w", "--image", west]);
    run.assert_code(1);
    assert!(
        run.error_line()
            .contains("refusing to push this change to worker pool proj-servo/win2016"),
        "{}",
        run.stderr
    );
    assert!(run.error_line().contains("pass --yes"), "{}", run.stderr);
    assert_eq!(w.updates(), 0);

    // Deploy that would build refuses before building.
    let ec2_calls = w.ec2.stats()["requests"]["RunInstances"]
        .as_u64()
        .unwrap_or(0);
    let run = w.tc_ami().run(&["deploy", "-w", "w"]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("refusing to build and deploy"),
        "{}",
        run.stderr
    );
    assert_eq!(
        w.ec2.stats()["requests"]["RunInstances"]
            .as_u64()
            .unwrap_or(0),
        ec2_calls
    );
    assert_eq!(w.updates(), 0);
}

#[test]
fn a_read_only_client_can_review_but_not_push() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap();
    let ro = || {
        w.tc_ami()
            .env("TASKCLUSTER_CLIENT_ID", READONLY_ID)
            .env("TASKCLUSTER_ACCESS_TOKEN", READONLY_TOKEN)
    };
    ro().run(&["diff", "-w", "w"]).assert_code(2);
    let run = ro().run(&["deploy", "-w", "w", "--image", west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("client `tc-ami-readonly` lacks the scope"),
        "{err}"
    );
    // It may not record the deployment, so it does not push.
    assert!(
        err.contains("secrets:get:project/servo/tc-ami/deployments/proj-servo/win2016"),
        "{err}"
    );
    assert!(err.contains(&w.tc.server.url), "names the root URL: {err}");
    run.assert_hides(READONLY_TOKEN);
    assert_eq!(
        w.tc.state()["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["apiMethod"] == "updateWorkerPool" && r["status"] == 200)
            .count(),
        0
    );
}

#[test]
fn a_concurrent_change_is_detected_and_not_overwritten() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap();
    // Someone edits the pool right after tc-ami fetched it for the diff.
    w.tc.server.post(
        "/_emulator/concurrent-change",
        json!({"workerPoolId": POOL, "after_requests": 1, "patch": {"description": "edited by someone else"}}),
    );
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", west, "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("worker pool proj-servo/win2016 changed"),
        "{err}"
    );
    assert!(err.contains("nothing was pushed"), "{err}");
    assert_eq!(w.updates(), 0);
    let state = w.tc.state();
    assert_eq!(
        state["workerPools"][POOL]["definition"]["description"],
        "edited by someone else"
    );
}

#[test]
fn a_deploy_of_images_that_need_no_copy_reads_the_pool_four_times() {
    let w = World::new();
    let west = w.build()["us-west-2"].as_str().unwrap().to_string();
    let reads = w.pool_reads();
    w.tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"])
        .assert_code(0);
    // When the command starts (the diff), by the scope check right before the push (which posts
    // the pool back unchanged), again after that update (someone else's change landing right
    // after it stops the push: tests/scopes.rs), and after the push (its verification, which
    // the rollout line uses too).
    assert_eq!(w.pool_reads() - reads, 4);
}

#[test]
fn a_burst_of_503s_is_survived() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap();
    w.tc.server.post(
        "/_emulator/faults",
        json!({"fail": {"status": 503, "count": 3}}),
    );
    let run = w
        .tc_ami()
        .run(&["deploy", "-w", "w", "--image", west, "--yes"]);
    run.assert_code(0);
    let (active, _) = w.pool();
    assert!(active.iter().any(|lc| image_of(lc) == west));
}

#[test]
fn bad_deploys_change_nothing_and_say_why() {
    let w = World::new();
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap().to_string();
    let east = images["us-east-1"].as_str().unwrap().to_string();
    w.cfg.worker_type("nopool", "proj-servo/does-not-exist", "");
    let url = w.tc.server.url.clone();
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (
            vec!["-w".into(), "nopool".into(), "--image".into(), west.clone()],
            vec![],
            format!("worker pool proj-servo/does-not-exist does not exist at {url} (404)"),
        ),
        (
            vec![
                "-w".into(),
                "w".into(),
                "--image".into(),
                "ami-nothex".into(),
            ],
            vec![],
            "`ami-nothex` is not an AMI id".into(),
        ),
        (
            vec![
                "-w".into(),
                "w".into(),
                "--image".into(),
                format!("eu-west-1={west}"),
            ],
            vec![],
            "has no launch configs in eu-west-1".into(),
        ),
        (
            vec![
                "-w".into(),
                "w".into(),
                "--image".into(),
                format!("us-west-2={PENDING_AMI}"),
                "--image".into(),
                format!("us-east-1={east}"),
            ],
            vec![],
            format!("image {PENDING_AMI} in us-west-2 is pending, not available"),
        ),
        (
            vec![
                "-w".into(),
                "w".into(),
                "--image".into(),
                "ami-0123456789abcdef0".into(),
            ],
            vec![],
            "image ami-0123456789abcdef0 does not exist in us-west-2".into(),
        ),
        (
            vec!["-w".into(), "w".into(), "--image".into(), west.clone()],
            vec![("TASKCLUSTER_ACCESS_TOKEN", "wrong")],
            format!("refused the credentials of client `{OPERATOR_ID}` (401"),
        ),
        (
            vec!["-w".into(), "w".into(), "--image".into(), west.clone()],
            vec![("TASKCLUSTER_CLIENT_ID", "")],
            "TASKCLUSTER_CLIENT_ID is not set".into(),
        ),
        (
            vec!["-w".into(), "w".into(), "--image".into(), west.clone()],
            vec![("TASKCLUSTER_ROOT_URL", "")],
            "TASKCLUSTER_ROOT_URL is not set".into(),
        ),
    ];
    for (args, env, want) in cases {
        let mut t = w.tc_ami();
        for (k, v) in env {
            t = t.env(k, v);
        }
        let mut full = vec!["deploy", "--yes"];
        full.extend(args.iter().map(String::as_str));
        let run = t.run(&full);
        run.assert_code(1);
        assert!(
            run.error_line().contains(&want),
            "{args:?}: want {want:?}, got {}",
            run.stderr
        );
        assert_eq!(
            run.stderr
                .lines()
                .filter(|l| l.starts_with("tc-ami:"))
                .count(),
            1,
            "{}",
            run.stderr
        );
    }
    assert_eq!(w.updates(), 0);
}

#[test]
fn diff_names_a_region_without_an_image() {
    let w = World::new();
    // A base image of the seed: no copy of it exists in us-east-1.
    let run = w.tc_ami().run(&[
        "diff",
        "-w",
        "w",
        "--image",
        "us-west-2=ami-debb7b63493b4360c",
    ]);
    run.assert_code(1);
    assert!(
        run.error_line().contains("has launch configs in us-east-1 but no image was given for it; pass --image us-east-1=AMI"),
        "{}",
        run.stderr
    );
}

#[test]
fn deploy_copies_an_image_to_the_regions_that_lack_it() {
    let w = World::new();
    // Built for us-west-2 only; the pool also runs in us-east-1.
    w.cfg.worker_type("west", POOL, "");
    // Without Taskcluster, build cannot see the pool's regions: it makes one image.
    let run = w
        .tc_ami()
        .env_remove("TASKCLUSTER_ROOT_URL")
        .run(&["--json", "build", "-w", "west"]);
    run.assert_code(0);
    let west = run.json()["images"]["us-west-2"]
        .as_str()
        .unwrap()
        .to_string();
    let run = w
        .tc_ami()
        .run(&["--json", "deploy", "-w", "west", "--image", &west, "--yes"]);
    run.assert_code(0);
    // Read when the command starts (the diff is computed against it), by the scope check before
    // the copy, right before the push (the copy took a while) and after the push (for its
    // verification and the rollout line).
    assert_eq!(w.pool_reads(), 4);
    let east = run.json()["images"]["us-east-1"]
        .as_str()
        .unwrap()
        .to_string();
    let images = w.ec2.all("images");
    let (_, copy) = images
        .iter()
        .find(|(r, i)| r == "us-east-1" && i["id"] == east.as_str())
        .expect("the copy");
    assert_eq!(copy["state"], "available");
    assert_eq!(copy["tags"]["tc-ami:source-image-id"], west.as_str());
    assert!(w.pool().0.iter().any(|lc| image_of(lc) == east));
}

#[test]
fn build_copies_to_the_pool_regions_when_the_worker_type_names_none() {
    let w = World::new();
    w.cfg.worker_type("bare", POOL, "");
    let run = w.tc_ami().run(&["--json", "build", "-w", "bare"]);
    run.assert_code(0);
    let images = run.json()["images"].clone();
    assert!(
        images["us-west-2"].is_string() && images["us-east-1"].is_string(),
        "{images}"
    );
    assert!(
        run.stderr
            .contains("copying to the regions of worker pool proj-servo/win2016: us-east-1"),
        "{}",
        run.stderr
    );
}
