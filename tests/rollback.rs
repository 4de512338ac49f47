//! `rollback`, `history`, `promote` and `status` against the stand-ins.

mod support;

use serde_json::json;
use support::*;

/// Builds an image and deploys it; returns its us-west-2 id.
fn build_and_deploy(w: &World) -> String {
    let images = w.build();
    let west = images["us-west-2"].as_str().unwrap().to_string();
    w.tc_ami()
        .run(&["deploy", "-w", "w", "--image", &west, "--yes"])
        .assert_code(0);
    west
}

fn live_west(w: &World) -> (String, String) {
    let (active, _) = w.pool();
    let lc = active
        .iter()
        .find(|lc| lc["configuration"]["region"] == "us-west-2")
        .unwrap();
    (image_of(lc).to_string(), deployment_id_of(lc).to_string())
}

#[test]
fn rollback_puts_back_the_previous_images_then_goes_further_back() {
    let w = World::new();
    let a = build_and_deploy(&w);
    let (_, dep_a) = live_west(&w);
    let b = build_and_deploy(&w);
    assert_eq!(live_west(&w).0, b);

    // From an empty HOME and another working directory: the record is in Taskcluster.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut t = w.tc_ami();
    t.cmd.current_dir(elsewhere.path());
    let run = t.run(&["--json", "rollback", "-w", "w", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["pushed"], true);
    let (image, dep) = live_west(&w);
    assert_eq!(image, a);
    assert_ne!(dep, dep_a, "a fresh deployment id");
    // Every launch config is back on A's images, under new launch config ids.
    let (active, _) = w.pool();
    assert!(active.iter().all(|lc| deployment_id_of(lc) == dep));

    // history lists all three, newest first, the rollback live.
    let run = w.tc_ami().run(&["--json", "history", "-w", "w"]);
    run.assert_code(0);
    let doc = run.json();
    let d = doc["deployments"].as_array().unwrap();
    assert_eq!(d.len(), 3, "{doc}");
    assert_eq!(d[0]["kind"], "rollback");
    assert_eq!(d[0]["undoes"], 2);
    assert_eq!(d[0]["live"], true);
    assert_eq!(d[0]["who"], OPERATOR_ID);
    assert_eq!(d[0]["after"]["us-west-2"], a.as_str());
    assert_eq!(d[1]["after"]["us-west-2"], b.as_str());
    assert_eq!(d[2]["kind"], "deploy");
    let run = w.tc_ami().run(&["history", "-w", "w"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .lines()
            .nth(1)
            .unwrap()
            .contains("#3 rollback of #2"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().nth(2).unwrap().ends_with("rolled back"),
        "{}",
        run.stdout
    );

    // A second rollback goes one further back (the seed's images), not back to B; those
    // images do not exist in the sandbox, so it fails cleanly and changes nothing.
    let before = w.pool().0;
    let run = w.tc_ami().run(&["rollback", "-w", "w", "--yes"]);
    run.assert_code(1);
    let err = run.error_line();
    assert!(
        err.contains("cannot roll back worker pool proj-servo/win2016: image ami-00000000000"),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(w.pool().0, before);
}

#[test]
fn a_second_rollback_goes_further_back() {
    let w = World::new();
    let a = build_and_deploy(&w);
    let b = build_and_deploy(&w);
    let _c = build_and_deploy(&w);
    w.tc_ami()
        .run(&["rollback", "-w", "w", "--yes"])
        .assert_code(0);
    assert_eq!(live_west(&w).0, b);
    w.tc_ami()
        .run(&["rollback", "-w", "w", "--yes"])
        .assert_code(0);
    assert_eq!(live_west(&w).0, a);
}

#[test]
fn rollback_to_a_deregistered_image_fails_and_changes_nothing() {
    let w = World::new();
    let a = build_and_deploy(&w);
    let _b = build_and_deploy(&w);
    // Deregister A in us-east-1 behind tc-ami's back (its copy there).
    let (_, east) = w
        .ec2
        .all("images")
        .into_iter()
        .find(|(r, i)| r == "us-east-1" && i["tags"]["tc-ami:source-image-id"] == a.as_str())
        .unwrap();
    let east = east["id"].as_str().unwrap().to_string();
    w.ec2.deregister("us-east-1", &east);
    let before = w.pool().0;
    let updates = w.updates();
    let run = w.tc_ami().run(&["rollback", "-w", "w", "--yes"]);
    run.assert_code(1);
    assert!(
        run.error_line()
            .contains(&format!("image {east} does not exist in us-east-1")),
        "{}",
        run.stderr
    );
    assert_eq!(w.pool().0, before);
    assert_eq!(w.updates(), updates);

    // --dry-run shows the change and changes nothing; --to names another target.
    let run = w.tc_ami().run(&[
        "rollback",
        "-w",
        "w",
        "--to",
        "ami-0123456789abcdef0",
        "--dry-run",
    ]);
    run.assert_code(1);
    assert!(
        run.error_line()
            .contains("ami-0123456789abcdef0 does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn promote_deploys_staging_images_to_production() {
    let w = World::new();
    w.cfg.worker_type(
        "staging",
        "proj-servo/win2016-staging",
        "regions = [\"us-east-1\"]",
    );
    let run = w
        .tc_ami()
        .run(&["--json", "deploy", "-w", "staging", "--yes"]);
    run.assert_code(0);
    let staged = run.json()["images"].clone();
    // The staging deploy: its scope check (an update that changes nothing), then the push.
    assert_eq!(w.updates(), 2, "only the staging deploy");
    let run = w
        .tc_ami()
        .run(&["promote", "--from", "staging", "--to", "w", "--dry-run"]);
    run.assert_code(0);
    assert_eq!(w.updates(), 2, "only the staging deploy");
    let run = w.tc_ami().run(&[
        "--json", "promote", "--from", "staging", "--to", "w", "--yes",
    ]);
    run.assert_code(0);
    assert_eq!(run.json()["images"], staged);
    let (active, _) = w.pool();
    for lc in &active {
        let region = lc["configuration"]["region"].as_str().unwrap();
        assert_eq!(image_of(lc), staged[region].as_str().unwrap());
    }
    let run = w.tc_ami().run(&["--json", "history", "-w", "w"]);
    assert_eq!(run.json()["deployments"][0]["kind"], "promote");
    assert_eq!(run.json()["deployments"][0]["from"], "staging");
}

#[test]
fn status_reports_a_newer_base_image() {
    let w = World::new();
    let west = build_and_deploy(&w);
    let run = w.tc_ami().run(&["--json", "status", "-w", "w"]);
    run.assert_code(0);
    let doc = &run.json()["workerTypes"][0];
    assert_eq!(
        doc["live"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["region"] == "us-west-2")
            .unwrap()["image"],
        west.as_str()
    );
    assert!(doc["newer_base_image"].is_null(), "{doc}");
    assert_eq!(doc["last_deployment"]["kind"], "deploy");

    w.ec2.server.post(
        "/_sandbox/seed-image",
        json!({"region": "all", "name": "Windows_Server-2016-English-Full-Base-2030.01.01", "creation_date": "2030-01-01T00:00:00.000Z"}),
    );
    let run = w.tc_ami().run(&["status", "-w", "w"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("NEWER BASE IMAGE: Windows_Server-2016-English-Full-Base-2030.01.01"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&west), "{}", run.stdout);
}
